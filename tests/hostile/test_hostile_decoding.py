"""Hostile inputs that pass the header checks and go wrong in the decoder: audio whose container
lies about its duration, 16-bit images, non-finite audio samples, Pillow's own bomb limit, an
audio-only WebM inspected without `expect`, and images too thin for OCR.

Every file is generated here (ffmpeg for the audio containers); nothing touches the network."""

from __future__ import annotations

import importlib.util
import io
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from mmagent.config import load_settings
from mmagent.content import guard, load_media
from mmagent.content.guard import inspect_media
from mmagent.content.sources import make_part
from mmagent.content.store import MediaStore
from mmagent.errors import BackendError, CorruptMediaError, InputError, MediaTooLargeError

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg is not installed")


# -- helpers ----------------------------------------------------------------------------------------


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def probe_duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True).stdout.strip()
    return float(out)


def patch_mp4_duration(data: bytes, seconds: float) -> bytes:
    """Rewrite the durations in `mvhd`, every `tkhd` and every `mdhd` (same size) to `seconds`."""
    buf = bytearray(data)
    movie_timescale = 0

    def walk(start: int, end: int) -> None:
        nonlocal movie_timescale
        pos = start
        while pos + 8 <= end:
            size, kind = struct.unpack(">I4s", buf[pos:pos + 8])
            head = 8
            if size == 1:
                size, head = struct.unpack(">Q", buf[pos + 8:pos + 16])[0], 16
            elif size == 0:
                size = end - pos
            body = pos + head
            if kind in (b"moov", b"trak", b"mdia"):
                walk(body, pos + size)
            elif kind in (b"mvhd", b"mdhd"):
                v1 = buf[body] == 1
                ts_at, dur_at, fmt = (body + 20, body + 24, ">Q") if v1 else (body + 12, body + 16, ">I")
                timescale = struct.unpack(">I", buf[ts_at:ts_at + 4])[0]
                if kind == b"mvhd":
                    movie_timescale = timescale
                struct.pack_into(fmt, buf, dur_at, int(timescale * seconds))
            elif kind == b"tkhd" and movie_timescale:
                dur_at, fmt = (body + 28, ">Q") if buf[body] == 1 else (body + 20, ">I")
                struct.pack_into(fmt, buf, dur_at, int(movie_timescale * seconds))
            pos += size

    walk(0, len(buf))
    return bytes(buf)


def patch_webm_duration(data: bytes, seconds: float) -> bytes:
    """Rewrite the Segment Info Duration element (a float in TimecodeScale units, 1 ms here)."""
    buf = bytearray(data)
    info = buf.find(b"\x15\x49\xa9\x66")  # Info
    at = buf.find(b"\x44\x89", info)  # Duration
    assert info > 0 and at > info, "no Segment Info Duration element"
    size = buf[at + 2]
    fmt = {0x84: ">f", 0x88: ">d"}[size]
    struct.pack_into(fmt, buf, at + 3, seconds * 1000.0)
    return bytes(buf)


def lying_audio(tmp_path: Path, container: str, seconds: float = 120.0, claimed: float = 1.0) -> Path:
    """`seconds` of tone in an M4A (AAC) or WebM (Opus) whose header says `claimed` seconds."""
    honest = tmp_path / f"honest.{container}"
    codec = ["-c:a", "aac", "-b:a", "32k"] if container == "m4a" else ["-c:a", "libopus", "-b:a", "16k"]
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}:sample_rate=16000", *codec, str(honest))
    patch = patch_mp4_duration if container == "m4a" else patch_webm_duration
    liar = tmp_path / f"liar.{container}"
    liar.write_bytes(patch(honest.read_bytes(), claimed))
    assert probe_duration(liar) == pytest.approx(claimed, abs=0.01)  # the header really lies
    return liar


def store_unchecked(data: bytes, mime: str, home: Path, **info):
    """A stored part that never went through the guard (as one stored before a fix would be)."""
    from mmagent.content.guard import MediaInfo

    ref = MediaStore(home / "media").put(data, mime)
    return make_part(ref, MediaInfo(**info), {})


def media_files(home: Path) -> list[Path]:
    root = home / "media"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# -- 1. audio whose container lies about its duration ----------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize("container", ["m4a", "webm"])
def test_audio_whose_header_understates_its_duration_is_refused_at_load(tmp_path, home, monkeypatch, container):
    monkeypatch.setenv("MMAGENT_LIMITS_MAX_AUDIO_SECONDS", "5")
    liar = lying_audio(tmp_path, container)
    with pytest.raises(MediaTooLargeError, match=r"over the 5 s limit") as info:
        load_media(liar, expect="audio")
    assert "\n" not in str(info.value)
    assert media_files(home) == []


@needs_ffmpeg
def test_honest_audio_under_the_cap_still_loads_with_its_duration(tmp_path, home, monkeypatch):
    monkeypatch.setenv("MMAGENT_LIMITS_MAX_AUDIO_SECONDS", "5")
    path = tmp_path / "short.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=4:sample_rate=16000", "-c:a", "aac", str(path))
    part = load_media(path, expect="audio")
    assert part.duration == pytest.approx(4.0, abs=0.1)


@needs_ffmpeg
@pytest.mark.parametrize("container", ["m4a", "webm"])
def test_asr_decoding_stops_at_the_cap_whatever_the_header_says(tmp_path, home, monkeypatch, container):
    """A part stored without the guard's check (e.g. before it existed) still cannot make the ASR
    decode 120 s: decoding stops just past the cap and refuses."""
    from mmagent.plugins.whisper import _audio_array, decode_audio

    monkeypatch.setenv("MMAGENT_LIMITS_MAX_AUDIO_SECONDS", "5")
    liar = lying_audio(tmp_path, container)
    mime = "audio/mp4" if container == "m4a" else "video/webm"
    part = store_unchecked(liar.read_bytes(), mime, home, kind="audio", mime_type=mime, duration=1.0)
    started = time.perf_counter()
    with pytest.raises(MediaTooLargeError, match=r"longer than the 5 s limit"):
        _audio_array(part)
    with pytest.raises(MediaTooLargeError):
        decode_audio(liar, max_seconds=5)
    assert time.perf_counter() - started < 20
    assert len(decode_audio(liar, max_seconds=200)) == pytest.approx(120 * 16000, rel=0.01)


def test_asr_decoding_of_a_wav_stops_at_the_cap(tmp_path):
    import soundfile as sf

    from mmagent.plugins.whisper import decode_audio

    sf.write(tmp_path / "long.wav", np.zeros(8000 * 30, np.float32), 8000, subtype="PCM_16")
    with pytest.raises(MediaTooLargeError, match=r"longer than the 10 s limit"):
        decode_audio(tmp_path / "long.wav", max_seconds=10)
    assert len(decode_audio(tmp_path / "long.wav", max_seconds=31)) == 16000 * 30


# -- 5b. non-finite audio samples -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_wav_of_non_finite_samples_is_refused_at_load(tmp_path, home, bad):
    import soundfile as sf

    samples = np.zeros(16000 * 3, np.float32)
    samples[16000 * 2 + 5] = bad  # past the first second, which the guard always decoded
    sf.write(tmp_path / "nan.wav", samples, 16000, subtype="FLOAT")
    with pytest.raises(CorruptMediaError, match=r"non-finite"):
        load_media(tmp_path / "nan.wav", expect="audio")
    assert media_files(home) == []


def test_asr_refuses_non_finite_samples_that_reached_the_store(tmp_path, home):
    import soundfile as sf

    from mmagent.plugins.whisper import _audio_array

    buffer = io.BytesIO()
    sf.write(buffer, np.full(16000, np.nan, np.float32), 16000, format="WAV", subtype="FLOAT")
    part = store_unchecked(buffer.getvalue(), "audio/wav", home, kind="audio", mime_type="audio/wav", duration=1.0)
    with pytest.raises(CorruptMediaError, match=r"non-finite"):
        _audio_array(part)


# -- 2. high bit-depth images ------------------------------------------------------------------------


def receipt_16bit() -> bytes:
    """A receipt-like 16-bit greyscale PNG: dark grey text on off-white paper."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("L", (420, 160), 245)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=28)
    draw.text((20, 20), "TOTAL 9.75", fill=30, font=font)
    draw.text((20, 90), "CASH 10.00", fill=30, font=font)
    wide = np.asarray(page).astype(np.uint16) * 257  # the same picture at 16 bits
    image = Image.frombytes("I;16", page.size, wide.astype("<u2").tobytes())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_16bit_receipt_really_is_16bit():
    from PIL import Image

    with Image.open(io.BytesIO(receipt_16bit())) as image:
        assert image.mode == "I;16"
        assert int(np.asarray(image).max()) > 255


def assert_readable(rgb: np.ndarray) -> None:
    """Mostly white paper with dark text: not a white page (what clipping 16-bit values gives)."""
    grey = rgb.mean(axis=2) if rgb.ndim == 3 else rgb
    assert 0.80 < (grey > 200).mean() < 0.99
    assert (grey < 80).mean() > 0.01
    assert grey.min() < 40


def test_16bit_png_converts_to_readable_8bit_for_hf_backends(home):
    from mmagent.plugins._hf import open_rgb

    part = load_media(receipt_16bit(), expect="image")
    image = open_rgb(part)
    assert image.mode == "RGB"
    assert_readable(np.asarray(image))


def test_16bit_png_converts_to_readable_8bit_for_ocr(home):
    from mmagent.plugins.ocr import _bgr_pixels

    pixels = _bgr_pixels(load_media(receipt_16bit(), expect="image"))
    assert pixels.dtype == np.uint8 and pixels.shape[2] == 3
    assert_readable(pixels)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F"])
def test_to_8bit_scales_every_high_bit_depth_mode(mode):
    from PIL import Image

    values = np.array([[0, 16384, 32768, 65535]], np.float64)
    if mode == "I;16":
        image = Image.frombytes(mode, (4, 1), values.astype("<u2").tobytes())
    elif mode == "I;16B":
        image = Image.frombytes(mode, (4, 1), values.astype(">u2").tobytes())
    elif mode == "I":
        image = Image.fromarray(values.astype(np.int32))
    else:
        image = Image.fromarray((values / 65535).astype(np.float32))  # floats in 0..1
    assert image.mode == mode
    out = guard.to_8bit(image)
    assert out.mode == "L"
    assert np.asarray(out).tolist() == [[0, 64, 128, 255]]


def test_to_8bit_leaves_8bit_images_alone_and_survives_nan():
    from PIL import Image

    rgb = Image.new("RGB", (2, 2), (1, 2, 3))
    assert guard.to_8bit(rgb) is rgb
    floats = Image.fromarray(np.array([[np.nan, 0.0, 1.0]], np.float32))
    assert np.asarray(guard.to_8bit(floats)).tolist() == [[0, 0, 255]]


@pytest.mark.slow
def test_rapidocr_reads_a_16bit_receipt(home):
    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        pytest.skip("rapidocr_onnxruntime is not installed")
    from mmagent.backends import get_backend

    result = get_backend("ocr", "rapidocr", threads=1).read(load_media(receipt_16bit(), expect="image"))
    assert [line.text for line in result.lines] == ["TOTAL 9.75", "CASH 10.00"]


# -- also seen: Pillow's own bomb limit, audio-only WebM, thin images in OCR -------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims `width` x `height` (no pixel data: Pillow refuses it on open)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_bomb_error_cites_the_configured_pixel_limit_not_pillows():
    limits = load_settings().limits
    with pytest.raises(MediaTooLargeError) as info:
        inspect_media(png_header_only(20000, 20000), limits, expect="image")
    message = str(info.value)
    assert f"{limits.max_pixels:,} pixel limit" in message
    assert "400,000,000 pixels" in message
    assert "178956970" not in message and "decompression bomb" not in message.lower()


def test_bomb_error_above_the_configured_limit_names_both(monkeypatch):
    monkeypatch.setenv("MMAGENT_LIMITS_MAX_PIXELS", "500000000")
    limits = load_settings().limits
    with pytest.raises(MediaTooLargeError) as info:
        inspect_media(png_header_only(20000, 20000), limits, expect="image")
    message = str(info.value)
    assert "400,000,000 pixels" in message and "limits.max_pixels" in message and "500,000,000" in message


@needs_ffmpeg
def test_audio_only_webm_without_expect_is_audio(tmp_path, home):
    path = tmp_path / "voice.webm"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2:sample_rate=16000", "-c:a", "libopus", str(path))
    part = load_media(path)
    assert part.type == "audio"
    assert part.duration == pytest.approx(2.0, abs=0.1)
    with pytest.raises(InputError, match="no video stream"):
        load_media(path, expect="video")


def thin_png(size: tuple[int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(1, 100000), (100000, 1), (10, 5000)])
def test_ocr_refuses_an_image_too_thin_to_read_in_one_line(home, size):
    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        pytest.skip("rapidocr_onnxruntime is not installed")
    from mmagent.backends import get_backend

    part = load_media(thin_png(size), expect="image")
    with pytest.raises(InputError) as info:
        get_backend("ocr", "rapidocr", threads=1).read(part)
    message = str(info.value)
    assert message.startswith("ocr/rapidocr") and f"{size[0]}x{size[1]}" in message and "\n" not in message
    assert "too thin" in message


def test_ocr_engine_failure_without_a_message_still_says_what_failed(home, monkeypatch):
    from mmagent.plugins import ocr

    class Silent(Exception):
        pass

    def engine(_pixels):
        try:
            raise ValueError("resize_w or resize_h is less than or equal to 0")
        except ValueError as exc:
            raise Silent() from exc

    backend = ocr.RapidOCRReader()
    monkeypatch.setattr(ocr.RapidOCRReader, "model", property(lambda self: engine))
    with pytest.raises(BackendError) as info:
        backend.read(load_media(thin_png((40, 30)), expect="image"))
    message = str(info.value)
    assert message == ("ocr/rapidocr failed on a 40x30 image: Silent: "
                       "resize_w or resize_h is less than or equal to 0")


@pytest.mark.slow
def test_rapidocr_still_reads_the_widest_image_it_can(home):
    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        pytest.skip("rapidocr_onnxruntime is not installed")
    from mmagent.backends import get_backend

    part = load_media(thin_png((4000, 40)), expect="image")
    assert get_backend("ocr", "rapidocr", threads=1).read(part).lines == ()
