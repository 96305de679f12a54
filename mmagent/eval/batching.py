"""Batching per backend, under unchanged graphs: concurrent `chat` calls become one `batch` call.

The evaluation runs B items at once, each through the pipeline's own graph in its own thread, as a
user's request would run. The toolbox those graphs get wraps each chat backend that has a
`batch(requests, max_tokens=, temperature=, stop=) -> list[str]` method (the VLM and the local LLM)
in a `Batched` proxy: a call waits until B calls are waiting (or as many as there are items still
in flight, or until no new call has come for `linger` seconds), then one `batch` call answers them
all. One batch runs on a model at a time; calls arriving meanwhile form the next. Calls with tools
or a schema, and backends without `batch`, go straight through.

The graphs see the same contract class (the proxy subclasses the backend's role contract), so
nothing in a graph knows it is being batched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend
from ..backends.results import ChatResult, Message
from ..backends.roles import ChatModel, VisionLanguageModel
from ..toolbox import Toolbox


@dataclass
class _Call:
    messages: Sequence[Message]
    key: tuple
    done: threading.Event = field(default_factory=threading.Event)
    text: str | None = None
    error: BaseException | None = None


class Batcher:
    """Collects concurrent requests for one backend and answers them with `backend.batch`."""

    def __init__(self, backend: Any, size: int, in_flight: Callable[[], int] | None = None,
                 linger: float = 0.05, max_tokens: int | None = None):
        self.backend = backend
        self.size = max(1, size)
        self.in_flight = in_flight or (lambda: self.size)
        self.linger = linger
        self.max_tokens = max_tokens
        self._pending: list[_Call] = []
        self._cond = threading.Condition()
        self._running = False
        self._last_arrival = 0.0
        #: (batch sizes) for benchmarks and tests
        self.batches: list[int] = []

    def _target(self) -> int:
        return max(1, min(self.size, self.in_flight()))

    def submit(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
               stop: Sequence[str] | None) -> str:
        if self.max_tokens is not None:
            max_tokens = min(max_tokens, self.max_tokens)
        call = _Call(messages, (max_tokens, temperature, tuple(stop or ())))
        with self._cond:
            self._pending.append(call)
            self._last_arrival = time.monotonic()
            self._cond.notify_all()
            while not call.done.is_set():
                ready = len(self._pending) >= self._target() or \
                    time.monotonic() - self._last_arrival >= self.linger
                if not self._running and self._pending and ready:
                    self._flush_locked()
                    continue
                self._cond.wait(timeout=self.linger / 2)
        if call.error is not None:
            raise call.error
        return call.text or ""

    def _flush_locked(self) -> None:
        """Run one batch (the oldest calls sharing the first call's options); called holding the lock."""
        key = self._pending[0].key
        calls = [c for c in self._pending if c.key == key][: self.size]
        for c in calls:
            self._pending.remove(c)
        self._running = True
        self._cond.release()
        try:
            max_tokens, temperature, stop = key
            try:
                texts = self.backend.batch([c.messages for c in calls], max_tokens=max_tokens,
                                           temperature=temperature, stop=list(stop) or None)
                for c, text in zip(calls, texts, strict=True):
                    c.text = text
            except BaseException as exc:  # every caller in the batch gets the error
                for c in calls:
                    c.error = exc
            self.batches.append(len(calls))
        finally:
            self._cond.acquire()
            self._running = False
            for c in calls:
                c.done.set()
            self._cond.notify_all()


def _batched_class(contract: type[ChatModel]) -> type[ChatModel]:
    class Batched(contract):  # type: ignore[valid-type, misc]
        """A chat backend whose plain `chat` calls go through a `Batcher`."""

        def __init__(self, backend: Any, batcher: Batcher):
            self.inner = backend
            self.batcher = batcher
            # what graphs and traces read off a backend
            self.name = backend.name
            self.model_id = backend.model_id
            self.device = backend.device
            self.dtype = backend.dtype
            self.options = backend.options
            self.supports_tools = getattr(backend, "supports_tools", False)
            self.supports_schema = getattr(backend, "supports_schema", False)
            self.supports_streaming = getattr(backend, "supports_streaming", False)

        def chat(self, messages, *, tools=None, max_tokens: int = 256, temperature: float = 0.0, stop=None,
                 **kwargs: Any) -> ChatResult:
            if tools or kwargs:
                return self.inner.chat(messages, tools=tools, max_tokens=max_tokens, temperature=temperature,
                                       stop=stop, **kwargs)
            text = self.batcher.submit(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)
            return ChatResult(text=text)

        def stream(self, messages, *, max_tokens: int = 256, temperature: float = 0.0, stop=None):
            yield self.chat(messages, max_tokens=max_tokens, temperature=temperature, stop=stop).text

        def batch(self, requests, **kwargs: Any):
            return self.inner.batch(requests, **kwargs)

        def unavailable_reason(self) -> str | None:
            return self.inner.unavailable_reason()

        @property
        def model(self) -> Any:
            return self.inner.model

        def __getattr__(self, name: str) -> Any:  # anything else the graph may read
            return getattr(self.inner, name)

    Batched.__name__ = Batched.__qualname__ = f"Batched{contract.__name__}"
    return Batched


BatchedChat = _batched_class(ChatModel)
BatchedVLM = _batched_class(VisionLanguageModel)

#: The roles whose backends are batched, and the contract their proxy follows.
BATCHED_ROLES = {"llm": BatchedChat, "vlm": BatchedVLM}


def batching_toolbox(toolbox: Toolbox, size: int, in_flight: Callable[[], int] | None = None,
                     max_tokens: int | None = None, roles: Sequence[str] = tuple(BATCHED_ROLES)) -> tuple[Toolbox, dict[str, Batcher]]:
    """A toolbox with the same backends, the chat ones (that can batch) behind batchers. With
    size 1 nothing is wrapped unless `max_tokens` caps answers."""
    backends: dict[str, Backend] = {}
    batchers: dict[str, Batcher] = {}
    for role in roles:
        if toolbox.why_unavailable(role) is not None:
            continue
        backend = toolbox.get(role)
        if not callable(getattr(backend, "batch", None)) or (size <= 1 and max_tokens is None):
            continue
        batchers[role] = Batcher(backend, size, in_flight, max_tokens=max_tokens)
        backends[role] = BATCHED_ROLES[role](backend, batchers[role])
    return (toolbox.with_backends(backends) if backends else toolbox), batchers
