"""The FastAPI app behind `mmagent serve` (see the package docstring and docs/serving.md)."""

from __future__ import annotations

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
from ..errors import BackendError, BackendNotFoundError, InputError, MMAgentError, PromptTooLongError, one_line
from ..toolbox import Toolbox
from . import chat, media, transcripts
from .chat import Catalog, ModelNotFound
from .jobs import ClientGone, Job, RequestTimeout

log = logging.getLogger("mmagent.server")

DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_BATCH_WAIT_S = 0.02
DEFAULT_TIMEOUT_S = 300.0
#: Seconds a client told "busy" (429) should wait before trying again.
RETRY_AFTER_SECONDS = 1
OWNER = "mmagent"


# -- errors in OpenAI's shape ---------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    """Raised while the body is read, past the cap (an HTTPException so FastAPI's body parsing lets it through)."""

    def __init__(self, cap: int):
        super().__init__(413, f"request body is over the cap of {cap:,} bytes (--max-body-bytes)")


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
    if isinstance(exc, RequestTimeout):
        return 504, error_body(str(exc), "timeout", "server_error")
    if isinstance(exc, BackendNotFoundError):
        return 503, error_body(one_line(str(exc), 300), "backend_unavailable", "server_error")
    if isinstance(exc, BackendError):
        return 502, error_body(one_line(str(exc), 300), "backend_error", "server_error")
    from ..extract import ExtractionError

    if isinstance(exc, ExtractionError):
        return 502, error_body(one_line(str(exc), 500), "extraction_failed", "server_error")

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


class Slots:
    """At most `limit` requests at once (more are answered 429); `running` feeds the batchers."""

    def __init__(self, limit: int):
        self.limit, self.running = limit, 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.running >= self.limit:
                raise HTTPException(429, f"the server is busy ({self.limit} requests running); retry shortly",
                                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
            self.running += 1

    def release(self) -> None:
        with self._lock:
            self.running -= 1


def create_app(settings: Settings | None = None, toolbox: Toolbox | None = None, api_key: str | None = None, *,
               max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
               batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
               timeout_s: float = DEFAULT_TIMEOUT_S) -> FastAPI:
    """The OpenAI-compatible app. `toolbox`: the backends (default: the configured ones, loaded on
    first use); `api_key`: required as `Authorization: Bearer KEY` when given; at most
    `max_concurrency` requests run at once (more are answered 429 with Retry-After); concurrent
    calls to one llm/vlm/unified/asr/embed backend are answered by one batched call of at most
    `max_batch_size` (1: no batching), a call waiting at most `batch_wait_s` for others; a request
    running past `timeout_s` is answered 504 and its run cancelled."""
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    if max_batch_size < 1 or batch_wait_s < 0 or not timeout_s > 0:
        raise ValueError("max_batch_size must be at least 1, batch_wait_s at least 0, timeout_s above 0")
    from ..batching import batching_toolbox

    base = settings or (toolbox.settings if toolbox is not None else load_settings())
    request_settings = harden(base)
    toolbox = toolbox or Toolbox(settings=base)
    slots = Slots(max_concurrency)
    batchers: dict = {}
    if max_batch_size > 1:
        toolbox, batchers = batching_toolbox(toolbox, max_batch_size, in_flight=lambda: slots.running,
                                             linger=batch_wait_s, max_wait=batch_wait_s)
    catalog = Catalog(toolbox)
    started = int(time.time())

    app = FastAPI(title="mmagent", description="OpenAI-compatible API for mmagent's pipelines", version="1",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.toolbox, app.state.max_concurrency = request_settings, toolbox, max_concurrency
    #: role -> the Batcher in front of its backend (each records the size of every batch it ran)
    app.state.batchers = batchers
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

    # mmagent's own errors are answered here; anything else reaches Starlette's last-resort
    # handler, which answers the same 500 JSON and logs the traceback (server side only)
    for kind in (MMAgentError, ModelNotFound, RequestTimeout):
        app.add_exception_handler(kind, _any)

    def start(produce, name: str) -> Job:
        """Take a slot (429 when none is free) and run `produce` in a job that gives it back."""
        slots.take()
        try:
            return Job(produce, f"mmagent-{name}", slots.release, timeout_s)
        except BaseException:
            slots.release()
            raise

    async def finish(job: Job, request: Request) -> Any:
        try:
            return await job.outcome(request)
        except ClientGone:
            return None

    # -- endpoints --

    @app.get("/health")
    async def health():
        return {"status": "ok", "running": slots.running, "max_concurrency": max_concurrency}

    def model_object(name: str, info: dict) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": started, "owned_by": OWNER, "mmagent": info}

    @app.get("/v1/models")
    async def list_models():
        entries = await run_in_threadpool(catalog.entries)
        return {"object": "list", "data": [model_object(n, info) for n, info in entries]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str):
        entries = dict(await run_in_threadpool(catalog.entries))
        if name not in entries:
            raise ModelNotFound(name, list(entries))
        return model_object(name, entries[name])

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _json_body(request)
        parsed = await run_in_threadpool(chat.parse_chat, body, catalog)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        job = start(lambda: chat.events(parsed, toolbox, request_settings), completion_id[-8:])
        if parsed.stream:
            return await _stream(job, request, parsed.model, completion_id, created)
        result = await finish(job, request)
        if result is None:  # the client left
            return Response(status_code=499)
        message, finish_reason, usage, trace = _answer(result)
        return _json({"id": completion_id, "object": "chat.completion", "created": created, "model": parsed.model,
                      "choices": [{"index": 0, "message": message, "logprobs": None,
                                   "finish_reason": finish_reason}],
                      "usage": usage, "mmagent": trace})

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request, file: UploadFile = File(...), model: str = Form("whisper-1"),
                             response_format: str = Form("json"), language: str | None = Form(None),
                             prompt: str | None = Form(None), temperature: float | None = Form(None)):
        if response_format not in transcripts.FORMATS:
            raise InputError(f"unknown response_format '{one_line(response_format, 40)}' "
                             f"(use {', '.join(transcripts.FORMATS)})")
        if language is not None and not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?", language):
            raise InputError(f"'language' must be a language code such as 'en', not '{one_line(language, 40)}'")
        backend = await run_in_threadpool(catalog.endpoint_backend, model, "asr")
        data = await file.read()
        job = start(lambda: _one(_transcribe, data, language or None, backend, request_settings), "asr")
        outcome = await finish(job, request)
        if outcome is None:
            return Response(status_code=499)
        transcript, duration = outcome
        content, media_type = transcripts.render(transcript, duration, response_format)
        if media_type == "application/json":
            return _json(content)
        return PlainTextResponse(content, media_type=media_type)

    @app.post("/v1/audio/speech")
    async def speech(request: Request):
        body = await _json_body(request)
        text, voice, fmt = media.speech_request(body)
        backend = await run_in_threadpool(catalog.endpoint_backend, body.get("model"), "tts")
        job = start(lambda: _one(media.synthesize, backend, text, voice, fmt), "tts")
        outcome = await finish(job, request)
        if outcome is None:
            return Response(status_code=499)
        data, media_type = outcome
        return Response(data, media_type=media_type)

    @app.post("/v1/images/generations")
    async def images(request: Request):
        body = await _json_body(request)
        options, n = media.image_request(body)
        backend = await run_in_threadpool(catalog.endpoint_backend, body.get("model"), "image_gen")
        job = start(lambda: _one(media.generate, backend, options, n), "image")
        outcome = await finish(job, request)
        if outcome is None:
            return Response(status_code=499)
        return _json({"created": int(time.time()), "data": outcome, "output_format": "png",
                      "size": f"{options['width']}x{options['height']}"})

    return app


async def _json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise InputError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    return body


def _one(fn, *args):
    """A job's events for one plain call."""
    yield "result", fn(*args)


def _answer(result) -> tuple[dict, str, dict, dict]:
    """(message, finish_reason, usage, mmagent trace) for a pipeline's RunResult or a direct Reply."""
    if isinstance(result, chat.Reply):
        message: dict[str, Any] = {"role": "assistant", "content": result.text}
        finish_reason = result.finish_reason
        if result.tool_calls:
            message["content"] = result.text or None
            message["tool_calls"] = _tool_calls(result.tool_calls)
            finish_reason = "tool_calls"
        return message, finish_reason, _usage(result.usage), result.trace
    return {"role": "assistant", "content": result.answer}, "stop", _usage({}), _trace(result)


def _tool_calls(calls) -> list[dict]:
    return [{"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}} for c in calls]


def _usage(usage: dict) -> dict[str, int]:
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _trace(result) -> dict[str, Any]:
    return {k: v for k, v in result.to_json().items() if k != "answer"}


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False, default=str), status_code=status,
                    media_type="application/json")


def _transcribe(data: bytes, language: str | None, backend, settings: Settings):
    from ..content import load_media

    if not data:
        raise InputError("the uploaded file is empty")
    part = load_media(data, expect="audio", settings=settings)
    return backend.transcribe(part, language=language), part.duration


# -- streaming -----------------------------------------------------------------------------------------------


async def _stream(job: Job, request: Request, model: str, completion_id: str, created: int):
    """Relay a job's events as `chat.completion.chunk`s. An error before the first event is an
    ordinary error response; one after it is an `error` event, then the stream ends. A client that
    leaves cancels the run."""
    from sse_starlette import EventSourceResponse

    try:
        first = await job.next(request)
    except ClientGone:
        return Response(status_code=499)
    if first[0] == "error":
        raise first[1]

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> dict:
        return {"data": json.dumps({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                    "model": model,
                                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish}], **extra},
                                   ensure_ascii=False, default=str)}

    async def events():
        try:
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
                    yield {"data": json.dumps(classify(value)[1])}
                    return
                try:
                    item = await job.next(request)
                except ClientGone:
                    return
                except RequestTimeout as exc:
                    yield {"data": json.dumps(classify(exc)[1])}
                    return
            if result is None:  # pragma: no cover - every run ends with its result or an error
                return
            message, finish_reason, usage, trace = _answer(result)
            if message.get("tool_calls"):
                yield chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]})
            so_far, answer = "".join(sent), message.get("content") or ""
            if answer != so_far and answer.startswith(so_far):
                yield chunk({"content": answer[len(so_far):]})  # not streamed (or not all of it)
            elif answer != so_far:
                log.warning("streamed tokens differ from the answer of %s; the client has the streamed text", model)
            yield chunk({}, finish_reason, usage=usage, mmagent=trace)
            yield {"data": "[DONE]"}
        finally:
            job.cancel()  # a no-op when the run has ended; stops it when the client has gone

    return EventSourceResponse(events(), sep="\n")
