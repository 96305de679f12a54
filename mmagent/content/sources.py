"""Turn what a user hands us (a path, bytes, a data URL, an http(s) URL) into a stored, validated part."""

from __future__ import annotations

import base64
import binascii
import errno
import functools
import os
import re
import stat
import sys
from pathlib import Path

from ..config import Settings, load_settings
from ..errors import (
    ConfigError,
    ForbiddenSourceError,
    InputError,
    InvalidDataURLError,
    MediaTooLargeError,
    SourceNotFoundError,
    UnsupportedMediaError,
    one_line,
)
from .guard import MediaInfo, inspect_media
from .parts import AudioPart, ImagePart, MediaPart, VideoPart
from .store import MediaStore, damage, damaged_message

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
    under the configured home. A reference names bytes someone already handed to mmagent; the
    stored copy is verified against its name (the sha256) before it is used."""
    match = _MEDIA_URI.match(uri.strip().lower())
    if not match:
        raise InvalidDataURLError(f"malformed media reference {one_line(uri, 120)} "
                                  "(expected mmagent-media:sha256:<64 hex digits>)")
    digest = match.group(1)
    path = settings.home_path / "media" / digest[:2] / digest
    try:
        data = path.read_bytes()
    except OSError:
        raise SourceNotFoundError(f"media {digest[:12]}… is not in the media store") from None
    problem = damage(data, digest)
    if problem:
        raise SourceNotFoundError(damaged_message(digest, path, problem))
    return data


#: Kernel pseudo-file systems: their "regular files" are not files (reading /proc/kmsg consumes the
#: kernel log, /proc/self/mem fails with EIO, /sys attributes can block); never read as media.
_PSEUDO_DIRS = (Path("/proc"), Path("/sys"))
_PSEUDO_FS_MAGIC = {0x9FA0: "proc", 0x62656572: "sysfs", 0x64626720: "debugfs", 0x74726163: "tracefs",
                    0x73636673: "securityfs", 0x27E0EB: "cgroup", 0x63677270: "cgroup2", 0xCAFE4A11: "bpf",
                    0x62656570: "configfs", 0xDE5E81E4: "efivarfs", 0x6165676C: "pstore"}
_MAX_LINKS = 40  # as the kernel: more symbolic links than this while resolving one path is a loop
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_CLOEXEC", 0))
_CAN_WALK = (os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")
             and os.readlink in os.supports_dir_fd)


def read_path(path: Path, settings: Settings) -> bytes:
    """Read a regular file, confined to `paths.allowed_roots` when set, never past the byte cap.

    The file is opened component by component from the root's directory (every component with
    O_NOFOLLOW; a symbolic link is read and followed only while it stays inside the root), so a link
    swapped in while the path is being checked cannot lead outside: what is checked is the opened
    file, not the path. Kernel pseudo-files (/proc, /sys) are refused without being read."""
    label = one_line(str(path), 200)
    roots = settings.paths.allowed_roots
    if roots and any(not str(r).strip() for r in roots):
        raise ConfigError("paths.allowed_roots has an empty entry (it would silently mean the current "
                          "directory): remove it, or name the directory")
    try:
        path = path.expanduser()
        wanted = _resolve_loosely(path)
        if roots:  # confine first: whether a path outside the roots exists is none of the caller's business
            root = _confine(wanted, roots, label)
        else:
            root = Path(wanted.anchor or "/")
        fd = _open_beneath(root, wanted.relative_to(root).parts, label, confined=bool(roots))
    except InputError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:  # no home for '~', a NUL byte in the path
        raise SourceNotFoundError(f"{label}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    try:
        return _read_opened(fd, label, settings.limits.max_bytes, root if roots else None)
    finally:
        os.close(fd)


def _open_beneath(root: Path, parts: tuple[str, ...], label: str, *, confined: bool) -> int:
    """An fd for `root/parts…`, opened from `root`'s directory fd one component at a time with
    O_NOFOLLOW. Links are followed by hand (at most _MAX_LINKS), and one that leads out of `root`
    raises ForbiddenSourceError when `confined`."""
    if not _CAN_WALK:  # no openat/O_NOFOLLOW (Windows): the path as resolved, checked after opening
        target = root.joinpath(*parts)
        _refuse_pseudo_path(target, label)
        try:
            return os.open(target, _OPEN_FLAGS)
        except FileNotFoundError:
            raise SourceNotFoundError(f"{label}: no such file") from None
        except OSError as exc:
            raise SourceNotFoundError(f"{label}: {exc.strerror}") from None
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise SourceNotFoundError(f"{label}: {exc.strerror}") from None
    fds = [root_fd]  # the directories walked so far, from the root: fds[-1] is where we are
    names: list[str] = []  # their names (lexical path below the root; never a link)
    pending = list(parts)
    links = 0
    try:
        while pending:
            name = pending.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if names:
                    names.pop()
                    os.close(fds.pop())
                elif confined:
                    raise ForbiddenSourceError(f"{label} is outside the allowed roots")
                continue
            last = not pending
            if last:
                _refuse_pseudo_path(root.joinpath(*names, name), label)
            flags = _OPEN_FLAGS | os.O_NOFOLLOW | (0 if last else os.O_DIRECTORY)
            try:
                fd = os.open(name, flags, dir_fd=fds[-1])
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    if exc.errno in (errno.ENOENT,):
                        raise SourceNotFoundError(f"{label}: no such file") from None
                    raise SourceNotFoundError(f"{label}: {exc.strerror}") from None
                try:  # a symbolic link (or not a directory where one was needed)
                    target = os.readlink(name, dir_fd=fds[-1])
                except OSError:
                    if exc.errno == errno.ENOTDIR:
                        raise SourceNotFoundError(f"{label}: no such file (not a directory)") from None
                    raise SourceNotFoundError(f"{label}: {exc.strerror}") from None
                links += 1
                if links > _MAX_LINKS:
                    raise SourceNotFoundError(f"{label}: too many levels of symbolic links") from None
                if os.path.isabs(target):  # start again from the root with the link's target
                    target_path = Path(os.path.normpath(target))
                    if not target_path.is_relative_to(root):
                        if confined:
                            raise ForbiddenSourceError(f"{label} is outside the allowed roots") from None
                        target_path = Path(_resolve_loosely(target_path))
                    while len(fds) > 1:
                        os.close(fds.pop())
                    names.clear()
                    pending = list(target_path.relative_to(root).parts) + pending
                else:  # relative to where we are ('..' is taken off `names`, never the kernel's)
                    pending = target.split("/") + pending
                continue
            if last:
                return fd
            fds.append(fd)
            names.append(name)
        raise SourceNotFoundError(f"{label} is not a regular file")  # the root itself, a directory
    finally:
        for fd in fds:
            os.close(fd)


def _read_opened(fd: int, label: str, cap: int, root: Path | None) -> bytes:
    """Check the opened file (a regular file, not a kernel pseudo-file, still inside `root`, under
    the byte cap), then read it; any read error is a one-line SourceNotFoundError."""
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise SourceNotFoundError(f"{label} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SourceNotFoundError(f"{label} is not a regular file")
    fs = _pseudo_fs(fd)
    if fs:
        raise UnsupportedMediaError(f"{label} is a kernel pseudo-file ({fs}), not media; it was not read")
    if root is not None:  # where the opened file is now, by the kernel's account
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            where = None
        if where is not None and where.startswith("/") and not Path(where.removesuffix(" (deleted)")).is_relative_to(root):
            raise ForbiddenSourceError(f"{label} is outside the allowed roots")
    if st.st_size > cap:
        raise MediaTooLargeError(f"{label} is {st.st_size:,} bytes, over the {cap:,} byte limit")
    chunks, total = [], 0
    try:
        while total <= cap:
            chunk = os.read(fd, min(cap + 1 - total, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise SourceNotFoundError(f"{label} cannot be read: {exc.strerror or exc}") from None
    if total > cap:
        raise MediaTooLargeError(f"{label} is over the {cap:,} byte limit")
    return b"".join(chunks)


def _refuse_pseudo_path(path: Path, label: str) -> None:
    for pseudo in _PSEUDO_DIRS:
        if path.is_relative_to(pseudo):
            raise UnsupportedMediaError(f"{label} is a kernel pseudo-file (under {pseudo}), not media; "
                                        "it was not read")


def _pseudo_fs(fd: int) -> str | None:
    """The name of the kernel pseudo-file system holding `fd` (procfs, sysfs …), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        buf = ctypes.create_string_buffer(512)  # struct statfs: f_type (a word) comes first
        if _libc().fstatfs(fd, buf) != 0:
            return None
        magic = ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF
    except (OSError, AttributeError):
        return None
    return _PSEUDO_FS_MAGIC.get(magic)


@functools.lru_cache(maxsize=1)
def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _resolve_loosely(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: judge the path as written
        return Path(os.path.abspath(path))


def _confine(resolved: Path, roots: tuple[str, ...], label: str) -> Path:
    """The allowed root (resolved) that holds `resolved`; ForbiddenSourceError if none does."""
    for r in roots:
        root = _resolve_loosely(Path(r).expanduser())
        if resolved.is_relative_to(root):
            return root
    raise ForbiddenSourceError(f"{label} is outside the allowed roots ({', '.join(roots)})")


_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
#: What `\s` matches among ASCII characters: stripped from base64 payloads (MIME line breaks).
_B64_SPACE = b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "


def parse_data_url(url: str, max_bytes: int) -> tuple[bytes, str | None]:
    """RFC 2397 `data:` URL -> (bytes, declared MIME type or None).

    Sizes are checked before anything is decoded: the text itself (no encoding shrinks bytes by more
    than 4 to 1 with percent escapes in base64), then the exact decoded size (percent-encoded: the
    length less two per escape; base64: three bytes per four characters), so an oversized URL is
    refused in a fraction of a second, naming the cap."""
    if len(url) > 4 * max_bytes + 4096:
        raise MediaTooLargeError(f"data URL is {len(url):,} characters long, too long for the "
                                 f"{max_bytes:,} byte limit (limits.max_bytes)")
    match = _DATA_URL.match(url)
    if not match:
        raise InvalidDataURLError("malformed data URL (expected data:<mime>;base64,<data>)")
    mime = match.group("mime").strip() or None
    params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
    try:
        raw = match.group("data").encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidDataURLError("data URL holds characters that are not valid Unicode") from None
    over = f"data URL holds over the {max_bytes:,} byte limit (limits.max_bytes)"
    if "base64" in params:
        try:
            compact = _percent_decode(raw).translate(None, _B64_SPACE)
        except InvalidDataURLError as exc:
            raise InvalidDataURLError(f"data URL has invalid base64 ({exc})") from None
        if (len(compact) * 3) // 4 - 2 > max_bytes:
            raise MediaTooLargeError(over)
        try:
            data = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            try:
                data = base64.urlsafe_b64decode(compact)
                if base64.urlsafe_b64encode(data).rstrip(b"=") != compact.rstrip(b"="):
                    raise ValueError
            except (binascii.Error, ValueError):
                raise InvalidDataURLError("data URL has invalid base64") from None
    else:
        if len(raw) - 2 * raw.count(b"%") > max_bytes:  # every escape takes three characters for one byte
            raise MediaTooLargeError(over)
        data = _percent_decode(raw)
    if len(data) > max_bytes:
        raise MediaTooLargeError(over)
    if mime is not None and "/" not in mime:
        raise InvalidDataURLError(f"data URL declares an invalid MIME type '{mime}'")
    return data, mime


def _percent_decode(raw: bytes) -> bytes:
    """`urllib.parse.unquote_to_bytes` in one C pass (that one builds an object per escape: 17 s
    for 20 million escapes). A '%' not followed by two hex digits is refused, not kept."""
    if b"%" not in raw:
        return raw
    bad = _BAD_ESCAPE.search(raw)
    if bad:
        raise InvalidDataURLError(f"data URL has an invalid percent escape at byte {bad.start():,} "
                                  "('%' must be followed by two hex digits)")
    # Quoted-printable decoding is percent-decoding with '=' for '%': hide the literal '=' first.
    return binascii.a2b_qp(raw.replace(b"=", b"%3D").replace(b"%", b"="))
