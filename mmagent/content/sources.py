"""Turn what a user hands us (a path, bytes, a data URL, an http(s) URL) into a stored, validated part."""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from pathlib import Path
from urllib.parse import unquote_to_bytes

from ..config import Settings, load_settings
from ..errors import (
    ForbiddenSourceError,
    InputError,
    InvalidDataURLError,
    MediaTooLargeError,
    SourceNotFoundError,
    one_line,
)
from .guard import MediaInfo, inspect_media
from .parts import AudioPart, ImagePart, MediaPart, VideoPart
from .store import MediaStore

Source = str | os.PathLike[str] | bytes | bytearray | memoryview

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
_DATA_URL = re.compile(
    r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?),(?P<data>.*)$", re.DOTALL | re.IGNORECASE
)


def load_media(
    source: Source,
    *,
    expect: str | None = None,
    settings: Settings | None = None,
    store: MediaStore | None = None,
    extras: dict | None = None,
) -> MediaPart:
    """Read, validate and store one media input; return its part.

    `expect` ("image", "audio", "video") rejects other kinds. Raises an `InputError` subclass for
    anything unacceptable; nothing is stored unless the input passed every check.
    """
    settings = settings or load_settings()
    data, declared, label = read_source(source, settings)
    info = inspect_media(data, settings.limits, expect=expect, declared_mime=declared, label=label)
    if store is None:
        store = MediaStore(settings.home_path / "media")
    ref = store.put(data, info.mime_type)
    return make_part(ref, info, extras or {})


def make_part(ref, info: MediaInfo, extras: dict) -> MediaPart:
    if info.kind == "image":
        return ImagePart(ref=ref, width=info.width or 0, height=info.height or 0, extras=extras)
    if info.kind == "audio":
        return AudioPart(ref=ref, duration=info.duration or 0.0, sample_rate=info.sample_rate,
                         channels=info.channels, extras=extras)
    return VideoPart(ref=ref, duration=info.duration, width=info.width, height=info.height, extras=extras)


def read_source(source: Source, settings: Settings) -> tuple[bytes, str | None, str]:
    """(bytes, declared MIME type or None, a label for messages) for any accepted source."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), None, "input bytes"
    if isinstance(source, os.PathLike):
        return read_path(Path(source), settings), None, one_line(str(source), 200)
    if not isinstance(source, str):
        raise TypeError(f"cannot load media from {type(source).__name__}")
    match = _SCHEME.match(source)
    scheme = match.group(1).lower() if match and len(match.group(1)) > 1 else None  # 'C:' is a drive
    if scheme is None:
        return read_path(Path(source), settings), None, one_line(source, 200)
    if scheme == "data":
        data, mime = parse_data_url(source, settings.limits.max_bytes)
        return data, mime, "data URL"
    if scheme == "mmagent-media":
        return read_stored(source, settings), None, one_line(source, 120)
    if scheme in ("http", "https"):
        from .fetch import fetch_url

        data, _content_type = fetch_url(source, settings.fetch, settings.limits)
        return data, None, one_line(source, 120)  # servers mislabel often: the bytes decide
    raise ForbiddenSourceError(f"'{scheme}:' sources are not allowed (use a path, a data URL, a media reference or http(s))")


_MEDIA_URI = re.compile(r"^mmagent-media:sha256:([0-9a-f]{64})$")


def read_stored(uri: str, settings: Settings) -> bytes:
    """The bytes behind a media-store reference (`mmagent-media:sha256:<hex>`), from the store
    under the configured home. A reference names bytes someone already handed to mmagent."""
    match = _MEDIA_URI.match(uri.strip().lower())
    if not match:
        raise InvalidDataURLError(f"malformed media reference {one_line(uri, 120)} "
                                  "(expected mmagent-media:sha256:<64 hex digits>)")
    path = settings.home_path / "media" / match.group(1)[:2] / match.group(1)
    try:
        return path.read_bytes()
    except OSError:
        raise SourceNotFoundError(f"media {match.group(1)[:12]}… is not in the media store") from None


def read_path(path: Path, settings: Settings) -> bytes:
    """Read a regular file, confined to `paths.allowed_roots` when set, never past the byte cap."""
    label = one_line(str(path), 200)
    roots = settings.paths.allowed_roots
    try:
        path = path.expanduser()
        if roots:  # confine first: whether a path outside the roots exists is none of the caller's business
            _confine(_resolve_loosely(path), roots, label)
        resolved = path.resolve(strict=True)
    except InputError:
        raise
    except (FileNotFoundError, NotADirectoryError):
        raise SourceNotFoundError(f"{label}: no such file") from None
    except (OSError, RuntimeError, ValueError) as exc:  # permission, symlink loop, NUL byte in the path
        raise SourceNotFoundError(f"{label}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    if roots:
        _confine(resolved, roots, label)
    try:
        fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise SourceNotFoundError(f"{label}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise SourceNotFoundError(f"{label} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        cap = settings.limits.max_bytes
        if st.st_size > cap:
            raise MediaTooLargeError(f"{label} is {st.st_size:,} bytes, over the {cap:,} byte limit")
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise MediaTooLargeError(f"{label} is over the {cap:,} byte limit")
    return data


def _resolve_loosely(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: judge the path as written
        return Path(os.path.abspath(path))


def _confine(resolved: Path, roots: tuple[str, ...], label: str) -> None:
    if not any(resolved.is_relative_to(Path(r).expanduser().resolve()) for r in roots):
        raise ForbiddenSourceError(f"{label} is outside the allowed roots ({', '.join(roots)})")


def parse_data_url(url: str, max_bytes: int) -> tuple[bytes, str | None]:
    """RFC 2397 `data:` URL -> (bytes, declared MIME type or None)."""
    match = _DATA_URL.match(url)
    if not match:
        raise InvalidDataURLError("malformed data URL (expected data:<mime>;base64,<data>)")
    mime = match.group("mime").strip() or None
    params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
    payload = match.group("data")
    if (len(payload) * 3) // 4 > max_bytes + 3:
        raise MediaTooLargeError(f"data URL holds over the {max_bytes:,} byte limit")
    if "base64" in params:
        compact = re.sub(r"\s+", "", unquote_to_bytes(payload).decode("ascii", errors="replace"))
        try:
            data = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            try:
                data = base64.urlsafe_b64decode(compact.encode("ascii"))
                if base64.urlsafe_b64encode(data).rstrip(b"=") != compact.encode().rstrip(b"="):
                    raise ValueError
            except (binascii.Error, ValueError):
                raise InvalidDataURLError("data URL has invalid base64") from None
    else:
        data = unquote_to_bytes(payload)
    if mime is not None and "/" not in mime:
        raise InvalidDataURLError(f"data URL declares an invalid MIME type '{mime}'")
    return data, mime
