"""The LangChain bridge: mmagent's pipelines, backends and tools as LangChain objects.

    from mmagent.langchain import ChatMMAgent, as_tools

    ChatMMAgent()                          # the default pipeline, as a chat model
    ChatMMAgent(pipeline="adapter")        # any registered graph
    ChatMMAgent(model="llm")               # the configured chat backend itself (llm or vlm)
    ChatMMAgent(model="vlm/transformers")  # role/backend, or role=MODEL (a model id or path)
    as_tools()                             # mmagent's tools as LangChain BaseTools

`ChatMMAgent` is a `BaseChatModel`: standard content blocks in (text, image, audio; base64, data
URLs, OpenAI `image_url`/`input_audio` parts, or `mmagent-media:` references), an `AIMessage`
out, `stream` token by token, `bind_tools` where the backend calls tools. Importing this module
imports langchain-core (not torch).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, PrivateAttr

from .backends.results import Message, ToolCall, ToolSpec
from .content.parts import AudioPart, ImagePart, MediaRef, Part, TextPart, VideoPart
from .errors import InputError, MMAgentError

MEDIA_URI_PREFIX = "mmagent-media:sha256:"


# -- content blocks <-> parts ------------------------------------------------------------------------


def part_to_block(part: Part) -> dict[str, Any]:
    """A part as a LangChain standard content block holding a media-store reference (no bytes)."""
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    meta = {k: v for k, v in part.to_dict().items() if k not in ("type", "ref", "extras") and v is not None}
    extras = {"size": part.ref.size, **meta}
    if part.extras:
        extras["extras"] = dict(part.extras)
    return {"type": part.type, "url": part.ref.uri, "mime_type": part.mime_type, "extras": extras}


def block_to_part(block: dict[str, Any] | str, *, settings=None) -> Part:
    """A content block (standard, OpenAI-style, or an mmagent reference) as a stored part. A
    reference block made by `part_to_block` is rebuilt without reading the bytes."""
    from .content.convert import from_langchain

    if isinstance(block, dict) and isinstance(block.get("url"), str) and block["url"].startswith(MEDIA_URI_PREFIX):
        extras = block.get("extras") or {}
        kind = block.get("type")
        if kind in ("image", "audio", "video") and "size" in extras and block.get("mime_type"):
            ref = MediaRef(block["url"][len(MEDIA_URI_PREFIX):], block["mime_type"], int(extras["size"]))
            fields = {k: v for k, v in extras.items() if k not in ("size", "extras")}
            cls = {"image": ImagePart, "audio": AudioPart, "video": VideoPart}[kind]
            try:
                return cls(ref=ref, extras=dict(extras.get("extras") or {}), **fields)
            except TypeError:
                pass  # unknown fields: load it properly below
    return from_langchain(block, settings=settings)


def message_parts(message: BaseMessage, *, settings=None) -> list[Part]:
    """The parts of a message's content, in order."""
    content = message.content
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    parts: list[Part] = []
    for block in content:
        if isinstance(block, dict) and block.get("type") in ("tool_use", "tool_call", "reasoning", "thinking"):
            continue
        parts.append(block_to_part(block, settings=settings))
    return parts


def is_inline_media(block: Any) -> bool:
    """A block that carries bytes (base64 or a data URL) rather than a reference."""
    if not isinstance(block, dict):
        return False
    if "base64" in block or block.get("source_type") == "base64" or "data" in block:
        return True
    inner = block.get("image_url") or block.get("video_url") or {}
    url = inner.get("url") if isinstance(inner, dict) else inner if isinstance(inner, str) else block.get("url")
    return block.get("type") == "input_audio" or (isinstance(url, str) and url.startswith("data:"))


def to_mmagent_messages(messages: Sequence[BaseMessage], *, settings=None) -> list[Message]:
    """LangChain messages -> mmagent backend messages (media validated and stored)."""
    from .runner import clean_messages

    out: list[Message] = []
    for m in clean_messages(messages):  # lone surrogates never reach a tokenizer
        if isinstance(m, SystemMessage):
            out.append(Message("system", m.text))
        elif isinstance(m, HumanMessage):
            parts = message_parts(m, settings=settings)
            out.append(Message("user", parts[0].text if len(parts) == 1 and parts[0].type == "text" else parts))
        elif isinstance(m, AIMessage):
            calls = tuple(ToolCall(c.get("id") or f"call_{i}", c["name"], dict(c.get("args") or {}))
                          for i, c in enumerate(m.tool_calls))
            out.append(Message("assistant", m.text, tool_calls=calls))
        elif isinstance(m, ToolMessage):
            out.append(Message("tool", m.text if m.text else str(m.content), tool_call_id=m.tool_call_id))
        else:
            raise InputError(f"unsupported message type {m.type!r}")
    return out


# -- the chat model ----------------------------------------------------------------------------------


class ChatMMAgent(BaseChatModel):
    """An mmagent pipeline, or one of its chat/VLM backends, as a LangChain chat model."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    pipeline: str | None = None
    """A registered graph ("tools", "adapter", ...). Default: the default pipeline, unless `model`
    names a backend to talk to directly."""
    model: str | None = Field(default=None, alias="model_name")
    """A chat backend: "llm", "vlm", "ROLE/BACKEND" or "ROLE=MODEL" (an id or a path). With a
    pipeline, it overrides the model of the pipeline's brain (llm for tools, vlm for adapter)."""
    temperature: float = 0.0
    max_tokens: int = 256
    timeout: float | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    max_retries: int = 0
    planner: str = "auto"
    backend_options: dict[str, Any] = Field(default_factory=dict)
    """Options for the backend `model` names (e.g. {"tool_calling": True} for a local chat model)."""
    backend: Any = Field(default=None, exclude=True)
    """An mmagent backend instance (graph nodes pass theirs); wins over `model`."""
    toolbox: Any = Field(default=None, exclude=True)
    _resolved: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "mmagent"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any):
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "mmagent"
        params["ls_model_name"] = kwargs["model"] if isinstance(kwargs.get("model"), str) else self._name()
        return params

    def _name(self) -> str:
        if self.backend is not None:
            return f"{self.backend.role}/{self.backend.name}:{self.backend.model_id}"
        if self._direct():
            return self.model or "llm"
        return self.pipeline or default_pipeline()

    def _direct(self) -> bool:
        return self.backend is not None or (self.pipeline is None and self.model is not None)

    # -- backends ---------------------------------------------------------------------------------

    def get_backend(self):
        """The chat/VLM backend this model talks to directly."""
        if self.backend is not None:
            return self.backend
        if self._resolved is None:
            from .backends.registry import get_registry

            role, name, model = parse_model(self.model or "llm")
            registry = get_registry()
            self._resolved = registry.create(role, name, **({"model": model} if model else {}),
                                             **self.backend_options)
        return self._resolved

    def _settings_for_pipeline(self):
        """Settings with `model` applied to the pipeline's brain."""
        from .config import load_settings

        if not self.model:
            return load_settings()
        role, name, model = parse_model(self.model)
        overrides = {f"roles.{role}.backend": name} if name else {}
        if model:
            overrides[f"roles.{role}.model"] = model
        return load_settings(overrides=overrides)

    # -- LangChain's interface ---------------------------------------------------------------------

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any):
        from langchain_core.utils.function_calling import convert_to_openai_tool

        if not self._direct():
            raise MMAgentError("a pipeline calls its own tools: bind tools to ChatMMAgent(model=...)")
        backend = self.get_backend()
        if not getattr(backend, "supports_tools", False):
            raise MMAgentError(f"{backend.role}/{backend.name} ({backend.model_id}) cannot call tools; "
                               "use a chat backend with tool calling (e.g. llm/openai)")
        specs = []
        for tool in tools:
            fn = convert_to_openai_tool(tool)["function"]
            specs.append({"name": fn["name"], "description": fn.get("description", ""),
                          "parameters": fn.get("parameters", {"type": "object", "properties": {}})})
        if tool_choice not in (None, "auto", "any", "required", "none") and tool_choice not in {s["name"] for s in specs}:
            raise InputError(f"tool_choice {tool_choice!r} names no bound tool")
        if tool_choice is not None and getattr(backend, "supports_tool_choice", False):
            # honoured where the backend can (the local grammar); elsewhere the model chooses
            kwargs["tool_choice"] = "required" if tool_choice == "any" else tool_choice
        return self.bind(tools=specs, **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        if not self._direct():
            return self._run_pipeline(messages, **kwargs)
        backend = self.get_backend()
        extra = {"tool_choice": kwargs["tool_choice"]} if kwargs.get("tool_choice") and kwargs.get("tools") else {}
        result = backend.chat(to_mmagent_messages(messages), tools=_specs(kwargs.get("tools")),
                              max_tokens=kwargs.get("max_tokens", self.max_tokens),
                              temperature=kwargs.get("temperature", self.temperature),
                              stop=stop or self.stop, **extra)
        message = AIMessage(
            content=result.text,
            tool_calls=[{"id": c.id, "name": c.name, "args": c.arguments, "type": "tool_call"}
                        for c in result.tool_calls],
            response_metadata={"model_name": self._name(), "finish_reason": result.finish_reason},
            usage_metadata=_usage(result.usage),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        if not self._direct():
            yield from self._stream_pipeline(messages, run_manager, **kwargs)
            return
        backend = self.get_backend()
        if kwargs.get("tools") or not getattr(backend, "supports_streaming", False):
            result = self._generate(messages, stop=stop, **kwargs).generations[0].message
            chunk = AIMessageChunk(content=result.content, response_metadata=result.response_metadata,
                                   usage_metadata=result.usage_metadata, tool_call_chunks=[
                                       {"id": c["id"], "name": c["name"], "args": json.dumps(c["args"]),
                                        "index": i, "type": "tool_call_chunk"}
                                       for i, c in enumerate(result.tool_calls)])
            if run_manager and isinstance(result.content, str):
                run_manager.on_llm_new_token(result.content, chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)
            return
        for piece in backend.stream(to_mmagent_messages(messages),
                                    max_tokens=kwargs.get("max_tokens", self.max_tokens),
                                    temperature=kwargs.get("temperature", self.temperature), stop=stop or self.stop):
            if not piece:
                continue
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", response_metadata={"model_name": self._name(), "finish_reason": "stop"},
            chunk_position="last"))

    # -- pipelines ---------------------------------------------------------------------------------

    def _run_pipeline(self, messages: list[BaseMessage], **kwargs: Any) -> ChatResult:
        from .runner import run_messages

        result = run_messages(messages, pipeline=self.pipeline or default_pipeline(), planner=self.planner,
                              settings=self._settings_for_pipeline(), toolbox=self.toolbox)
        return ChatResult(generations=[ChatGeneration(message=result.to_ai_message())])

    def _stream_pipeline(self, messages, run_manager, **kwargs) -> Iterator[ChatGenerationChunk]:
        from .runner import stream_messages

        for kind, value in stream_messages(messages, pipeline=self.pipeline or default_pipeline(),
                                           planner=self.planner, settings=self._settings_for_pipeline(),
                                           toolbox=self.toolbox):
            if kind == "token":
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=value))
                if run_manager:
                    run_manager.on_llm_new_token(value, chunk=chunk)
                yield chunk
            elif kind == "result":
                final = value.to_ai_message()
                extra = [b for b in final.content if isinstance(b, dict) and b.get("type") != "text"] \
                    if isinstance(final.content, list) else []
                streamed = value.streamed
                rest = "" if streamed else value.answer
                yield ChatGenerationChunk(message=AIMessageChunk(
                    content=[{"type": "text", "text": rest}, *extra] if extra else rest,
                    response_metadata=final.response_metadata, chunk_position="last"))


def parse_model(spec: str) -> tuple[str, str | None, str | None]:
    """"llm" -> (llm, None, None); "vlm/transformers" -> (vlm, transformers, None);
    "llm=HuggingFaceTB/SmolLM2-360M-Instruct" -> (llm, None, that id)."""
    if "=" in spec:
        role, _, model = spec.partition("=")
        return _role(role), None, model.strip() or None
    role, _, name = spec.partition("/")
    return _role(role), name.strip() or None, None


def _role(role: str) -> str:
    role = role.strip()
    if role not in ("llm", "vlm"):
        raise InputError(f"model must start with llm or vlm (llm, vlm/BACKEND, llm=MODEL), not {role!r}")
    return role


def default_pipeline() -> str:
    """The pipeline used when none is named: "auto", the router."""
    from .runner import DEFAULT_PIPELINE

    return DEFAULT_PIPELINE


def _specs(tools: Any) -> list[ToolSpec] | None:
    if not tools:
        return None
    return [ToolSpec(t["name"], t.get("description", ""), t.get("parameters") or {}) for t in tools]


def _usage(usage: dict[str, int]):
    if not usage:
        return None
    i, o = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"input_tokens": i, "output_tokens": o, "total_tokens": usage.get("total_tokens", i + o)}


# -- tools -------------------------------------------------------------------------------------------


class MMAgentTool(BaseTool):
    """One mmagent `Tool` as a LangChain tool: arguments by its JSON schema (media as `file`), text
    out; media it makes are stored and returned as the message artifact."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    tool: Any = Field(exclude=True)
    toolbox: Any = Field(default=None, exclude=True)
    response_format: str = "content_and_artifact"
    handle_tool_error: bool = True  # a bad argument or file goes back to the model as the tool's result

    def _run(self, run_manager=None, **kwargs: Any):
        from langchain_core.tools import ToolException

        try:
            output = self.tool.invoke(kwargs, self.toolbox)
        except MMAgentError as exc:
            raise ToolException(f"error: {exc}") from exc
        media = [part_to_block(p) for p in output.parts]
        return output.text, {"artifact": output.artifact, "media": media}


def as_tools(toolbox=None, *, names: Sequence[str] | None = None, available_only: bool = True,
             files: Sequence[str] | None = None) -> list[BaseTool]:
    """mmagent's tools (built-in and from plugins) as LangChain `BaseTool`s, for `ToolNode`,
    `create_react_agent` or any LangChain agent. `available_only`: only tools whose backend can
    run here (with this toolbox). `files`: the only values `file` may take (an enum in the schema
    the model sees: small models copy a path badly, and an agent should read only what it was given)."""
    from .toolbox import Toolbox
    from .tools import get_tools

    toolbox = toolbox or Toolbox()
    registry = get_tools()
    tools = [registry.get(n) for n in names] if names else (
        registry.available(toolbox) if available_only else registry.list())
    out = []
    for t in tools:
        schema = t.parameters
        if files and t.file_kind is not None:
            props = dict(schema.get("properties", {}))
            props["file"] = {**props.get("file", {}), "enum": [str(f) for f in files]}
            schema = {**schema, "properties": props}
        out.append(MMAgentTool(name=t.name, description=t.description, args_schema=schema, tool=t, toolbox=toolbox))
    return out
