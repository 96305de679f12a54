"""The FastAPI app behind `mmagent serve` (see the package docstring and docs/serving.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import re
import threading
import time
import uuid
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from ..config import PathSettings, Settings, load_settings
from ..errors import BackendError, BackendNotFoundError, InputError, PromptTooLongError, one_line
from ..toolbox import Toolbox
from . import transcripts
from .messages import to_langchain_messages

log = logging.getLogger("mmagent.server")

DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
#: Seconds a client told "busy" (429) should wait before trying again.
RETRY_AFTER_SECONDS = 1
OWNER = "mmagent"


# -- errors in OpenAI's shape ---------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    """Raised while the body is read, past the cap (an HTTPException so FastAPI's body parsing lets it through)."""

    def __init__(self, cap: int):
        super().__init__(413, f"request body is over the cap of {cap:,} bytes (--max-body-bytes)")


class ModelNotFound(Exception):
    def __init__(self, name: str, available: list[str]):
        super().__init__(f"The model '{one_line(name, 100)}' does not exist; available: {', '.join(available)}")


def error_body(message: str, code: str | None, type_: str = "invalid_request_error",
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, code: str | None, type_: str = "invalid_request_error",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, code, type_), status_code=status, headers=headers)


def _snake(name: str) -> str:
    name = name.removesuffix("Error") or name
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)  # URLError -> URL_Error
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()  # DataURL -> Data_URL


def input_error_code(exc: InputError) -> str:
    if isinstance(exc, PromptTooLongError):
        return "context_length_exceeded"
    code = _snake(type(exc).__name__)
    return "invalid_input" if code == "input" else code


def classify(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(HTTP status, OpenAI error JSON) for an exception raised while serving a request."""
    if isinstance(exc, InputError):
        return 400, error_body(one_line(str(exc), 500), input_error_code(exc))
    if isinstance(exc, ModelNotFound):
        return 404, error_body(str(exc), "model_not_found")
    if isinstance(exc, BackendNotFoundError):
        return 503, error_body(one_line(str(exc), 300), "backend_unavailable", "server_error")
    if isinstance(exc, BackendError):
        return 502, error_body(one_line(str(exc), 300), "backend_error", "server_error")
    log.error("internal error while serving a request", exc_info=exc)
    return 500, error_body("internal server error (the server log has the details)", "internal_error", "server_error")


# -- the guard: API key and body cap, before anything reads the body -----------------------------------------


class Guard:
    """ASGI middleware: 401 without the API key (when one is set), 413 for a body over the cap."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.expected is not None and scope.get("path") != "/health":
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = error_response(401, "missing or wrong API key (send Authorization: Bearer KEY)",
                                          "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await error_response(400, "bad Content-Length", "invalid_request")(scope, receive, send)
            if declared > self.max_body_bytes:
                exc = BodyTooLarge(self.max_body_bytes)
                return await error_response(413, exc.detail, "request_too_large", headers={"Connection": "close"})(
                    scope, receive, send)
        seen = 0
        cap = self.max_body_bytes

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge(cap)
            return message

        return await self.app(scope, limited_receive, send)


# -- the app -----------------------------------------------------------------------------------------------


def harden(settings: Settings) -> Settings:
    """The settings requests are read with: no local file is readable (the only allowed root is a
    directory that is never created). URL fetching stays as configured (off by default)."""
    nowhere = settings.home_path / "server" / "no-local-files"
    return dataclasses.replace(settings, paths=PathSettings(allowed_roots=(str(nowhere),)))


def create_app(settings: Settings | None = None, toolbox: Toolbox | None = None, api_key: str | None = None, *,
               max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The OpenAI-compatible app. `toolbox`: the backends (default: the configured ones, loaded on
    first use); `api_key`: required as `Authorization: Bearer KEY` when given; at most
    `max_concurrency` requests run at once (more are answered 429 with Retry-After)."""
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    base = settings or (toolbox.settings if toolbox is not None else load_settings())
    request_settings = harden(base)
    toolbox = toolbox or Toolbox(settings=base)
    slots = threading.BoundedSemaphore(max_concurrency)
    started = int(time.time())

    app = FastAPI(title="mmagent", description="OpenAI-compatible API for mmagent's pipelines", version="1",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.toolbox, app.state.max_concurrency = request_settings, toolbox, max_concurrency
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)

    # -- error handlers: OpenAI's error JSON, never a traceback --

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        code = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
                429: "rate_limit_exceeded"}.get(exc.status_code, "invalid_request")
        return error_response(exc.status_code, str(exc.detail), code, headers=getattr(exc, "headers", None))

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_http(request: Request, exc: StarletteHTTPException):
        return await _http(request, HTTPException(exc.status_code, exc.detail, getattr(exc, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
                             for e in exc.errors()[:5])
        return error_response(400, one_line(problems or "invalid request", 500), "invalid_request")

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception):
        status, body = classify(exc)
        return JSONResponse(body, status_code=status)

    for kind in (InputError, BackendError, ModelNotFound):
        app.add_exception_handler(kind, _any)

    def take_slot() -> None:
        if not slots.acquire(blocking=False):
            raise HTTPException(429, f"the server is busy ({max_concurrency} requests running); retry shortly",
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    def pipeline_of(model: Any) -> str:
        from ..graphs_registry import get_graphs
        from ..runner import DEFAULT_PIPELINE

        if model is None or model == "":
            return DEFAULT_PIPELINE
        if not isinstance(model, str):
            raise InputError("'model' must be a string")
        names = [g.name for g in get_graphs()]
        if model not in names:
            raise ModelNotFound(model, names)
        return model

    # -- endpoints --

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    def model_object(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": started, "owned_by": OWNER}

    def model_names() -> list[str]:
        from ..graphs_registry import get_graphs
        from ..runner import DEFAULT_PIPELINE

        names = [g.name for g in get_graphs()]
        return sorted(names, key=lambda n: n != DEFAULT_PIPELINE)  # auto first, then registration order

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_object(n) for n in model_names()]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str):
        if name not in model_names():
            raise ModelNotFound(name, model_names())
        return model_object(name)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise InputError("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise InputError("the request body must be a JSON object")
        pipeline = pipeline_of(body.get("model"))
        _refuse_unsupported(body)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise InputError("'stream' must be true or false")
        take_slot()
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not stream:
            try:
                result = await run_in_threadpool(_run, body.get("messages"), pipeline, toolbox, request_settings)
            finally:
                slots.release()
            return _json({"id": completion_id, "object": "chat.completion", "created": created, "model": pipeline,
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer},
                                       "logprobs": None, "finish_reason": "stop"}],
                          "usage": _usage(), "mmagent": _trace(result)})
        return await _stream(body.get("messages"), pipeline, toolbox, request_settings, slots.release,
                             completion_id, created)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(file: UploadFile = File(...), model: str = Form("whisper-1"),
                             response_format: str = Form("json"), language: str | None = Form(None),
                             prompt: str | None = Form(None), temperature: float | None = Form(None)):
        if response_format not in transcripts.FORMATS:
            raise InputError(f"unknown response_format '{one_line(response_format, 40)}' "
                             f"(use {', '.join(transcripts.FORMATS)})")
        if language is not None and not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?", language):
            raise InputError(f"'language' must be a language code such as 'en', not '{one_line(language, 40)}'")
        data = await file.read()
        take_slot()
        try:
            transcript, duration = await run_in_threadpool(_transcribe, data, language or None, toolbox,
                                                           request_settings)
        finally:
            slots.release()
        content, media_type = transcripts.render(transcript, duration, response_format)
        if media_type == "application/json":
            return _json(content)
        return PlainTextResponse(content, media_type=media_type)

    return app


def _refuse_unsupported(body: dict) -> None:
    """Parameters this server does not honour yet are refused rather than silently ignored."""
    if body.get("tools"):
        raise InputError("'tools' are not supported by this server yet", )
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise InputError("'response_format' other than text is not supported by this server yet")
    n = body.get("n", 1)
    if n not in (1, None):
        raise InputError("'n' must be 1")


def _usage() -> dict[str, int]:
    return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def _trace(result) -> dict[str, Any]:
    return {k: v for k, v in result.to_json().items() if k != "answer"}


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False, default=str), status_code=status,
                    media_type="application/json")


def _run(messages: Any, pipeline: str, toolbox: Toolbox, settings: Settings):
    from ..runner import run_messages

    lc_messages, system = to_langchain_messages(messages, settings)
    return run_messages(lc_messages, pipeline=pipeline, toolbox=toolbox, settings=settings, system=system)


def _transcribe(data: bytes, language: str | None, toolbox: Toolbox, settings: Settings):
    from ..content import load_media

    if not data:
        raise InputError("the uploaded file is empty")
    part = load_media(data, expect="audio", settings=settings)
    return toolbox.get("asr").transcribe(part, language=language), part.duration


# -- streaming -----------------------------------------------------------------------------------------------


async def _stream(messages: Any, pipeline: str, toolbox: Toolbox, settings: Settings, release, completion_id: str,
                  created: int):
    """Run the request in its own thread (one thread for the whole run: LangGraph's context stays
    in it) and relay its events as `chat.completion.chunk`s. An error before the first event is an
    ordinary error response; one after it is an `error` event, then the stream ends."""
    from sse_starlette import EventSourceResponse

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def post(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (server shutting down)
            pass

    def work() -> None:
        from ..runner import stream_messages

        try:
            lc_messages, system = to_langchain_messages(messages, settings)
            for event in stream_messages(lc_messages, pipeline=pipeline, toolbox=toolbox, settings=settings,
                                         system=system, tokens=True):
                post(event)
        except BaseException as exc:  # noqa: BLE001 - relayed to the client
            post(("error", exc))
        finally:
            release()
            post(("end", None))

    threading.Thread(target=work, name=f"mmagent-{completion_id[-8:]}", daemon=True).start()
    first = await queue.get()
    if first[0] == "error":
        raise first[1]

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> dict:
        return {"data": json.dumps({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                    "model": pipeline,
                                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish}], **extra},
                                   ensure_ascii=False, default=str)}

    async def events():
        yield chunk({"role": "assistant", "content": ""})
        sent: list[str] = []
        result = None
        item = first
        while item[0] != "end":
            kind, value = item
            if kind == "token":
                sent.append(value)
                yield chunk({"content": value})
            elif kind == "result":
                result = value
            elif kind == "error":
                status, body = classify(value)
                yield {"data": json.dumps(body)}
                return
            item = await queue.get()
        if result is None:  # pragma: no cover - every run ends with its result or an error
            return
        so_far = "".join(sent)
        if result.answer != so_far and result.answer.startswith(so_far):
            yield chunk({"content": result.answer[len(so_far):]})  # not streamed (or not all of it)
        elif result.answer != so_far:
            log.warning("streamed tokens differ from the answer of %s; the client has the streamed text", pipeline)
        yield chunk({}, "stop", usage=_usage(), mmagent=_trace(result))
        yield {"data": "[DONE]"}

    return EventSourceResponse(events(), sep="\n")
