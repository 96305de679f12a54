"""The one input-hardening layer: every byte string that becomes a media part passes `inspect_media`.

It detects the type from the bytes, applies the configured caps (bytes, pixels, duration) before
decoding anything large, and turns every decoder failure into a typed `InputError`.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import tempfile
import warnings
from contextlib import contextmanager
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
    if kind == "video" and expect is None:  # an audio-only webm/mp4 is audio
        return _inspect_av(data, mime, limits, want="video", label=label, or_audio=True)
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
        raise MediaTooLargeError(_bomb_message(exc, limits, label)) from None
    except MMAgentError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, EOFError, struct.error ...
        raise CorruptMediaError(f"{label}: cannot decode {mime} ({_reason(exc)})") from None
    return MediaInfo(kind="image", mime_type=mime, width=width, height=height)


_BOMB_PIXELS = re.compile(r"Image size \((\d+) pixels\) exceeds limit of (\d+) pixels")


def _bomb_message(exc: Exception, limits: Limits, label: str) -> str:
    """Pillow refuses images past its own pixel limit before mmagent sees their size: say so in
    terms of the configured `limits.max_pixels` (Pillow's number means nothing to the caller)."""
    match = _BOMB_PIXELS.search(str(exc))
    if match is None:
        return f"{label}: image is over the {limits.max_pixels:,} pixel limit"
    pixels, pillow_limit = int(match.group(1)), int(match.group(2))
    if pixels > limits.max_pixels:
        return f"{label}: image is {pixels:,} pixels, over the {limits.max_pixels:,} pixel limit"
    return (f"{label}: image is {pixels:,} pixels: within limits.max_pixels ({limits.max_pixels:,}) but over "
            f"the {pillow_limit:,} pixels the image decoder accepts")


#: Pillow modes with more than 8 bits per sample; `convert("RGB")` clips them instead of scaling.
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_8bit(image):
    """`image` with 8 bits per sample, scaled rather than clipped; 8-bit images are returned as is.

    Pillow opens 16-bit grey PNG/TIFF as "I;16" (and 32-bit ones as "I" or "F") and its
    `convert("RGB")` clips every value above 255 to white: a 16-bit receipt becomes a white page.
    These modes become "L": 16-bit modes by their bit depth (65535 -> 255); "I" by the range its
    values fit (0..255 as is, 0..65535 as 16-bit, else stretched); "F" as 0..1 when its values
    fit that range, else likewise (NaN -> 0). RGB(A) 16-bit PNGs already open as 8-bit.
    """
    import numpy as np
    from PIL import Image

    if image.mode not in HIGH_BIT_DEPTH_MODES:
        return image
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        return Image.fromarray(((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8))
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        return Image.fromarray(_scale(values, 1.0))
    if low >= 0.0 and high <= 255.0:
        return Image.fromarray(_scale(values, 255.0))
    if low >= 0.0 and high <= 65535.0:
        return Image.fromarray(_scale(values, 65535.0))
    return Image.fromarray(_scale(values - low, max(high - low, 1e-12)))


def _scale(values, full: float):
    import numpy as np

    return np.ascontiguousarray(np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8))


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
            if f.subtype in _FLOAT_SUBTYPES:
                _check_finite(f, label)
    except MMAgentError:
        raise
    except Exception as exc:  # soundfile.LibsndfileError, RuntimeError, ValueError ...
        raise CorruptMediaError(f"{label}: cannot decode {mime} ({_reason(exc)})") from None
    return MediaInfo("audio", mime, duration=duration, sample_rate=rate, channels=channels)


#: libsndfile subtypes that store floats, and so can hold NaN and infinities.
_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


def _check_finite(f, label: str) -> None:
    """Every sample of an open soundfile is finite (NaN/Inf make ASR answer garbage for minutes).
    The file is already under the byte cap: one pass in blocks costs milliseconds."""
    import numpy as np

    f.seek(0)
    for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
        if not np.isfinite(block).all():
            raise CorruptMediaError(f"{label}: audio holds non-finite samples (NaN or infinity)")


def _inspect_av(data: bytes, mime: str, limits: Limits, *, want: str, label: str,
                or_audio: bool = False) -> MediaInfo:
    """Containers soundfile cannot read (mp4, webm, mkv, aac ...) go through ffprobe.

    `or_audio`: a file sniffed as video that holds only audio is described as audio. An audio
    duration is measured from the packets too (up to just past the cap), not taken from the header."""
    with _temp_copy(data) as path:
        probe = _ffprobe(path, mime, label)
        streams = probe.get("streams", [])
        audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
        video = next((s for s in streams if s.get("codec_type") == "video"), None)
        if want == "video" and video is None and audio is not None and or_audio:
            want = "audio"
        measured = None
        if want == "audio" and audio is not None:
            measured = _packet_seconds(path, int(audio.get("index", 0)), limits.max_audio_seconds, mime, label)
    try:
        duration = float(probe.get("format", {}).get("duration") or 0) or None
    except ValueError:
        duration = None
    if want == "audio":
        if audio is None:
            raise UnsupportedMediaError(f"{label}: '{mime}' has no audio stream")
        if measured is not None and measured > limits.max_audio_seconds + _PACKET_SLACK:
            said = f" although its header says {duration:.1f} s" if duration is not None else ""
            raise MediaTooLargeError(f"{label}: audio lasts at least {measured:.1f} s{said}, over the "
                                     f"{limits.max_audio_seconds:g} s limit")
        if duration is None or (measured is not None and measured > duration + _PACKET_SLACK):
            duration = measured
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


@contextmanager
def _temp_copy(data: bytes):
    with tempfile.NamedTemporaryFile(prefix="mmagent-probe-") as tmp:
        tmp.write(data)
        tmp.flush()
        yield tmp.name


def _ffprobe_exe(mime: str, label: str) -> str:
    exe = shutil.which("ffprobe")
    if exe is None:
        raise MissingToolError(f"{label}: reading '{mime}' needs ffprobe (install ffmpeg)")
    return exe


#: Packet timestamps of a legitimate file may run a little past its header's duration (encoder
#: priming, rounding): what the packet measure may exceed the cap by before it counts.
_PACKET_SLACK = 0.25


def _packet_seconds(path: str, index: int, cap: float, mime: str, label: str) -> float | None:
    """How long stream `index` lasts by its packets' timestamps (demuxed, not decoded), reading no
    further than about a second past `cap`: a header may understate the duration, packets cannot
    without the decoder producing less. None when the packets carry no timestamps."""
    cmd = [_ffprobe_exe(mime, label), "-v", "error", "-select_streams", str(index), "-show_entries",
           "packet=pts_time,duration_time", "-read_intervals", f"%+{cap + 1:.3f}", "-of", "csv=p=0", path]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        raise CorruptMediaError(f"{label}: reading the packets of '{mime}' took too long") from None
    first = last = None
    for line in out.stdout.decode("ascii", "replace").splitlines():
        pts, _, dur = line.partition(",")
        try:
            start = float(pts)
        except ValueError:
            continue
        try:
            end = start + float(dur.split(",")[0])
        except ValueError:
            end = start
        if math.isfinite(start) and math.isfinite(end):
            first = start if first is None else min(first, start)
            last = end if last is None else max(last, end)
    return None if first is None else max(last - max(first, 0.0), 0.0)


def _ffprobe(path: str, mime: str, label: str) -> dict:
    cmd = [_ffprobe_exe(mime, label), "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        raise CorruptMediaError(f"{label}: probing '{mime}' took too long") from None
    if out.returncode != 0:
        err = out.stderr.decode(errors="replace").replace(f"{path}: ", "").strip().splitlines()
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
