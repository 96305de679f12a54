"""Chat completions: which model answers, and how.

A model name is either a **pipeline** (a registered graph: `auto`, `tools`, `adapter`, ...) run
with its perception and its trace, or a **backend model** (the configured llm / vlm / unified
backend by its model id, e.g. `smollm2-135m-instruct`) called directly, as an OpenAI-compatible
server of that one model would.

`tools` go to a model that calls tools: the backend model named, or a pipeline's brain (its
answering model: `tools` -> the llm, `adapter` -> the vlm; `auto` -> the vlm when the conversation
has an image, else the llm) when that backend `supports_tools`. `response_format` (`json_object`,
`json_schema`) goes through structured extraction (`mmagent.extract`): the model answers, then the
answer is filled into the schema, decoded under it where the backend can (`supports_schema`),
validated, repaired at most twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..errors import InputError, one_line
from ..toolbox import Toolbox
from .messages import to_backend_messages, to_langchain_messages, tool_specs

#: Roles whose backend models answer chat completions.
CHAT_ROLES = ("llm", "vlm", "unified")
#: OpenAI's model names, served by the configured backend of a role.
ALIASES = {"whisper-1": "asr", "gpt-4o-transcribe": "asr", "gpt-4o-mini-transcribe": "asr",
           "tts-1": "tts", "tts-1-hd": "tts", "gpt-4o-mini-tts": "tts",
           "dall-e-2": "image_gen", "dall-e-3": "image_gen", "gpt-image-1": "image_gen"}
#: Roles with endpoints of their own (model ids listed, aliases accepted).
ENDPOINT_ROLES = {"asr": "/v1/audio/transcriptions", "tts": "/v1/audio/speech",
                  "image_gen": "/v1/images/generations"}


class ModelNotFound(Exception):
    def __init__(self, name: str, available: list[str]):
        super().__init__(f"The model '{one_line(name, 100)}' does not exist; available: {', '.join(available)}")


class Catalog:
    """The models this server answers as: pipelines first (the default first), then each available
    backend's model id, then OpenAI's aliases."""

    def __init__(self, toolbox: Toolbox):
        self.toolbox = toolbox

    def pipelines(self) -> list[Any]:
        from ..graphs_registry import get_graphs
        from ..runner import DEFAULT_PIPELINE

        return sorted(get_graphs(), key=lambda g: g.name != DEFAULT_PIPELINE)

    def backends(self) -> dict[str, tuple[str, Any]]:
        """model id -> (role, backend) for each role whose backend is available here."""
        out: dict[str, tuple[str, Any]] = {}
        for role in (*CHAT_ROLES, *ENDPOINT_ROLES):
            if self.toolbox.why_unavailable(role) is None:
                backend = self.toolbox.get(role)
                model_id = str(backend.model_id or backend.name)
                if model_id not in out:
                    out[model_id] = (role, backend)
        return out

    def entries(self) -> list[tuple[str, dict]]:
        """(model id, what it is) for /v1/models."""
        out = [(g.name, {"kind": "pipeline", "description": g.description}) for g in self.pipelines()]
        taken = {name for name, _ in out}
        backends = self.backends()
        for model_id, (role, backend) in backends.items():
            if model_id not in taken:
                out.append((model_id, {"kind": "backend", "role": role, "backend": backend.name}))
        roles = {role for role, _ in backends.values()}
        out += [(alias, {"kind": "alias", "role": role}) for alias, role in ALIASES.items() if role in roles]
        return out

    def names(self) -> list[str]:
        return [name for name, _ in self.entries()]

    def chat_target(self, model: Any) -> tuple[str | None, str | None]:
        """(pipeline, None) or (None, backend role) for a chat request's `model`."""
        from ..runner import DEFAULT_PIPELINE

        if model is None or model == "":
            return DEFAULT_PIPELINE, None
        if not isinstance(model, str):
            raise InputError("'model' must be a string")
        if model in {g.name for g in self.pipelines()}:
            return model, None
        found = self.backends().get(model)
        if found is None:
            raise ModelNotFound(model, self.names())
        role = found[0]
        if role not in CHAT_ROLES:
            raise InputError(f"model '{model}' is a {role} model: use {ENDPOINT_ROLES[role]}")
        return None, role

    def endpoint_backend(self, model: Any, role: str) -> Any:
        """The backend for an audio or image endpoint: the role's backend, named by its model id,
        an OpenAI alias, or not named at all."""
        if model not in (None, "") and not isinstance(model, str):
            raise InputError("'model' must be a string")
        if model and ALIASES.get(model) != role:
            found = self.backends().get(model)
            if found is None:
                raise ModelNotFound(model, [n for n, info in self.entries() if info.get("role") == role])
            if found[0] != role:
                raise InputError(f"model '{model}' is not a {role} model")
        reason = self.toolbox.why_unavailable(role)
        if reason is not None:
            from ..errors import BackendNotFoundError

            raise BackendNotFoundError(f"no {role} backend is available on this server: {reason}")
        return self.toolbox.get(role)


# -- the request ------------------------------------------------------------------------------------------


@dataclass
class ChatRequest:
    model: str
    pipeline: str | None
    role: str | None
    messages: Any
    stream: bool = False
    tools: list | None = None
    tool_choice: str | None = None
    schema: Any = None  # a mmagent.extract.JsonSchema
    max_tokens: int | None = None
    temperature: float | None = None

    @property
    def direct(self) -> bool:
        """Whether a backend is called directly (a backend model, or tools)."""
        return self.role is not None or bool(self.tools)


def _number(body: dict, key: str, kind: type, low: float, high: float) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise InputError(f"'{key}' must be a{'n integer' if kind is int else ' number'}")
    if not low <= value <= high:
        raise InputError(f"'{key}' must be between {low:g} and {high:g}")
    return kind(value)


def _schema(fmt: Any) -> Any:
    from ..extract import JsonSchema

    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise InputError("'response_format' must be {'type': 'text'}, {'type': 'json_object'} or "
                         "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}")
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return JsonSchema({"type": "object"}, "JSON object")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise InputError("'response_format.json_schema' must be an object with a 'schema' object")
    name = spec.get("name") if isinstance(spec.get("name"), str) else "response"
    return JsonSchema(spec.get("schema") or {"type": "object"}, one_line(name, 64))


def parse_chat(body: Any, catalog: Catalog) -> ChatRequest:
    """The request's parameters, checked (InputError / ModelNotFound) before any work starts."""
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    pipeline, role = catalog.chat_target(body.get("model"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InputError("'stream' must be true or false")
    if body.get("n", 1) not in (1, None):
        raise InputError("'n' must be 1")
    tools = tool_specs(body["tools"]) if body.get("tools") else None
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        function = choice.get("function")
        choice = function.get("name") if isinstance(function, dict) else None
        if not isinstance(choice, str):
            raise InputError("'tool_choice' must be 'auto', 'none', 'required' or {'type': 'function', "
                             "'function': {'name': ...}}")
    elif choice is not None and choice not in ("auto", "none", "required"):
        raise InputError("'tool_choice' must be 'auto', 'none', 'required' or a function")
    if choice is not None and tools is None:
        raise InputError("'tool_choice' needs 'tools'")
    if tools is not None and choice == "none":
        tools, choice = None, None
    schema = _schema(body.get("response_format"))
    if schema is not None and tools is not None:
        raise InputError("give 'tools' or a JSON 'response_format', not both")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    return ChatRequest(
        model=body.get("model") or (pipeline or ""), pipeline=pipeline, role=role, messages=body.get("messages"),
        stream=stream, tools=tools, tool_choice=choice, schema=schema,
        max_tokens=_number({"max_tokens": max_tokens}, "max_tokens", int, 1, 32768),
        temperature=_number(body, "temperature", float, 0, 2))


# -- running it ------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What a direct backend call answered (a pipeline's answer is a RunResult)."""

    text: str
    tool_calls: tuple = ()
    finish_reason: str = "stop"
    usage: dict = field(default_factory=dict)
    trace: dict = field(default_factory=dict)


def _has_images(messages: list) -> bool:
    return any(getattr(p, "type", None) == "image" for m in messages if isinstance(m.content, list)
               for p in m.content)


def brain_role(request: ChatRequest, messages: list) -> str:
    """The role of the backend that answers a direct call."""
    if request.role is not None:
        return request.role
    from ..graphs_registry import get_graphs

    spec = next(g for g in get_graphs() if g.name == request.pipeline)
    if spec.brain:
        return spec.brain
    return "vlm" if _has_images(messages) else "llm"


def events(request: ChatRequest, toolbox: Toolbox, settings: Settings) -> Iterator[tuple[str, Any]]:
    """The run's events: ("token", text) while streaming, then ("result", RunResult | Reply)."""
    if request.direct:
        yield from _direct(request, toolbox, settings)
        return
    from ..runner import stream_messages

    lc_messages, system = to_langchain_messages(request.messages, settings)
    result = None
    tokens = request.stream and request.schema is None
    for event in stream_messages(lc_messages, pipeline=request.pipeline, toolbox=toolbox, settings=settings,
                                 system=system, tokens=tokens):
        if event[0] == "result":
            result = event[1]
        else:
            yield event
    if request.schema is not None:
        question = _last_user_text(request.messages)
        text = f"Question: {question}\n\nAnswer: {result.answer}" if question else result.answer
        result.answer = _extract(request, text, toolbox, None)
    yield "result", result


def _direct(request: ChatRequest, toolbox: Toolbox, settings: Settings) -> Iterator[tuple[str, Any]]:
    from ..runner import check_prompt_chars

    messages = to_backend_messages(request.messages, settings)
    check_prompt_chars(sum(len(m.content) if isinstance(m.content, str) else
                           sum(len(getattr(p, "text", "")) for p in m.content) for m in messages), settings,
                       "the request's text")
    role = brain_role(request, messages)
    reason = toolbox.why_unavailable(role)
    if reason is not None:
        from ..errors import BackendNotFoundError

        raise BackendNotFoundError(f"no {role} backend is available on this server: {reason}")
    backend = toolbox.get(role)
    trace = {"backend": f"{role}/{backend.name}", "model": backend.model_id}
    if _has_images(messages) and "image" not in getattr(backend, "accepts", ("image",)):
        raise InputError(f"model '{request.model}' answers with {role}/{backend.name}, which does not read "
                         f"images: use a pipeline (auto, tools, ...) or a vision model")
    options: dict[str, Any] = {}
    if request.max_tokens is not None:
        options["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.tools:
        if not getattr(backend, "supports_tools", False):
            raise InputError(f"model '{request.model}' answers with {role}/{backend.name} ({backend.model_id}), "
                             f"which does not call tools (for a local transformers model set [roles.{role}] "
                             f"options.tool_calling = true)")
        if request.tool_choice not in (None, "auto") and getattr(backend, "supports_tool_choice", False):
            options["tool_choice"] = request.tool_choice
        result = backend.chat(messages, tools=request.tools, **options)
        yield "result", Reply(result.text, tuple(result.tool_calls), result.finish_reason or "stop",
                              dict(result.usage), trace)
        return
    if request.schema is not None:
        if _has_images(messages) or role != "llm":
            result = backend.chat(messages, **options)
            text = f"Question: {_last_user_text(request.messages)}\n\nAnswer: {result.text}"
            yield "result", Reply(_extract(request, text, toolbox, None), trace=trace)
        else:
            conversation = "\n\n".join(f"{m.role}: {m.content}" for m in messages if m.role != "system")
            yield "result", Reply(_extract(request, conversation, toolbox, backend), trace=trace)
        return
    if request.stream and getattr(backend, "supports_streaming", False):
        pieces = []
        for piece in backend.stream(messages, **options):
            pieces.append(piece)
            yield "token", piece
        yield "result", Reply("".join(pieces).strip(), trace=trace)
        return
    result = backend.chat(messages, **options)
    yield "result", Reply(result.text, (), result.finish_reason or "stop", dict(result.usage), trace)


def _last_user_text(messages: list) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _extract(request: ChatRequest, text: str, toolbox: Toolbox, llm: Any) -> str:
    """The JSON text of `request.schema` filled from `text` (ExtractionError when the model fails)."""
    from ..extract import extract

    llm = llm if llm is not None else toolbox.get("llm")
    done = extract(request.schema, text, llm, max_tokens=request.max_tokens or 256,
                   instructions="Fill the fields from the question and its answer.")
    return json.dumps(done.value, ensure_ascii=False)
