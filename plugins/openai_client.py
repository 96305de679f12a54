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

`max_pixels` (default 1_048_576 = 1024x1024; 0 for no limit) is the pixel budget per image.
Image tokens are what an image costs (OpenAI bills by 512-px tiles, local VLMs spend context and
memory on every patch), so before each request an image with width*height above the budget is
scaled down (Lanczos, aspect ratio kept) and re-encoded in its own format: PNG stays PNG, JPEG stays
JPEG (quality 90), anything else becomes PNG. Images within the budget go out byte for byte. The
shrunk copy is sent, not stored. What was shrunk is reported as `usage["downscaled"]` of the
`ChatResult` (`[{"from": [w, h], "to": [w2, h2]}]`, absent when nothing was) and, for `stream()`
too, in the instance attribute `last_downscaled` (the last request's list).

`accepts` (default: the class's, `["text", "image", "audio"]`) narrows what this model reads
natively, e.g. `options = { accepts = ["text", "image"] }` for llava under Ollama, which takes no
audio: `takes("audio")` is then False and the router and graphs transcribe the audio first.

`is_local()` is True when base_url names this machine or the user's own network (loopback,
RFC 1918, link-local, `localhost`, `*.local`), judged from the URL alone (no DNS lookup); False for
api.openai.com, no base_url, or any other host.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import hashlib
import ipaddress
import json
import math
import os
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from mmagent import hookimpl
from mmagent.backends import ChatModel, ChatResult, Message, ToolCall, ToolSpec, UnifiedModel, VisionLanguageModel
from mmagent.content import ImagePart
from mmagent.errors import BackendError, ConfigError, InputError, one_line

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
#: Sent as the key to servers that need none (Ollama, vLLM without --api-key): the SDK insists on one.
NO_KEY = "not-needed"
OPTIONS = ("base_url", "api_key_env", "timeout", "max_retries", "max_pixels", "accepts")
#: The default pixel budget per image (option `max_pixels`): 1024 x 1024.
DEFAULT_MAX_PIXELS = 1024 * 1024
#: Host names that are this machine or the local network without a DNS lookup.
LOCAL_SUFFIXES = (".localhost", ".local")
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "fc00::/7",  # IPv6 unique local addresses, RFC 1918's counterpart
))


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
        self.max_pixels = _max_pixels(options.get("max_pixels", DEFAULT_MAX_PIXELS), self._who())
        #: What this configured model reads natively, when narrower than the class's `accepts`.
        self.accepts_here: tuple[str, ...] | None = (
            None if options.get("accepts") is None else _accepts(options["accepts"], self.accepts, self._who()))
        #: What the last request scaled down: [{"from": [w, h], "to": [w2, h2]}, ...].
        self.last_downscaled: list[dict[str, list[int]]] = []

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

    def is_local(self) -> bool:
        """True when base_url points at this machine or a private network (see `is_local_url`)."""
        return is_local_url(self.base_url)

    def describe(self) -> dict[str, Any]:
        info = super().describe()  # type: ignore[misc]
        if self.accepts_here is not None:
            info["accepts"] = list(self.accepts_here)
        return info

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
        downscaled: list[dict[str, list[int]]] = []
        request = self._request(messages, tools=tools, max_tokens=max_tokens, temperature=temperature, stop=stop,
                                downscaled=downscaled)
        if schema is not None:
            request["response_format"] = to_response_format(schema)
        client = self.model
        try:
            completion = client.chat.completions.create(**request)
            result = self._parse(completion)
        except BackendError:
            raise
        except Exception as exc:
            raise self._error(exc, client) from exc
        if downscaled:
            result = dataclasses.replace(result, usage={**result.usage, "downscaled": downscaled})
        return result

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 256, temperature: float = 0.0,
               stop: Sequence[str] | None = None) -> Iterator[str]:
        request = self._request(messages, max_tokens=max_tokens, temperature=temperature, stop=stop, downscaled=[])
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
                 max_tokens: int, temperature: float, stop: Sequence[str] | None,
                 downscaled: list[dict[str, list[int]]] | None = None) -> dict[str, Any]:
        """The request body; images over `max_pixels` are scaled down, and listed in `downscaled`
        (and `last_downscaled`)."""
        downscaled = [] if downscaled is None else downscaled
        request: dict[str, Any] = {
            "model": self.model_id,
            "messages": [to_openai_message(m, max_pixels=self.max_pixels, downscaled=downscaled) for m in messages],
            # `max_tokens` rather than `max_completion_tokens`: every compatible server knows it.
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if stop:
            request["stop"] = list(stop)
        if tools:
            request["tools"] = [to_openai_tool(t) for t in tools]
        self.last_downscaled = downscaled
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


def to_openai_message(message: Message, *, max_pixels: int | None = None,
                      downscaled: list[dict[str, list[int]]] | None = None) -> dict[str, Any]:
    """A Message as an OpenAI chat message (media parts inlined as base64).

    `max_pixels`: images with more pixels are sent scaled down to fit (see `fit_image`); each one
    is appended to `downscaled` as `{"from": [w, h], "to": [w2, h2]}`."""
    from mmagent.content import to_openai

    content: Any = message.content
    if not isinstance(content, str):
        content = [_image_block(part, max_pixels, downscaled) if isinstance(part, ImagePart) and max_pixels
                   else to_openai(part) for part in content]
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


def _image_block(part: ImagePart, max_pixels: int, downscaled: list | None) -> dict[str, Any]:
    """The `image_url` content part for `part`, scaled down first when it is over the budget."""
    from mmagent.content import to_openai

    fitted = fit_image(part, max_pixels)
    if fitted is None:
        return to_openai(part)
    data, mime, size, new_size = fitted
    image_url = {"url": f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"}
    if "detail" in part.extras:
        image_url["detail"] = part.extras["detail"]
    if downscaled is not None:
        downscaled.append({"from": list(size), "to": list(new_size)})
    return {"type": "image_url", "image_url": image_url}


def fit_image(part: ImagePart, max_pixels: int) -> tuple[bytes, str, tuple[int, int], tuple[int, int]] | None:
    """`(bytes, mime type, (w, h), (w2, h2))` of the image scaled down so that w2*h2 <= max_pixels,
    or None when it already fits (or Pillow cannot read it: it then goes as it is)."""
    width, height = part.width, part.height
    if width > 0 and height > 0 and width * height <= max_pixels:
        return None  # known to fit: no need to read or decode anything
    return _shrink(part, max_pixels)


@functools.lru_cache(maxsize=8)  # a conversation resends the same images every turn
def _shrink(part: ImagePart, max_pixels: int) -> tuple[bytes, str, tuple[int, int], tuple[int, int]] | None:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(part.read_bytes()))
        width, height = image.size
        if width * height <= max_pixels:
            return None
        image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return None
    new_size = scaled_size(width, height, max_pixels)
    fmt = image.format if image.format in ("PNG", "JPEG") else "PNG"
    from mmagent.content.guard import to_8bit

    image = to_8bit(image)  # a 16-bit grey page scaled, not clipped to white
    save: dict[str, Any] = {k: image.info[k] for k in ("exif", "icc_profile") if image.info.get(k)}
    if fmt == "JPEG":
        save.update(quality=90)
        if image.mode not in ("L", "RGB", "CMYK"):
            image = image.convert("RGB")
    elif image.mode not in ("1", "L", "LA", "I", "RGB", "RGBA"):  # palette, CMYK, YCbCr ...
        alpha = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if alpha else "RGB")
    if image.mode == "1":
        image = image.convert("L")  # Lanczos needs grey levels
    out = io.BytesIO()
    image.resize(new_size, Image.Resampling.LANCZOS).save(out, fmt, **save)
    return out.getvalue(), f"image/{fmt.lower()}", (width, height), new_size


def scaled_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size with the same aspect ratio (to a pixel) whose area is within `max_pixels`."""
    scale = math.sqrt(max_pixels / (width * height))
    new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
    if new_w * new_h > max_pixels:  # float rounding, or a side clamped to one pixel
        if new_w >= new_h:
            new_w = max(1, max_pixels // new_h)
        else:
            new_h = max(1, max_pixels // new_w)
    return new_w, new_h


def is_local_url(url: str | None) -> bool:
    """Whether `url`'s host is this machine or a private network: loopback, RFC 1918 (and IPv6
    unique local), link-local, `localhost`, `*.localhost`, `*.local`. Judged from the text alone,
    no DNS lookup, so a public name that resolves to a private address counts as remote."""
    if not url or not url.strip():
        return False
    url = url.strip()
    if "://" not in url:
        url = "http://" + url  # "localhost:11434/v1"
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(LOCAL_SUFFIXES):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # fe80::1%eth0
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_loopback or ip.is_link_local or ip.is_unspecified
            or any(ip in net for net in PRIVATE_NETWORKS if net.version == ip.version))


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


def _max_pixels(value: Any, who: str) -> int | None:
    """Option max_pixels: a positive integer, or 0 / None for no limit."""
    if value is None or (value == 0 and not isinstance(value, bool)):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{who}: option max_pixels must be a positive integer (0 for no limit), not {value!r}")
    return value


def _accepts(value: Any, allowed: Sequence[str], who: str) -> tuple[str, ...]:
    """Option accepts: a list of kinds, within the class's `accepts` and with "text" among them."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{who}: option accepts must be a list of kinds such as [\"text\", \"image\"], "
                          f"not {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise ConfigError(f"{who}: option accepts names {', '.join(map(repr, unknown))}, which this backend "
                          f"cannot take (it can take {', '.join(allowed)})")
    if "text" not in value:
        raise ConfigError(f"{who}: option accepts must include \"text\", not {list(value)!r}")
    return tuple(k for k in allowed if k in value)


@hookimpl
def register_backends(register):
    register(OpenAIChat)
    register(OpenAIVision)
    register(OpenAIUnified)
