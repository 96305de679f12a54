"""The one input-hardening layer: every byte string that becomes a media part passes `inspect_media`.

It detects the type from the bytes, applies the configured caps (bytes, pixels, duration) before
decoding anything large, and turns every decoder failure into a typed `InputError`.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass

from ..config import Limits
from ..errors import (
    CorruptMediaError,
    InvalidDataURLError,
    MediaTooLargeError,
    MMAgentError,
    UnsupportedMediaError,
)
from .sniff import ACCEPTED, kind_of, normalize_mime, sniff

_PIL_FORMATS = ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"]
_SOUNDFILE_MIMES = {"audio/wav", "audio/flac", "audio/ogg", "audio/mpeg", "audio/aiff"}


class MissingToolError(MMAgentError):
    """A system tool (ffprobe) needed to read this media is not installed."""


@dataclass(frozen=True)
class MediaInfo:
    kind: str
    mime_type: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    sample_rate: int | None = None
    channels: int | None = None


def inspect_media(
    data: bytes,
    limits: Limits,
    *,
    expect: str | None = None,
    declared_mime: str | None = None,
    label: str = "input",
) -> MediaInfo:
    """Validate `data` and describe it, or raise a typed `InputError` saying why not."""
    if not data:
        raise UnsupportedMediaError(f"{label} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise MediaTooLargeError(f"{label} is {_mb(len(data))}, over the {_mb(limits.max_bytes)} limit")
    mime = sniff(data)
    if mime is None or mime not in ACCEPTED:
        what = f"'{mime}' is not a format mmagent accepts" if mime else "not an image, audio or video format mmagent reads"
        raise UnsupportedMediaError(f"{label}: {what}")
    kind = ACCEPTED[mime]
    if declared_mime is not None:
        declared = normalize_mime(declared_mime)
        if declared not in ("", "application/octet-stream") and kind_of(declared) != _loose_kind(kind, expect):
            raise InvalidDataURLError(f"{label} declares '{declared}' but its bytes are '{mime}'")
    if kind == "video" and expect == "audio":
        return _inspect_av(data, mime, limits, want="audio", label=label)
    if expect is not None and kind != expect:
        raise UnsupportedMediaError(f"{label}: expected {_a(expect)} but the bytes are '{mime}'")
    if kind == "image":
        return _inspect_image(data, mime, limits, label)
    if mime in _SOUNDFILE_MIMES:
        return _inspect_soundfile(data, mime, limits, label)
    return _inspect_av(data, mime, limits, want=kind, label=label)


def _loose_kind(kind: str, expect: str | None) -> str:
    # An audio-only webm/mp4 sniffs as video; a declared audio/* type for it is honest.
    return "audio" if kind == "video" and expect == "audio" else kind


def _inspect_image(data: bytes, mime: str, limits: Limits, label: str) -> MediaInfo:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as im:
                width, height = im.size
                if width <= 0 or height <= 0:
                    raise CorruptMediaError(f"{label}: image has no pixels ({width}x{height})")
                if width * height > limits.max_pixels:
                    raise MediaTooLargeError(
                        f"{label}: image is {width}x{height} = {width * height:,} pixels, "
                        f"over the {limits.max_pixels:,} pixel limit"
                    )
                im.load()  # decodes fully: truncated or damaged data fails here
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaTooLargeError(f"{label}: {exc}") from None
    except MMAgentError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, EOFError, struct.error ...
        raise CorruptMediaError(f"{label}: cannot decode {mime} ({_reason(exc)})") from None
    return MediaInfo(kind="image", mime_type=mime, width=width, height=height)


def _inspect_soundfile(data: bytes, mime: str, limits: Limits, label: str) -> MediaInfo:
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            frames, rate, channels = f.frames, f.samplerate, f.channels
            if rate <= 0 or frames <= 0:
                raise CorruptMediaError(f"{label}: {mime} holds no audio samples")
            duration = frames / rate
            _check_duration(duration, limits.max_audio_seconds, "audio", label)
            f.read(min(frames, rate), dtype="float32")  # the first second must decode
    except MMAgentError:
        raise
    except Exception as exc:  # soundfile.LibsndfileError, RuntimeError, ValueError ...
        raise CorruptMediaError(f"{label}: cannot decode {mime} ({_reason(exc)})") from None
    return MediaInfo("audio", mime, duration=duration, sample_rate=rate, channels=channels)


def _inspect_av(data: bytes, mime: str, limits: Limits, *, want: str, label: str) -> MediaInfo:
    """Containers soundfile cannot read (mp4, webm, mkv, aac ...) go through ffprobe."""
    probe = _ffprobe(data, mime, label)
    streams = probe.get("streams", [])
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    try:
        duration = float(probe.get("format", {}).get("duration") or 0) or None
    except ValueError:
        duration = None
    if want == "audio":
        if audio is None:
            raise UnsupportedMediaError(f"{label}: '{mime}' has no audio stream")
        if duration is None:
            raise CorruptMediaError(f"{label}: cannot tell how long the audio in '{mime}' is")
        _check_duration(duration, limits.max_audio_seconds, "audio", label)
        audio_mime = "audio/" + mime.split("/", 1)[1].removeprefix("x-")
        return MediaInfo("audio", ACCEPTED.get(audio_mime) and audio_mime or mime, duration=duration,
                         sample_rate=_int(audio.get("sample_rate")), channels=_int(audio.get("channels")))
    if video is None:
        raise UnsupportedMediaError(f"{label}: '{mime}' has no video stream")
    if duration is not None:
        _check_duration(duration, limits.max_video_seconds, "video", label)
    width, height = _int(video.get("width")), _int(video.get("height"))
    if width and height and width * height > limits.max_pixels:
        raise MediaTooLargeError(f"{label}: video frames are {width}x{height}, over the pixel limit")
    return MediaInfo("video", mime, width=width, height=height, duration=duration)


def _ffprobe(data: bytes, mime: str, label: str) -> dict:
    exe = shutil.which("ffprobe")
    if exe is None:
        raise MissingToolError(f"{label}: reading '{mime}' needs ffprobe (install ffmpeg)")
    with tempfile.NamedTemporaryFile(prefix="mmagent-probe-") as tmp:
        tmp.write(data)
        tmp.flush()
        cmd = [exe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", tmp.name]
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=20, check=False)
        except subprocess.TimeoutExpired:
            raise CorruptMediaError(f"{label}: probing '{mime}' took too long") from None
    if out.returncode != 0:
        err = out.stderr.decode(errors="replace").replace(f"{tmp.name}: ", "").strip().splitlines()
        raise CorruptMediaError(f"{label}: cannot decode {mime} ({err[-1][:200] if err else 'ffprobe failed'})")
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise CorruptMediaError(f"{label}: cannot decode {mime} (unreadable probe output)") from None


def _check_duration(seconds: float, cap: float, what: str, label: str) -> None:
    if seconds > cap:
        raise MediaTooLargeError(f"{label}: {what} lasts {seconds:.1f} s, over the {cap:g} s limit")


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


#: How decoders name the in-memory file they were given ("Error opening <_io.BytesIO object at 0x..>: ").
_FILE_REPR = re.compile(r"(Error opening )?<_io\.\w+ object at 0x[0-9a-fA-F]+>:? ?")


def _reason(exc: Exception) -> str:
    text = _FILE_REPR.sub("", str(exc)).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _mb(n: int) -> str:
    return f"{n / 1_048_576:.1f} MiB" if n >= 1_048_576 else f"{n:,} bytes"


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind
