"""Regenerate the hostile-input corpus (tests/hostile/corpus/) deterministically.

    .venv/bin/python tests/hostile/make_corpus.py [OUT_DIR]

Every file is small (< 200 KB) and built here from a fixed recipe: most byte by byte with the
standard library (struct, zlib, wave, zipfile) so a reviewer can see exactly what is hostile about
it; a few with Pillow (JPEG) or ffmpeg (MP4), listed in TOOL_DEPENDENT because their bytes depend on
the encoder version. `cases.toml` says what each file is expected to provoke.
"""

from __future__ import annotations

import io
import math
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import wave
import zipfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"

#: Files whose bytes depend on the version of an external encoder (compared by name only).
TOOL_DEPENDENT = {"truncated.jpg", "huge_sof.jpg", "video_only.mp4"}


# -- builders ------------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    if crc is None:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png(width: int, height: int, idat: bytes, *, bit_depth: int = 8, color_type: int = 2,
        extra: bytes = b"", ihdr_crc: int | None = None) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr, ihdr_crc) + extra
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def gradient_row(width: int, y: int) -> bytes:
    """One row of RGB pixels of a deterministic gradient."""
    return b"".join(bytes(((x * 4) & 255, (y * 4) & 255, ((x + y) * 2) & 255)) for x in range(width))


def gradient_rows(width: int, height: int) -> bytes:
    """PNG scanlines (filter byte 0, then the row) of the gradient."""
    return b"".join(b"\x00" + gradient_row(width, y) for y in range(height))


def valid_png(width: int = 64, height: int = 64) -> bytes:
    return png(width, height, zlib.compress(gradient_rows(width, height), 9))


def wav(samples: list[int] | bytes, rate: int = 16000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples if isinstance(samples, bytes) else struct.pack(f"<{len(samples)}h", *samples))
    return buf.getvalue()


def float_wav(samples: list[float], rate: int = 16000) -> bytes:
    """A 32-bit float WAV (WAVE_FORMAT_IEEE_FLOAT): the `wave` module writes integers only."""
    data = struct.pack(f"<{len(samples)}f", *samples)
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def sine(seconds: float, rate: int = 16000, freq: float = 440.0) -> list[int]:
    return [int(12000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(int(seconds * rate))]


def elf_header() -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, SysV
    rest = struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x401000, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    return ident + rest + b"\x90" * 64


def gif_huge_screen() -> bytes:
    # Logical screen 65535 x 65535 (4.3 gigapixels) holding one 1x1 image.
    header = b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    image = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + image + b";"


def bmp_huge() -> bytes:
    # BITMAPINFOHEADER declaring 100000 x 100000 24-bit pixels, followed by 64 bytes of pixels.
    dib = struct.pack("<IiiHHIIiiII", 40, 100000, 100000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    body = dib + b"\x00" * 64
    return b"BM" + struct.pack("<IHHI", 14 + len(body), 0, 0, 54) + body


def jpeg_with_sof(data: bytes, width: int, height: int) -> bytes:
    """Patch the frame header (SOF0/SOF2) of a JPEG to declare other dimensions."""
    out = bytearray(data)
    i = 2
    while i < len(out) - 9:
        if out[i] != 0xFF:
            raise ValueError("not at a marker")
        marker = out[i + 1]
        length = struct.unpack(">H", out[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC2):
            out[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        i += 2 + length
    raise ValueError("no SOF marker")


# -- the corpus ----------------------------------------------------------------------------------


def build(out: Path, *, with_ffmpeg: bool = True) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    rng = random.Random(20240601)

    # Not media at all.
    files["empty.bin"] = b""
    files["random.bin"] = bytes(rng.getrandbits(8) for _ in range(4096))
    files["not_an_image.png"] = b"This is a plain text file that merely has a .png name.\n" * 4
    files["image.svg"] = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" '
                          b'height="10"><script>alert(1)</script><rect width="10" height="10"/></svg>\n')
    files["page.html"] = b"<!DOCTYPE html>\n<html><body><img src=x onerror=alert(1)></body></html>\n"
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo("payload.png", date_time=(1980, 1, 1, 0, 0, 0)), valid_png(8, 8))
        zf.writestr(zipfile.ZipInfo("../../evil.sh", date_time=(1980, 1, 1, 0, 0, 0)), b"#!/bin/sh\n")
    files["archive.zip"] = zbuf.getvalue()
    files["program.elf"] = elf_header()
    files["document.pdf"] = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"

    # Images: damaged, lying about their size, or bombs.
    good = valid_png(64, 64)
    files["small.png"] = valid_png(32, 32)
    files["truncated.png"] = good[: len(good) * 6 // 10]
    files["bad_crc.png"] = png(64, 64, zlib.compress(gradient_rows(64, 64), 9), ihdr_crc=0xDEADBEEF)
    idat = bytearray(zlib.compress(gradient_rows(64, 64), 9))
    idat[10:40] = b"\xff" * 30  # damage the deflate stream (the chunk CRC is recomputed: only zlib notices)
    files["corrupt_idat.png"] = png(64, 64, bytes(idat))
    files["zero_width.png"] = png(0, 64, zlib.compress(b"\x00" * 64, 9))
    # IHDR declares 100000 x 100000 RGB (30 GB decoded); the IDAT is tiny.
    files["header_100000x100000.png"] = png(100000, 100000, zlib.compress(b"\x00" * 1024, 9))
    # A real decompression bomb: 9000 x 9000 1-bit zeros, ~10 MB of scanlines deflated to ~10 KB,
    # 81 M pixels (under Pillow's own 89 M warning threshold, so mmagent's max_pixels must catch it).
    side = 9000
    rows = (b"\x00" + b"\x00" * ((side + 7) // 8)) * side
    files["bomb_9000x9000_1bit.png"] = png(side, side, zlib.compress(rows, 9), bit_depth=1, color_type=0)
    # A 1x1 PNG whose zTXt chunk inflates to 16 MiB of text.
    ztxt = b"Comment\x00\x00" + zlib.compress(b"A" * (16 * 1024 * 1024), 9)
    files["ztxt_bomb.png"] = png(1, 1, zlib.compress(b"\x00\x00\x00\x00", 9), extra=png_chunk(b"zTXt", ztxt))
    files["huge_screen.gif"] = gif_huge_screen()
    files["huge_dims.bmp"] = bmp_huge()

    # Audio: damaged, empty, lying headers.
    one_second = wav(sine(1.0))
    files["one_second.wav"] = one_second
    files["truncated_header.wav"] = one_second[:30]
    files["zero_samples.wav"] = wav(b"")
    huge = bytearray(wav(b"\x00"))  # header + 1 byte of data: less than one 16-bit frame
    data_at = huge.index(b"data")
    huge[data_at + 4 : data_at + 8] = struct.pack("<I", 0x7FFFFFF0)  # claims ~2 GB (~18 hours)
    files["huge_data_size.wav"] = bytes(huge)
    files["rate_1hz.wav"] = wav(sine(0.25, rate=16000), rate=1)  # 4000 frames at 1 Hz = 66 minutes
    files["wav_named.png"] = wav(sine(0.05))
    files["png_named.wav"] = valid_png(16, 16)
    files["id3_garbage.mp3"] = b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(rng.getrandbits(8) for _ in range(2048))
    files["oggs_garbage.ogg"] = b"OggS\x00\x02" + bytes(rng.getrandbits(8) for _ in range(2048))
    files["fLaC_garbage.flac"] = b"fLaC" + bytes(rng.getrandbits(8) for _ in range(1024))
    # Half a second of float samples, every tenth one NaN or infinite (ASR answered "!!!!" after 73 s).
    files["nan_samples.wav"] = float_wav([float("nan") if i % 20 == 0 else float("inf") if i % 10 == 0
                                          else 0.1 * math.sin(i / 8) for i in range(8000)])

    # Video containers: an mp4 that is only an ftyp box.
    files["ftyp_only.mp4"] = struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 0x200) + b"isomiso2"

    # Encoder-dependent files.
    from PIL import Image

    im = Image.frombytes("RGB", (64, 64), b"".join(gradient_row(64, y) for y in range(64)))
    jbuf = io.BytesIO()
    im.save(jbuf, "JPEG", quality=90)
    jpeg = jbuf.getvalue()
    files["truncated.jpg"] = jpeg[: len(jpeg) // 2]
    files["huge_sof.jpg"] = jpeg_with_sof(jpeg, 65000, 65000)

    for name, data in files.items():
        (out / name).write_bytes(data)
    if with_ffmpeg:
        make_video_only_mp4(out / "video_only.mp4")
    return sorted(files) + (["video_only.mp4"] if with_ffmpeg else [])


def make_video_only_mp4(path: Path) -> None:
    """1 s, 64x48, 10 fps test pattern, MPEG-4 part 2, no audio stream, bit-exact flags."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg is needed for video_only.mp4")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "out.mp4"
        subprocess.run(
            [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=1",
             "-an", "-c:v", "mpeg4", "-q:v", "5", "-threads", "1", "-fflags", "+bitexact",
             "-flags:v", "+bitexact", "-map_metadata", "-1", str(target)],
            check=True,
        )
        path.write_bytes(target.read_bytes())


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else CORPUS
    names = build(out)
    total = sum((out / n).stat().st_size for n in names)
    for n in names:
        print(f"{(out / n).stat().st_size:>8}  {n}")
    print(f"{len(names)} files, {total:,} bytes in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
