"""Content parts: what a request is made of. Media parts hold a reference into the media store,
never the bytes, so graph state, traces and checkpoints stay small."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union

if TYPE_CHECKING:
    from .store import MediaStore

Kind = Literal["text", "image", "audio", "video"]
MEDIA_KINDS: tuple[Kind, ...] = ("image", "audio", "video")


@dataclass(frozen=True)
class MediaRef:
    """A content address: the sha256 of the bytes, their MIME type and size."""

    sha256: str
    mime_type: str
    size: int

    @property
    def uri(self) -> str:
        return f"mmagent-media:sha256:{self.sha256}"


@dataclass(frozen=True)
class TextPart:
    text: str
    type: ClassVar[Kind] = "text"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass(frozen=True)
class _MediaPart:
    ref: MediaRef
    #: Free-form hints that must survive conversions (e.g. OpenAI's image `detail`, a file name).
    extras: dict[str, Any] = field(default_factory=dict, compare=False)

    def path(self, store: MediaStore | None = None) -> Path:
        """A file holding the bytes (inside the media store), verified like `read_bytes` (a damaged
        stored copy is an error, never handed to a backend)."""
        return _store(store).verified_path(self.ref)

    def read_bytes(self, store: MediaStore | None = None) -> bytes:
        return _store(store).read(self.ref)

    def data_url(self, store: MediaStore | None = None) -> str:
        data = base64.b64encode(self.read_bytes(store)).decode("ascii")
        return f"data:{self.ref.mime_type};base64,{data}"

    @property
    def mime_type(self) -> str:
        return self.ref.mime_type

    @property
    def format(self) -> str:
        """Short format name from the MIME type: png, jpeg, wav, mpeg, mp4 ..."""
        return self.ref.mime_type.split("/", 1)[1].removeprefix("x-")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["type"] = self.type  # type: ignore[attr-defined]
        if not data["extras"]:
            del data["extras"]
        return data


@dataclass(frozen=True)
class ImagePart(_MediaPart):
    width: int = 0
    height: int = 0
    type: ClassVar[Kind] = "image"


@dataclass(frozen=True)
class AudioPart(_MediaPart):
    duration: float = 0.0
    sample_rate: int | None = None
    channels: int | None = None
    type: ClassVar[Kind] = "audio"


@dataclass(frozen=True)
class VideoPart(_MediaPart):
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    type: ClassVar[Kind] = "video"


MediaPart = Union[ImagePart, AudioPart, VideoPart]
Part = Union[TextPart, ImagePart, AudioPart, VideoPart]
PART_TYPES: dict[str, type] = {"text": TextPart, "image": ImagePart, "audio": AudioPart, "video": VideoPart}


def part_from_dict(data: dict[str, Any]) -> Part:
    """Inverse of `Part.to_dict()`: rebuild a part from graph state or a checkpoint."""
    data = dict(data)
    cls = PART_TYPES.get(data.pop("type", None))
    if cls is None:
        raise ValueError(f"unknown part type in {data!r}")
    if cls is not TextPart:
        data["ref"] = MediaRef(**data["ref"])
    return cls(**data)


def _store(store: MediaStore | None) -> MediaStore:
    if store is not None:
        return store
    from .store import default_store

    return default_store()
