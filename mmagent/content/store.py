"""Content-addressed media store: bytes on disk under their sha256, written atomically.

Hardening (issue 11): a stored object is verified when read (its size, and its sha256, which is its
name) and rewritten when the same bytes are stored again; temp files left by killed writers are
removed once they are an hour old; a full or read-only disk is a typed error naming the directory.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path

from ..errors import MMAgentError
from .parts import MediaRef

#: A `.tmp-*` file older than this is a killed writer's leftover, not a write in progress.
STALE_TEMP_SECONDS = 3600.0
TEMP_PREFIX = ".tmp-"


class MediaNotFoundError(MMAgentError):
    """A reference points to bytes that are not (or no longer) in the store."""


class DamagedMediaError(MediaNotFoundError):
    """The stored copy of a reference is damaged (wrong size or hash); storing the original again
    repairs it."""


class MediaStoreError(MMAgentError):
    """The store could not be written: a full disk, a read-only or unwritable directory."""


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def store_write_error(exc: OSError, directory: Path) -> MMAgentError:
    """A typed, one-line error for an `OSError` met while writing under `directory`."""
    reason = exc.strerror or str(exc)
    if exc.errno in _NO_SPACE:
        return MediaStoreError(f"cannot write to the media store at {directory}: {reason}; "
                               "free some space there or set MMAGENT_HOME to a directory on another disk")
    if exc.errno in _NOT_WRITABLE:
        return MediaStoreError(f"cannot write to the media store at {directory}: {reason}; "
                               "make it writable or set MMAGENT_HOME to a writable directory")
    return MediaStoreError(f"cannot write to the media store at {directory}: {reason}")


class MediaStore:
    """`put(bytes) -> MediaRef`; `read(ref) -> bytes`. Identical bytes are stored once."""

    #: root -> when this process last swept it for stale temp files (a sweep lists the whole store).
    _swept: dict[str, float] = {}
    _swept_lock = threading.Lock()

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self._verified: dict[str, tuple[int, int, int]] = {}  # sha256 -> stat stamp when it was verified
        self._sweep_if_due()

    # -- writing ---------------------------------------------------------------------------------------

    def put(self, data: bytes, mime_type: str) -> MediaRef:
        digest = hashlib.sha256(data).hexdigest()
        ref = MediaRef(sha256=digest, mime_type=mime_type, size=len(data))
        target = self.path(ref)
        self._sweep_if_due()
        clean_stale_temp_files(target.parent)
        if not self._intact(target, data):  # absent, or damaged: (re)write it from the bytes at hand
            self._write(target, data)
        return ref

    def _intact(self, target: Path, data: bytes) -> bool:
        try:
            if target.stat().st_size != len(data):
                return False
            return target.read_bytes() == data
        except OSError:
            return False

    def _write(self, target: Path, data: bytes) -> None:
        directory = target.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_write_error(exc, self.root) from None
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
        except OSError as exc:
            raise store_write_error(exc, self.root) from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)  # atomic: readers never see a half-written file
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise store_write_error(exc, self.root) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- reading ---------------------------------------------------------------------------------------

    def path(self, ref: MediaRef) -> Path:
        return self.root / ref.sha256[:2] / ref.sha256

    def has(self, ref: MediaRef) -> bool:
        return self.path(ref).is_file()

    def read(self, ref: MediaRef) -> bytes:
        """The bytes of `ref`, verified: a damaged stored copy raises `DamagedMediaError`."""
        path = self.path(ref)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MediaNotFoundError(f"media {ref.sha256[:12]}… is not in the store at {self.root}") from None
        except OSError as exc:
            raise MediaNotFoundError(f"media {ref.sha256[:12]}… cannot be read from {path}: "
                                     f"{exc.strerror or exc}") from None
        problem = damage(data, ref.sha256, ref.size)
        if problem:
            raise DamagedMediaError(damaged_message(ref.sha256, path, problem))
        return data

    def verified_path(self, ref: MediaRef) -> Path:
        """The file holding `ref`'s bytes, for tools that open files themselves, verified like
        `read` (hashed again only when the file's stat stamp changed)."""
        path = self.path(ref)
        try:
            st = path.stat()
        except OSError:
            raise MediaNotFoundError(f"media {ref.sha256[:12]}… is not in the store at {self.root}") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._verified.get(ref.sha256) != stamp:
            self.read(ref)
            self._verified[ref.sha256] = stamp
        return path

    def __repr__(self) -> str:
        return f"MediaStore({str(self.root)!r})"

    # -- stale temp files ----------------------------------------------------------------------------------

    def _sweep_if_due(self) -> None:
        key = os.path.abspath(self.root)
        now = time.monotonic()
        with self._swept_lock:
            last = self._swept.get(key)
            if last is not None and now - last < STALE_TEMP_SECONDS:
                return
            self._swept[key] = now
        clean_stale_temp_files(self.root)
        try:
            with os.scandir(self.root) as entries:
                subdirs = [e.path for e in entries if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
        except OSError:
            return
        for subdir in subdirs:
            clean_stale_temp_files(subdir)


def clean_stale_temp_files(directory: str | os.PathLike[str], max_age: float = STALE_TEMP_SECONDS) -> int:
    """Remove `.tmp-*` files in `directory` not modified for `max_age` seconds (what killed writers
    leave behind); return how many. Never raises: a sweep that cannot run is skipped."""
    removed = 0
    cutoff = time.time() - max_age
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not entry.name.startswith(TEMP_PREFIX):
                    continue
                try:
                    if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except OSError:
                    continue
    except OSError:
        pass
    return removed


def damage(data: bytes, sha256: str, size: int | None = None) -> str | None:
    """What is wrong with stored bytes that should have `sha256` (and `size`), or None."""
    if size is not None and len(data) != size:
        return f"{len(data):,} bytes instead of {size:,}"
    if hashlib.sha256(data).hexdigest() != sha256:
        return "its sha256 does not match its name"
    return None


def damaged_message(sha256: str, path: Path, problem: str) -> str:
    return (f"the stored copy of media {sha256[:12]}… at {path} is damaged ({problem}); "
            "load the original again to repair it, or delete that file")


def default_store() -> MediaStore:
    """The store under the configured home (`MMAGENT_HOME`/media), shared through the runtime."""
    from ..runtime import get_runtime

    return get_runtime().store()
