"""Content-addressed media store: bytes on disk under their sha256, written atomically."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ..errors import MMAgentError
from .parts import MediaRef


class MediaNotFoundError(MMAgentError):
    """A reference points to bytes that are not (or no longer) in the store."""


class MediaStore:
    """`put(bytes) -> MediaRef`; `read(ref) -> bytes`. Identical bytes are stored once."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def put(self, data: bytes, mime_type: str) -> MediaRef:
        digest = hashlib.sha256(data).hexdigest()
        ref = MediaRef(sha256=digest, mime_type=mime_type, size=len(data))
        target = self.path(ref)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, target)  # atomic: readers never see a half-written file
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return ref

    def path(self, ref: MediaRef) -> Path:
        return self.root / ref.sha256[:2] / ref.sha256

    def has(self, ref: MediaRef) -> bool:
        return self.path(ref).is_file()

    def read(self, ref: MediaRef) -> bytes:
        try:
            return self.path(ref).read_bytes()
        except FileNotFoundError:
            raise MediaNotFoundError(f"media {ref.sha256[:12]}… is not in the store at {self.root}") from None

    def __repr__(self) -> str:
        return f"MediaStore({str(self.root)!r})"


def default_store() -> MediaStore:
    """The store under the configured home (`MMAGENT_HOME`/media), shared through the runtime."""
    from ..runtime import get_runtime

    return get_runtime().store()
