"""Lossless conversion between parts and OpenAI chat content parts / LangChain content blocks.

Going out, media is inlined as base64 (what those APIs expect). Coming in, every media block goes
through `load_media`, so the same caps and checks apply whatever the wire format.
"""

from __future__ import annotations

import base64
from typing import Any

from ..config import Settings, load_settings
from ..errors import InputError
from .parts import AudioPart, ImagePart, Part, TextPart, VideoPart
from .sniff import AUDIO_FORMAT_OF, AUDIO_FORMATS
from .sources import load_media
from .store import MediaStore


class ContentFormatError(InputError):
    """A content part/block is not in a shape mmagent understands."""


# -- OpenAI chat completions -----------------------------------------------------------------------


def to_openai(part: Part, store: MediaStore | None = None) -> dict[str, Any]:
    """Part -> OpenAI chat content part (`text`, `image_url`, `input_audio`, `video_url`)."""
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        image_url = {"url": part.data_url(store)}
        if "detail" in part.extras:
            image_url["detail"] = part.extras["detail"]
        return {"type": "image_url", "image_url": image_url}
    if isinstance(part, AudioPart):
        data = base64.b64encode(part.read_bytes(store)).decode("ascii")
        fmt = AUDIO_FORMAT_OF.get(part.mime_type, part.format)
        return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}
    if isinstance(part, VideoPart):
        return {"type": "video_url", "video_url": {"url": part.data_url(store)}}
    raise TypeError(f"not a part: {part!r}")


def from_openai(
    block: dict[str, Any], *, settings: Settings | None = None, store: MediaStore | None = None
) -> Part:
    """OpenAI chat content part -> Part (media validated and stored)."""
    kind = _get(block, "type", str)
    if kind == "text":
        return TextPart(_get(block, "text", str))
    if kind == "image_url":
        inner = block.get("image_url")
        inner = {"url": inner} if isinstance(inner, str) else inner
        url = _get(inner, "url", str, where="image_url")
        extras = {"detail": inner["detail"]} if isinstance(inner, dict) and "detail" in inner else {}
        return load_media(url, expect="image", settings=settings, store=store, extras=extras)
    if kind == "input_audio":
        inner = _get(block, "input_audio", dict)
        data, fmt = _get(inner, "data", str, where="input_audio"), _get(inner, "format", str, where="input_audio")
        mime = AUDIO_FORMATS.get(fmt.lower(), f"audio/{fmt.lower()}")
        return load_media(f"data:{mime};base64,{data}", expect="audio", settings=settings, store=store)
    if kind == "video_url":
        inner = block.get("video_url")
        inner = {"url": inner} if isinstance(inner, str) else inner
        return load_media(_get(inner, "url", str, where="video_url"), expect="video", settings=settings, store=store)
    raise ContentFormatError(f"unsupported content part type '{kind}'")


# -- LangChain standard content blocks (langchain-core >= 1.0) --------------------------------------


def to_langchain(part: Part, store: MediaStore | None = None) -> dict[str, Any]:
    """Part -> LangChain standard block (`{"type": "image", "base64": ..., "mime_type": ...}`)."""
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    block: dict[str, Any] = {
        "type": part.type,
        "base64": base64.b64encode(part.read_bytes(store)).decode("ascii"),
        "mime_type": part.mime_type,
    }
    if part.extras:
        block["extras"] = dict(part.extras)
    return block


def from_langchain(
    block: dict[str, Any] | str, *, settings: Settings | None = None, store: MediaStore | None = None
) -> Part:
    """LangChain content block (v1 standard, the older `source_type` form, or OpenAI-style) -> Part."""
    if isinstance(block, str):
        return TextPart(block)
    kind = _get(block, "type", str)
    if kind in ("image_url", "input_audio", "video_url"):
        return from_openai(block, settings=settings, store=store)
    if kind == "text":
        return TextPart(_get(block, "text", str))
    if kind not in ("image", "audio", "video"):
        raise ContentFormatError(f"unsupported content block type '{kind}'")
    settings = settings or load_settings()
    extras = block.get("extras") or {}
    if not isinstance(extras, dict):
        raise ContentFormatError(f"{kind} block: 'extras' must be an object")
    extras = dict(extras)
    mime = block.get("mime_type")
    source_type = block.get("source_type")  # langchain-core 0.3 form
    if "base64" in block or source_type == "base64":
        data = block.get("base64", block.get("data"))
        if not isinstance(data, str):
            raise ContentFormatError(f"{kind} block: 'base64' must be a string")
        source = f"data:{mime or 'application/octet-stream'};base64,{data}"
    elif "url" in block:
        source = _get(block, "url", str)
    elif "file_id" in block:
        raise ContentFormatError(f"{kind} block refers to a provider file_id, which mmagent cannot read")
    else:
        raise ContentFormatError(f"{kind} block has neither 'base64' nor 'url'")
    return load_media(source, expect=kind, settings=settings, store=store, extras=extras)


def _get(obj: Any, key: str, typ: type, where: str = "content part") -> Any:
    if not isinstance(obj, dict):
        raise ContentFormatError(f"{where} must be an object")
    value = obj.get(key)
    if not isinstance(value, typ):
        raise ContentFormatError(f"{where}: '{key}' must be a {typ.__name__}")
    return value
