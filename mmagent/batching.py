"""Batching per backend, under unchanged graphs: concurrent calls become one batched call.

Both the evaluation runner (B items at once, each through its pipeline's graph in its own thread)
and the server (concurrent requests, each in its own thread) hand their graphs a toolbox that puts
a proxy in front of each backend that can take many requests at once:

    llm, vlm, unified  a chat backend with `batch(requests, max_tokens=, temperature=, stop=) -> list[str]`
                       (the local VLM and LLM): plain `chat` calls become one `batch` call
    asr                a speech backend with `batch(audios, language=) -> list[Transcript]`
                       (openai-whisper: clips of up to 30 s decoded together)
    embed              any `Embedder`: `embed(texts)` already takes a list, so the intent embedder's
                       one-question calls become one `embed` call

A call waits until B calls are waiting (or as many as there are requests in flight), until no new
call has come for `linger` seconds, or until the oldest waiting call has waited `max_wait` seconds
(the server's bound on the extra latency); then one batched call answers them all. One batch runs
on a backend at a time; calls arriving meanwhile form the next. Chat calls with tools or a schema,
streamed chat calls, and backends without `batch`, go straight through.

The graphs see the same contract class (each proxy subclasses its role's contract), so nothing in
a graph knows it is being batched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backends.base import Backend
from .backends.results import ChatResult
from .backends.roles import ChatModel, Embedder, SpeechToText, UnifiedModel, VisionLanguageModel
from .toolbox import Toolbox

#: Seconds without a new call after which a partial batch runs. Items of one wave reach a backend
#: spread over a few hundred milliseconds on a busy CPU (benchmarks/eval_throughput.py): too short
#: a wait splits every wave into a batch of 1 and a batch of B-1.
LINGER = 0.25

#: run(payloads, key) -> one result per payload
BatchFn = Callable[[list[Any], tuple], list[Any]]


@dataclass
class _Call:
    payload: Any
    key: tuple
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class Batcher:
    """Collects concurrent requests for one backend and answers them with one `run` call."""

    def __init__(self, run: BatchFn, size: int, in_flight: Callable[[], int] | None = None,
                 linger: float = LINGER, max_wait: float | None = None):
        self.run = run
        self.size = max(1, size)
        self.in_flight = in_flight or (lambda: self.size)
        self.linger = linger
        #: the longest a call waits for others (None: as long as calls keep coming within `linger`)
        self.max_wait = max_wait
        self._pending: list[_Call] = []
        self._cond = threading.Condition()
        self._running = False
        self._last_arrival = 0.0
        #: the size of every batch run (benchmarks and tests read it)
        self.batches: list[int] = []

    def _target(self) -> int:
        return max(1, min(self.size, self.in_flight()))

    def submit(self, payload: Any, key: tuple = ()) -> Any:
        """The result for `payload`, computed in a batch with other calls of the same `key`."""
        call = _Call(payload, key)
        with self._cond:
            self._pending.append(call)
            self._last_arrival = time.monotonic()
            self._cond.notify_all()
            while not call.done.is_set():
                now = time.monotonic()
                if not self._running and self._pending and (
                        len(self._pending) >= self._target() or now - self._last_arrival >= self.linger or
                        (self.max_wait is not None and now - self._pending[0].arrived >= self.max_wait)):
                    self._flush_locked()
                    continue
                bound = self.linger if self.max_wait is None else min(self.linger, self.max_wait)
                self._cond.wait(timeout=max(bound / 4, 0.001))
        if call.error is not None:
            raise call.error
        return call.result

    def _flush_locked(self) -> None:
        """Run one batch (the oldest calls sharing the first call's key); called holding the lock."""
        key = self._pending[0].key
        calls = [c for c in self._pending if c.key == key][: self.size]
        for c in calls:
            self._pending.remove(c)
        self._running = True
        self._cond.release()
        try:
            try:
                results = self.run([c.payload for c in calls], key)
                for c, result in zip(calls, results, strict=True):
                    c.result = result
                self.batches.append(len(calls))
            except BaseException as exc:  # noqa: BLE001 - raised in the callers' threads
                if len(calls) == 1:
                    calls[0].error = exc
                    self.batches.append(1)
                else:  # one bad input must fail only its own call: each again, alone
                    for c in calls:
                        self._run_alone(c, key)
        finally:
            self._cond.acquire()
            self._running = False
            for c in calls:
                c.done.set()
            self._cond.notify_all()

    def _run_alone(self, call: _Call, key: tuple) -> None:
        try:
            (call.result,) = self.run([call.payload], key)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            call.error = exc
        self.batches.append(1)


class _Proxy:
    """What graphs and traces read off a backend, taken from the one behind the proxy."""

    def __init__(self, backend: Any, batcher: Batcher):
        self.inner = backend
        self.batcher = batcher
        self.name = backend.name
        self.model_id = backend.model_id
        self.device = backend.device
        self.dtype = backend.dtype
        self.options = backend.options

    def unavailable_reason(self) -> str | None:
        return self.inner.unavailable_reason()

    @property
    def model(self) -> Any:
        return self.inner.model

    def __getattr__(self, name: str) -> Any:  # anything else a graph may read
        return getattr(self.inner, name)


def _chat_proxy(contract: type[ChatModel]) -> type[ChatModel]:
    class Batched(_Proxy, contract):  # type: ignore[valid-type, misc]
        """A chat backend whose plain `chat` calls go through a `Batcher` to `batch`."""

        def __init__(self, backend: Any, batcher: Batcher, max_tokens: int | None = None):
            _Proxy.__init__(self, backend, batcher)
            self.max_tokens = max_tokens
            self.supports_tools = getattr(backend, "supports_tools", False)
            self.supports_schema = getattr(backend, "supports_schema", False)
            self.supports_streaming = getattr(backend, "supports_streaming", False)

        def chat(self, messages, *, tools=None, max_tokens: int = 256, temperature: float = 0.0, stop=None,
                 **kwargs: Any) -> ChatResult:
            if self.max_tokens is not None:
                max_tokens = min(max_tokens, self.max_tokens)
            if tools or kwargs or self.batcher is None:
                return self.inner.chat(messages, tools=tools, max_tokens=max_tokens, temperature=temperature,
                                       stop=stop, **kwargs)
            return ChatResult(text=self.batcher.submit(messages, (max_tokens, temperature, tuple(stop or ()))))

        def stream(self, messages, *, max_tokens: int = 256, temperature: float = 0.0, stop=None):
            """Streamed calls want their first tokens early: they go to the backend, unbatched."""
            if self.max_tokens is not None:
                max_tokens = min(max_tokens, self.max_tokens)
            if not self.supports_streaming:
                yield self.chat(messages, max_tokens=max_tokens, temperature=temperature, stop=stop).text
                return
            yield from self.inner.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)

        def batch(self, requests, **kwargs: Any):
            return self.inner.batch(requests, **kwargs)

    Batched.__name__ = Batched.__qualname__ = f"Batched{contract.__name__}"
    return Batched


class BatchedEmbedder(_Proxy, Embedder):
    """An embedder whose `embed` calls go through a `Batcher`: their texts are embedded together."""

    def embed(self, texts):
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            return self.inner.embed(texts)  # the backend's own errors and empty shape
        return self.batcher.submit(list(texts))


class BatchedASR(_Proxy, SpeechToText):
    """A speech backend whose `transcribe` calls go through a `Batcher` to its `batch`."""

    def transcribe(self, audio, *, language: str | None = None):
        return self.batcher.submit(audio, (language,))

    def batch(self, audios, *, language: str | None = None):
        return self.inner.batch(audios, language=language)


def _asr_batch(backend: Any) -> BatchFn:
    def run(audios: list[Any], key: tuple) -> list[Any]:
        (language,) = key
        return backend.batch(audios, language=language)
    return run


def _chat_batch(backend: Any) -> BatchFn:
    def run(requests: list[Any], key: tuple) -> list[str]:
        max_tokens, temperature, stop = key
        return backend.batch(requests, max_tokens=max_tokens, temperature=temperature, stop=list(stop) or None)
    return run


def _embed_batch(backend: Any) -> BatchFn:
    def run(lists: list[list[str]], key: tuple) -> list[Any]:
        vectors = backend.embed([text for texts in lists for text in texts])
        out, start = [], 0
        for texts in lists:
            out.append(vectors[start:start + len(texts)])
            start += len(texts)
        return out
    return run


BatchedChat = _chat_proxy(ChatModel)
BatchedVLM = _chat_proxy(VisionLanguageModel)
BatchedUnified = _chat_proxy(UnifiedModel)
_CHAT_PROXIES = {"llm": BatchedChat, "vlm": BatchedVLM, "unified": BatchedUnified}
#: The roles whose backends a batching toolbox wraps.
BATCHED_ROLES = (*_CHAT_PROXIES, "asr", "embed")


def batching_toolbox(toolbox: Toolbox, size: int, in_flight: Callable[[], int] | None = None,
                     max_tokens: int | None = None, roles: Sequence[str] = BATCHED_ROLES,
                     linger: float = LINGER, max_wait: float | None = None) -> tuple[Toolbox, dict[str, Batcher]]:
    """A toolbox with the same backends, those that can batch behind batchers (size > 1), and the
    chat ones' answers capped at `max_tokens` (a suite's). Returns it with the batchers by role.
    Unavailable roles are left as they are (a run that needs one says why)."""
    backends: dict[str, Backend] = {}
    batchers: dict[str, Batcher] = {}
    for role in roles:
        if toolbox.why_unavailable(role) is not None:
            continue
        backend = toolbox.get(role)
        if role in ("embed", "asr"):
            if role == "embed" and size > 1:
                batchers[role] = Batcher(_embed_batch(backend), size, in_flight, linger, max_wait)
                backends[role] = BatchedEmbedder(backend, batchers[role])
            elif role == "asr" and size > 1 and callable(getattr(backend, "batch", None)):
                batchers[role] = Batcher(_asr_batch(backend), size, in_flight, linger, max_wait)
                backends[role] = BatchedASR(backend, batchers[role])
            continue
        can_batch = size > 1 and callable(getattr(backend, "batch", None))
        if not can_batch and max_tokens is None:
            continue
        if can_batch:
            batchers[role] = Batcher(_chat_batch(backend), size, in_flight, linger, max_wait)
        backends[role] = _CHAT_PROXIES[role](backend, batchers.get(role), max_tokens)
    return (toolbox.with_backends(backends) if backends else toolbox), batchers
