"""Any OpenAI-compatible chat endpoint: OpenAI (GPT-4o ...), vLLM, Ollama's /v1, llama.cpp, LM Studio.

This is how mmagent reaches unified models: text, images and audio go out as OpenAI chat content
parts (`to_openai`), tool calls come back as `ToolCall`s. One implementation serves two roles:
`llm/openai` and `vlm/openai`.

    [roles.vlm]
    backend = "openai"
    model = "llama3.2-vision"
    options = { base_url = "http://localhost:11434/v1" }

`chat(..., schema=...)` asks for native structured output (`response_format` of type
`json_schema`; strict when the schema allows it — every property required — so OpenAI guarantees
it; vLLM and Ollama decode under the schema either way).

Options: `base_url` (else $OPENAI_BASE_URL, else api.openai.com), `api_key_env` (the variable that
holds the key, default OPENAI_API_KEY; a local server given by base_url may need no key),
`timeout` (seconds, default 60) and `max_retries` (default 2). The `openai` SDK is imported only
when the client is built; building it touches no network.
"""

from __future__ import annotations

import hashlib
import copy
import json
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from mmagent import hookimpl
from mmagent.backends import ChatModel, ChatResult, Message, ToolCall, ToolSpec, UnifiedModel, VisionLanguageModel
from mmagent.errors import BackendError, ConfigError, InputError, one_line

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
#: Sent as the key to servers that need none (Ollama, vLLM without --api-key): the SDK insists on one.
NO_KEY = "not-needed"
OPTIONS = ("base_url", "api_key_env", "timeout", "max_retries")


class OpenAICompatible:
    """The shared implementation; mixed in before the role's contract class."""

    description = "Any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama /v1): text, images, audio, tools"
    default_model = "gpt-4o-mini"
    requires = ("openai",)
    accepts = ("text", "image", "audio")
    produces = ("text",)
    supports_tools: ClassVar[bool] = True
    supports_streaming: ClassVar[bool] = True
    supports_schema: ClassVar[bool] = True

    role: ClassVar[str]
    name: ClassVar[str]
    model_id: str
    options: dict[str, Any]
    model: Any

    def __init__(self, model: str | None = None, device: str = "auto", dtype: str = "auto", **options: Any):
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"{self._who()}: unknown option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
        super().__init__(model, device, dtype, **options)  # type: ignore[call-arg]
        self.timeout = _number(options.get("timeout", 60.0), "timeout", self._who())
        self.max_retries = options.get("max_retries", 2)
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"{self._who()}: option max_retries must be a non-negative integer, "
                              f"not {self.max_retries!r}")
        self.api_key_env = str(options.get("api_key_env") or DEFAULT_KEY_ENV)

    def _who(self) -> str:
        return f"{self.role}/{self.name}"

    # -- configuration ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str | None:
        """Option `base_url`, else $OPENAI_BASE_URL, else None (the SDK's default, api.openai.com)."""
        url = str(self.options.get("base_url") or os.environ.get(BASE_URL_ENV) or "").strip()
        return url or None

    def _api_key(self) -> str | None:
        return (os.environ.get(self.api_key_env) or "").strip() or None

    @property
    def cache_key(self) -> tuple:
        # One client per endpoint and credentials, not just per model name.
        key = self._api_key()
        key_id = hashlib.sha256(key.encode()).hexdigest()[:16] if key else None
        return (*super().cache_key, self.base_url, self.api_key_env, key_id,  # type: ignore[misc]
                self.timeout, self.max_retries)

    def unavailable_reason(self) -> str | None:
        """Usable when a key or a server is configured; the model name is the server's business."""
        if self._api_key() is None and self.base_url is None:
            return f"{self._who()} needs {self.api_key_env} or {BASE_URL_ENV}"
        return None

    def load_model(self) -> Any:
        """The SDK client (no request is made here)."""
        base_url, key = self.base_url, self._api_key()
        if key is None:
            if base_url is None:
                raise BackendError(
                    f"{self._who()} needs an API key: set {self.api_key_env} (or the option api_key_env to name "
                    f"another variable), or point option base_url / {BASE_URL_ENV} at a server that needs none"
                )
            key = NO_KEY
        import openai

        return openai.OpenAI(api_key=key, base_url=base_url, timeout=self.timeout, max_retries=self.max_retries)

    # -- requests ---------------------------------------------------------------------------------

    def chat(self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None,
             max_tokens: int = 256, temperature: float = 0.0, stop: Sequence[str] | None = None,
             schema: dict[str, Any] | None = None) -> ChatResult:
        """`schema`: a JSON schema the reply must follow (the server's structured output)."""
        request = self._request(messages, tools=tools, max_tokens=max_tokens, temperature=temperature, stop=stop)
        if schema is not None:
            request["response_format"] = to_response_format(schema)
        client = self.model
        try:
            completion = client.chat.completions.create(**request)
            return self._parse(completion)
        except BackendError:
            raise
        except Exception as exc:
            raise self._error(exc, client) from exc

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 256, temperature: float = 0.0,
               stop: Sequence[str] | None = None) -> Iterator[str]:
        request = self._request(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)
        client = self.model
        try:
            chunks = client.chat.completions.create(**request, stream=True)
        except Exception as exc:
            raise self._error(exc, client) from exc
        with chunks:
            try:
                for chunk in chunks:
                    for choice in getattr(chunk, "choices", None) or ():
                        first = getattr(choice, "index", None) in (0, None)  # n=1; a lenient server may omit it
                        piece = getattr(choice.delta, "content", None) if first else None
                        if piece:
                            yield piece
            except Exception as exc:
                raise self._error(exc, client) from exc

    def _request(self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None,
                 max_tokens: int, temperature: float, stop: Sequence[str] | None) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model_id,
            "messages": [to_openai_message(m) for m in messages],
            # `max_tokens` rather than `max_completion_tokens`: every compatible server knows it.
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if stop:
            request["stop"] = list(stop)
        if tools:
            request["tools"] = [to_openai_tool(t) for t in tools]
        return request

    def _parse(self, completion: Any) -> ChatResult:
        choices = getattr(completion, "choices", None)
        if not choices:
            raise BackendError(f"{self._who()}: the server's answer has no choices: {one_line(repr(completion), 300)}")
        choice = choices[0]
        message = choice.message
        calls = tuple(self._tool_call(call, i) for i, call in enumerate(getattr(message, "tool_calls", None) or ()))
        usage: dict[str, int] = {}
        for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = getattr(getattr(completion, "usage", None), field, None)
            if isinstance(value, int):
                usage[field] = value
        finish = choice.finish_reason or ("tool_calls" if calls else "stop")
        return ChatResult(text=message.content or "", tool_calls=calls, finish_reason=str(finish), usage=usage)

    def _tool_call(self, call: Any, index: int) -> ToolCall:
        function = getattr(call, "function", None)
        if function is None:
            raise BackendError(f"{self._who()}: unsupported tool call type {getattr(call, 'type', None)!r}")
        raw = function.arguments
        if isinstance(raw, dict):  # a lenient server sent an object, not a JSON string
            arguments = raw
        else:
            try:
                arguments = json.loads(raw) if raw and raw.strip() else {}
            except ValueError as exc:
                raise BackendError(
                    f"{self._who()}: the server sent malformed JSON arguments for tool '{function.name}': "
                    f"{exc}: {one_line(raw, 200)}"
                ) from None
        if not isinstance(arguments, dict):
            raise BackendError(f"{self._who()}: arguments for tool '{function.name}' are not a JSON object: "
                               f"{one_line(str(raw), 200)}")
        # A server that omits the id still needs one: the tool's answer must refer to it.
        return ToolCall(id=call.id or f"mmagent_call_{index}", name=function.name, arguments=arguments)

    def _error(self, exc: Exception, client: Any) -> BackendError:
        """One line: what failed, where, with the status code and the server's own message."""
        import openai

        where = str(getattr(client, "base_url", "") or self.base_url)
        if isinstance(exc, openai.APIStatusError):
            detail = f"HTTP {exc.status_code}: {_server_message(exc.body) or exc.response.reason_phrase}"
            if exc.status_code in (401, 403):
                detail += f" (check {self.api_key_env})"
        elif isinstance(exc, openai.APITimeoutError):
            detail = f"no answer within {self.timeout:g} s"
        elif isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            detail = f"cannot connect: {cause or exc.message}"
        elif isinstance(exc, openai.APIError):
            detail = _server_message(exc.body) or exc.message
        else:
            detail = f"unreadable answer: {type(exc).__name__}: {exc}"
        return BackendError(one_line(f"{self._who()} model {self.model_id!r} at {where}: {detail}", 600))


class OpenAIChat(OpenAICompatible, ChatModel):
    name = "openai"


class OpenAIVision(OpenAICompatible, VisionLanguageModel):
    name = "openai"


class OpenAIUnified(OpenAICompatible, UnifiedModel):
    """The unified route: images and audio go to the model as they are."""

    name = "openai"


# -- wire format ----------------------------------------------------------------------------------


def to_openai_message(message: Message) -> dict[str, Any]:
    """A Message as an OpenAI chat message (media parts inlined as base64)."""
    from mmagent.content import to_openai

    content: Any = message.content
    if not isinstance(content, str):
        content = [to_openai(part) for part in content]
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.tool_calls:
        if message.role != "assistant":
            raise InputError(f"only assistant messages carry tool calls, not '{message.role}' messages")
        out["content"] = content or None  # OpenAI's own form for a message that only calls tools
        out["tool_calls"] = [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}
            for call in message.tool_calls
        ]
    if message.role == "tool":
        if not message.tool_call_id:
            raise InputError("a tool message needs the tool_call_id of the call it answers")
        out["tool_call_id"] = message.tool_call_id
    return out


def to_response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `response_format` for a JSON schema. Strict (the server guarantees the shape) when
    every object lists all its properties as required, which strict mode demands; objects then get
    `additionalProperties: false`, as strict mode also demands. Otherwise the schema goes as it is,
    not strict."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "reply"))[:64]
    strict = copy.deepcopy(schema)
    objects = list(_objects(strict))
    if objects and all(set(o.get("properties", {})) == set(o.get("required", [])) for o in objects):
        for o in objects:
            o.setdefault("additionalProperties", False)
        return {"type": "json_schema", "json_schema": {"name": name, "schema": strict, "strict": True}}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": False}}


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every object schema (one with `properties`) in a JSON schema, definitions included."""
    if not isinstance(node, dict):
        return
    if node.get("type") == "object" or "properties" in node:
        yield node
    children = [*node.get("properties", {}).values(), *node.get("$defs", {}).values(),
                *node.get("definitions", {}).values(), *node.get("prefixItems", [])]
    for key in ("anyOf", "oneOf", "allOf"):
        children += node.get(key, [])
    for key in ("items", "additionalProperties", "not"):
        children.append(node.get(key))
    for child in children:
        yield from _objects(child)


def to_openai_tool(tool: ToolSpec) -> dict[str, Any]:
    return {"type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters}}


def _server_message(body: Any) -> str | None:
    """The `error.message` (or `message`, `detail`) of an error body, else the body's text."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            for key in ("message", "detail", "error"):
                if isinstance(error.get(key), str) and error[key]:
                    return one_line(error[key], 300)
        if isinstance(error, str) and error:
            return one_line(error, 300)
        return one_line(json.dumps(body), 300)
    if isinstance(body, str) and body.strip():
        return one_line(body.strip(), 300)
    return None


def _number(value: Any, name: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(f"{who}: option {name} must be a positive number of seconds, not {value!r}")
    return float(value)


@hookimpl
def register_backends(register):
    register(OpenAIChat)
    register(OpenAIVision)
    register(OpenAIUnified)
