"""The content layer with valid inputs: detection, metadata, the media store, data URLs, path roots and
lossless conversions to and from OpenAI content parts and LangChain content blocks."""

from __future__ import annotations

import base64
import functools
import io
import math
import shutil
import struct
import subprocess
import tempfile
import wave
from pathlib import Path
from urllib.parse import quote_from_bytes

import numpy as np
import pytest
from PIL import Image

from mmagent.config import load_settings
from mmagent.content import (
    AudioPart,
    ImagePart,
    MediaStore,
    TextPart,
    VideoPart,
    from_langchain,
    from_openai,
    load_media,
    part_from_dict,
    to_langchain,
    to_openai,
)
from mmagent.errors import ForbiddenSourceError

HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg/ffprobe not installed")

AUDIO_SECONDS = 1.25
RATE = 16000


# -- fixtures and media makers -------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path, home):
    s = load_settings(cwd=tmp_path)
    assert s.home_path == home
    return s


@pytest.fixture
def store(home) -> MediaStore:
    """The store load_media writes to by default (MMAGENT_HOME/media)."""
    return MediaStore(home / "media")


def stored_files(store: MediaStore) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file()) if store.root.exists() else []


def image_bytes(fmt: str, size: tuple[int, int] = (37, 23)) -> bytes:
    im = Image.new("RGB", size)
    im.putdata([((x * 7) % 256, (y * 11) % 256, 128) for y in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def wav_bytes(seconds: float = AUDIO_SECONDS, rate: int = RATE) -> bytes:
    n = int(seconds * rate)
    samples = (0.3 * 32767 * np.sin(2 * math.pi * 440 * np.arange(n) / rate)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def soundfile_bytes(fmt: str, subtype: str | None = None) -> bytes:
    import soundfile

    n = int(AUDIO_SECONDS * RATE)
    x = (0.3 * np.sin(2 * math.pi * 440 * np.arange(n) / RATE)).astype("float32")
    buf = io.BytesIO()
    soundfile.write(buf, x, RATE, format=fmt, subtype=subtype)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)  # encoding is the slow part: once per session
def ffmpeg(out_name: str, *args: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "src.wav").write_bytes(wav_bytes())
        out = Path(tmp) / out_name
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args, out_name], cwd=tmp, check=True, timeout=60)
        return out.read_bytes()


def ffmpeg_audio(ext: str) -> bytes:
    codec = {"mp3": ("-c:a", "libmp3lame", "-b:a", "64k"), "m4a": ("-c:a", "aac", "-b:a", "64k")}[ext]
    return ffmpeg(f"out.{ext}", "-i", "src.wav", *codec)


def mp4_bytes(*, audio: bool = True) -> bytes:
    """1.5 s of 96x64 test pattern at 10 fps, with a 440 Hz tone unless audio=False."""
    args: tuple[str, ...] = ("-f", "lavfi", "-i", "testsrc=size=96x64:rate=10:duration=1.5")
    if audio:
        args += ("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=1.5", "-c:a", "aac")
    return ffmpeg("video.mp4", *args, "-c:v", "mpeg4", "-shortest")


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# -- images ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, ext, mime",
    [("PNG", "png", "image/png"), ("JPEG", "jpg", "image/jpeg"), ("GIF", "gif", "image/gif"),
     ("WEBP", "webp", "image/webp"), ("BMP", "bmp", "image/bmp"), ("TIFF", "tiff", "image/tiff")],
)
def test_images_load_with_size_and_mime(fmt, ext, mime, tmp_path, settings, store):
    data = image_bytes(fmt)
    path = tmp_path / f"picture.{ext}"
    path.write_bytes(data)
    part = load_media(path, settings=settings)
    assert isinstance(part, ImagePart)
    assert (part.width, part.height) == (37, 23)
    assert part.mime_type == mime and part.ref.size == len(data)
    assert part.read_bytes(store) == data
    assert part.path(store) == store.root / part.ref.sha256[:2] / part.ref.sha256
    # the same bytes given as bytes, as a str path and with expect= give the same part
    assert load_media(data, expect="image", settings=settings).ref == part.ref
    assert load_media(str(path), settings=settings).ref == part.ref


# -- audio ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, mime",
    [(wav_bytes, "audio/wav"),
     (lambda: soundfile_bytes("FLAC"), "audio/flac"),
     (lambda: soundfile_bytes("OGG", "VORBIS"), "audio/ogg"),
     pytest.param(lambda: ffmpeg_audio("mp3"), "audio/mpeg", marks=needs_ffmpeg),
     pytest.param(lambda: ffmpeg_audio("m4a"), "audio/mp4", marks=needs_ffmpeg)],
    ids=["wav", "flac", "ogg", "mp3", "m4a"],
)
def test_audio_loads_with_duration(make, mime, settings, store):
    data = make()
    part = load_media(data, expect="audio", settings=settings)
    assert isinstance(part, AudioPart)
    assert part.mime_type == mime
    assert part.duration == pytest.approx(AUDIO_SECONDS, abs=0.05)
    assert part.sample_rate == RATE and part.channels == 1
    assert part.read_bytes(store) == data


def test_wav_with_oversized_data_chunk_uses_the_real_length(settings):
    """Streaming writers leave a huge data size in the header; the samples present decide."""
    data = bytearray(wav_bytes(0.5))
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 0x7FFFFFF0)
    part = load_media(bytes(data), settings=settings)
    assert part.duration == pytest.approx(0.5, abs=0.01)


# -- video ----------------------------------------------------------------------------------------------


@needs_ffmpeg
def test_mp4_loads_as_video_and_its_audio_as_audio(settings, store):
    data = mp4_bytes()
    video = load_media(data, settings=settings)
    assert isinstance(video, VideoPart)
    assert video.mime_type == "video/mp4"
    assert (video.width, video.height) == (96, 64)
    assert video.duration == pytest.approx(1.5, abs=0.1)
    audio = load_media(data, expect="audio", settings=settings)
    assert isinstance(audio, AudioPart) and audio.mime_type == "audio/mp4"
    assert audio.duration == pytest.approx(1.5, abs=0.1)
    assert audio.ref.sha256 == video.ref.sha256
    assert len(stored_files(store)) == 1


# -- detection, the store ----------------------------------------------------------------------------------


def test_type_comes_from_bytes_not_the_file_name(tmp_path, settings):
    (tmp_path / "actually_png.wav").write_bytes(image_bytes("PNG"))
    (tmp_path / "actually_wav.jpg").write_bytes(wav_bytes())
    (tmp_path / "no_extension").write_bytes(image_bytes("JPEG"))
    assert isinstance(load_media(tmp_path / "actually_png.wav", settings=settings), ImagePart)
    audio = load_media(tmp_path / "actually_wav.jpg", settings=settings)
    assert isinstance(audio, AudioPart) and audio.mime_type == "audio/wav"
    assert load_media(tmp_path / "no_extension", settings=settings).mime_type == "image/jpeg"


def test_identical_bytes_are_stored_once(tmp_path, settings, store):
    data = image_bytes("PNG")
    (tmp_path / "a.png").write_bytes(data)
    parts = [
        load_media(tmp_path / "a.png", settings=settings),
        load_media(data, settings=settings),
        load_media(data_url("image/png", data), settings=settings),
        load_media(data, settings=settings, store=store),
    ]
    assert len({p.ref for p in parts}) == 1
    assert len({p.path(store) for p in parts}) == 1
    assert stored_files(store) == [parts[0].path(store)]  # one file, no .tmp- leftovers
    assert parts[0].path(store).read_bytes() == data


def test_part_dict_round_trip(settings):
    image = load_media(image_bytes("PNG"), settings=settings, extras={"detail": "low", "name": "x.png"})
    audio = load_media(wav_bytes(), settings=settings)
    for part in (image, audio, TextPart("hello")):
        data = part.to_dict()
        again = part_from_dict(data)
        assert again == part and type(again) is type(part)
        assert getattr(again, "extras", None) == getattr(part, "extras", None)
    assert image.to_dict()["type"] == "image" and "extras" not in audio.to_dict()


@needs_ffmpeg
def test_video_part_dict_round_trip(settings):
    video = load_media(mp4_bytes(audio=False), settings=settings)
    assert part_from_dict(video.to_dict()) == video


# -- conversions -------------------------------------------------------------------------------------------


def _media_parts(settings, *, with_ffmpeg: bool):
    parts = [
        load_media(image_bytes("PNG"), settings=settings, extras={"detail": "high"}),
        load_media(image_bytes("JPEG"), settings=settings),
        load_media(wav_bytes(), settings=settings),
        load_media(soundfile_bytes("FLAC"), settings=settings),
    ]
    if with_ffmpeg:
        parts += [
            load_media(ffmpeg_audio("mp3"), settings=settings),
            load_media(ffmpeg_audio("m4a"), settings=settings),
            load_media(mp4_bytes(), settings=settings),
        ]
    return parts


def _assert_same(a, b, store):
    assert type(a) is type(b)
    assert a.mime_type == b.mime_type
    assert a.read_bytes(store) == b.read_bytes(store)
    assert a.ref == b.ref
    assert a.extras == b.extras


def test_openai_round_trip_is_lossless(settings, store):
    parts = _media_parts(settings, with_ffmpeg=HAVE_FFMPEG)
    for part in parts:
        block = to_openai(part, store)
        again = from_openai(block, settings=settings, store=store)
        _assert_same(part, again, store)
    image_block = to_openai(parts[0], store)
    assert image_block["type"] == "image_url" and image_block["image_url"]["detail"] == "high"
    assert to_openai(parts[2], store)["input_audio"]["format"] == "wav"
    assert from_openai(to_openai(TextPart("hi"))) == TextPart("hi")


def test_langchain_round_trip_is_lossless(settings, store):
    parts = _media_parts(settings, with_ffmpeg=HAVE_FFMPEG)
    parts.append(load_media(wav_bytes(0.3), settings=settings, extras={"filename": "hello.wav", "n": 3}))
    for part in parts:
        block = to_langchain(part, store)
        assert block["type"] == part.type and block["mime_type"] == part.mime_type
        _assert_same(part, from_langchain(block, settings=settings, store=store), store)
    assert from_langchain(to_langchain(TextPart("hi")), settings=settings) == TextPart("hi")
    assert from_langchain("plain string", settings=settings) == TextPart("plain string")


def test_from_langchain_accepts_the_older_and_the_openai_forms(settings, store):
    data = image_bytes("PNG")
    b64 = base64.b64encode(data).decode()
    old = from_langchain({"type": "image", "source_type": "base64", "data": b64, "mime_type": "image/png"},
                         settings=settings, store=store)
    openai_style = from_langchain({"type": "image_url", "image_url": {"url": data_url("image/png", data),
                                                                      "detail": "auto"}},
                                  settings=settings, store=store)
    bare_url = from_langchain({"type": "image_url", "image_url": data_url("image/png", data)}, settings=settings)
    for part in (old, openai_style, bare_url):
        assert isinstance(part, ImagePart) and part.read_bytes(store) == data and part.mime_type == "image/png"
    assert openai_style.extras == {"detail": "auto"}


def test_langchain_message_accepts_our_blocks(settings, store):
    from langchain_core.messages import HumanMessage

    parts = [TextPart("describe"), *_media_parts(settings, with_ffmpeg=False)]
    blocks = [to_langchain(p, store) for p in parts]
    message = HumanMessage(content=blocks)
    standard = message.content_blocks
    assert [b["type"] for b in standard] == [p.type for p in parts]
    for block, part in zip(standard[1:], parts[1:]):
        assert base64.b64decode(block["base64"]) == part.read_bytes(store)
        assert block["mime_type"] == part.mime_type
    assert standard[1].get("extras") == {"detail": "high"}


# -- data URLs -----------------------------------------------------------------------------------------------


def test_data_url_base64_with_whitespace_and_newlines(settings, store):
    data = image_bytes("PNG")
    b64 = base64.b64encode(data).decode()
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    for url in (f"data:image/png;base64,{wrapped}", f"data:image/png;base64, {b64[:40]} \r\n\t{b64[40:]}",
                f"data:image/png;base64,{quote_from_bytes(b64.encode())}"):
        assert load_media(url, settings=settings).read_bytes(store) == data


def test_percent_encoded_data_url_without_base64(settings, store):
    data = image_bytes("GIF")
    part = load_media(f"data:image/gif,{quote_from_bytes(data)}", settings=settings)
    assert part.mime_type == "image/gif" and part.read_bytes(store) == data


def test_data_url_scheme_and_parameters_are_case_insensitive(settings, store):
    data = image_bytes("PNG")
    b64 = base64.b64encode(data).decode()
    for url in (f"DATA:image/png;BASE64,{b64}", f"Data:IMAGE/PNG;charset=binary;base64,{b64}",
                f"data:;base64,{b64}", f"data:application/octet-stream;base64,{b64}"):
        assert load_media(url, settings=settings).read_bytes(store) == data


def test_declared_mime_of_the_same_kind_is_overruled_by_the_bytes(settings, store):
    jpeg = image_bytes("JPEG")
    part = load_media(data_url("image/png", jpeg), settings=settings)
    assert isinstance(part, ImagePart) and part.mime_type == "image/jpeg"
    assert part.read_bytes(store) == jpeg


# -- local paths --------------------------------------------------------------------------------------------


def test_allowed_roots_allow_files_inside(tmp_path, home):
    root = tmp_path / "media-root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "cat.png").write_bytes(image_bytes("PNG"))
    (tmp_path / "elsewhere.png").write_bytes(image_bytes("PNG", (5, 5)))
    s = load_settings(cwd=tmp_path, overrides={"paths.allowed_roots": ["/nonexistent-root", str(root)]})
    assert load_media(root / "sub" / "cat.png", settings=s).width == 37
    assert load_media(f"{root}/sub/../sub/cat.png", settings=s).width == 37
    with pytest.raises(ForbiddenSourceError):
        load_media(tmp_path / "elsewhere.png", settings=s)


def test_default_store_is_under_mmagent_home(home):
    part = load_media(image_bytes("PNG"))  # settings and store from the environment
    assert part.path().is_relative_to(home / "media")
    assert part.read_bytes() == image_bytes("PNG")
