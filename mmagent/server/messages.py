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

    parts = _parts(content, settings)
    return parts if isinstance(parts, str) else [part_to_block(p) for p in parts]


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


# -- messages for a backend called directly (a backend model, or tool calls) ---------------------------------


def _parts(content: Any, settings: Settings) -> str | list:
    """A user message's content as mmagent parts (a plain string stays a string)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise InputError("user message content must be a string or a non-empty list of parts")
    parts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict):
            raise InputError(f"content part {i} must be an object")
        kind = part.get("type")
        if kind in MEDIA_KEYS:
            inner = part.get(MEDIA_KEYS[kind])
            check_url(inner.get("url") if isinstance(inner, dict) else inner, f"content part {i} ({kind})")
        parts.append(from_openai(part, settings=settings))
    return parts


def _tool_calls(calls: Any, i: int) -> tuple:
    import json

    from ..backends.results import ToolCall

    if not isinstance(calls, list):
        raise InputError(f"message {i}: 'tool_calls' must be a list")
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or \
                not isinstance(call.get("id"), str):
            raise InputError(f"message {i}: each tool call needs an 'id' and a 'function' with a 'name'")
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            raise InputError(f"message {i}: tool call arguments must be a JSON object string") from None
        if not isinstance(arguments, dict):
            raise InputError(f"message {i}: tool call arguments must be a JSON object string")
        out.append(ToolCall(call["id"], function["name"], arguments))
    return tuple(out)


def to_backend_messages(messages: Any, settings: Settings) -> list:
    """An OpenAI `messages` list as `mmagent.backends.Message`s for a backend called directly:
    system, user (text and media parts), assistant (with `tool_calls`) and tool results."""
    from ..backends.results import Message

    if not isinstance(messages, list) or not messages:
        raise InputError("'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InputError(f"message {i} must be an object")
        role = m.get("role")
        if role in ("system", "developer"):
            out.append(Message("system", _text_of(m.get("content"), role)))
        elif role == "user":
            out.append(Message("user", _parts(m.get("content"), settings)))
        elif role == "assistant":
            calls = _tool_calls(m["tool_calls"], i) if m.get("tool_calls") else ()
            out.append(Message("assistant", _text_of(m.get("content"), role), tool_calls=calls))
        elif role == "tool":
            if not isinstance(m.get("tool_call_id"), str):
                raise InputError(f"message {i}: a tool message needs its 'tool_call_id'")
            out.append(Message("tool", _text_of(m.get("content"), role), tool_call_id=m["tool_call_id"]))
        else:
            raise InputError(f"message {i}: role '{one_line(str(role), 40)}' is not supported "
                             f"(use system, developer, user, assistant, tool)")
    if out[-1].role not in ("user", "tool"):
        raise InputError("the last message must be the user's (or a tool's result)")
    return out


def tool_specs(tools: Any) -> list:
    """OpenAI `tools` (function tools) as `ToolSpec`s."""
    from ..backends.results import ToolSpec

    if not isinstance(tools, list) or not tools:
        raise InputError("'tools' must be a non-empty list")
    specs = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or \
                not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", function["name"]):
            raise InputError(f"tool {i}: expected {{'type': 'function', 'function': {{'name': ..., 'parameters': "
                             f"...}}}} with a name of letters, digits, _ and - (at most 64)")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise InputError(f"tool {i}: 'parameters' must be a JSON schema object")
        specs.append(ToolSpec(function["name"], str(function.get("description") or ""), parameters))
    return specs
