"""OpenAI chat messages -> LangChain messages, every media part through the content layer.

Only `data:` URLs (and http(s) URLs, when `[fetch] enabled` allows them: the content layer
decides) are read; local paths, `file://` and media-store references are refused before they
reach `load_media`.
"""

from __future__ import annotations

import re
from typing import Any

from ..config import Settings
from ..content import from_openai
from ..errors import ForbiddenSourceError, InputError, one_line

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
#: Schemes a client may send; anything else (a bare path, file:, mmagent-media:) is refused.
ALLOWED_SCHEMES = ("data", "http", "https")
MEDIA_KEYS = {"image_url": "image_url", "video_url": "video_url"}


def check_url(url: Any, where: str) -> None:
    """ForbiddenSourceError unless `url` is a data URL or an http(s) URL."""
    if not isinstance(url, str):
        return  # from_openai says what is wrong with its shape
    match = _SCHEME.match(url.strip())
    scheme = match.group(1).lower() if match else None
    if scheme not in ALLOWED_SCHEMES:
        what = f"'{scheme}:' URLs" if scheme and len(scheme) > 1 else "local paths"
        raise ForbiddenSourceError(f"{where}: {what} are not accepted by the server (send a data: URL; "
                                   f"http(s) URLs when the server enables fetching)")


def _text_of(content: Any, role: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise InputError(f"{role} messages may hold only text parts")
            texts.append(part["text"])
        return "\n".join(texts)
    raise InputError(f"{role} message content must be a string or a list of parts")


def _user_blocks(content: Any, settings: Settings) -> list[dict] | str:
    from ..langchain import part_to_block

    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise InputError("user message content must be a string or a non-empty list of parts")
    blocks: list[dict] = []
    for i, part in enumerate(content):
        if not isinstance(part, dict):
            raise InputError(f"content part {i} must be an object")
        kind = part.get("type")
        if kind in MEDIA_KEYS:
            inner = part.get(MEDIA_KEYS[kind])
            check_url(inner.get("url") if isinstance(inner, dict) else inner, f"content part {i} ({kind})")
        blocks.append(part_to_block(from_openai(part, settings=settings)))
    return blocks


def to_langchain_messages(messages: Any, settings: Settings) -> tuple[list[Any], str | None]:
    """(LangChain messages, system text or None) for an OpenAI `messages` list. The last message
    must be the user's."""
    from langchain_core.messages import AIMessage, HumanMessage

    if not isinstance(messages, list) or not messages:
        raise InputError("'messages' must be a non-empty list")
    out: list[Any] = []
    system: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InputError(f"message {i} must be an object")
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(m.get("content"), role))
        elif role == "user":
            out.append(HumanMessage(content=_user_blocks(m.get("content"), settings)))
        elif role == "assistant":
            if m.get("tool_calls"):
                raise InputError("assistant tool_calls are not supported by this server yet")
            out.append(AIMessage(content=_text_of(m.get("content"), role)))
        else:
            raise InputError(f"message {i}: role '{one_line(str(role), 40)}' is not supported "
                             f"(use system, developer, user, assistant)")
    if not out or not isinstance(out[-1], HumanMessage):
        raise InputError("the last message must be the user's")
    return out, "\n\n".join(s for s in system if s) or None
