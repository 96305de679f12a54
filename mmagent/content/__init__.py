"""Multimodal content: parts, the media store, input hardening and wire-format conversions."""

from .convert import ContentFormatError, from_langchain, from_openai, to_langchain, to_openai
from .guard import MediaInfo, MissingToolError, inspect_media
from .parts import (
    AudioPart,
    ImagePart,
    MediaPart,
    MediaRef,
    Part,
    TextPart,
    VideoPart,
    part_from_dict,
)
from .sources import load_media
from .store import MediaNotFoundError, MediaStore, default_store

__all__ = [
    "AudioPart", "ContentFormatError", "ImagePart", "MediaInfo", "MediaNotFoundError", "MediaPart",
    "MediaRef", "MediaStore", "MissingToolError", "Part", "TextPart", "VideoPart", "default_store",
    "from_langchain", "from_openai", "inspect_media", "load_media", "part_from_dict", "to_langchain",
    "to_openai",
]
