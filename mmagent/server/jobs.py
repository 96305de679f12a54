"""One request's work in a thread of its own, relayed to the event loop, with a deadline and a cancel.

A pipeline runs in one thread for the whole request (LangGraph's context stays in it); its events
reach the loop through a queue. Past the request's deadline, or when the client goes away, the job
is cancelled: the run stops at the next event (the next graph step or token) and its generator is
closed. A model call already running finishes first (a thread cannot be killed), and the request's
concurrency slot is held until the thread is done, so the limit stays true.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

#: How often a waiting request checks whether its client is still there.
POLL_SECONDS = 0.25


class RequestTimeout(Exception):
    """The request ran past the server's per-request timeout."""

    def __init__(self, seconds: float):
        super().__init__(f"the request took longer than the server's limit of {seconds:g} s (--timeout)")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


class Job:
    """Runs `produce()` (an iterator of (kind, value) events) in a thread; `on_done` runs in that
    thread when it ends, however it ends."""

    def __init__(self, produce: Callable[[], Iterator[tuple[str, Any]]], name: str, on_done: Callable[[], None],
                 timeout: float):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.timeout = timeout
        self.deadline = self.loop.time() + timeout
        self._produce, self._on_done = produce, on_done
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _post(self, item: tuple[str, Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (the server is shutting down)
            pass

    def _work(self) -> None:
        events = None
        try:
            events = self._produce()
            for event in events:
                if self.cancelled.is_set():
                    break
                self._post(event)
        except BaseException as exc:  # noqa: BLE001 - relayed to the request
            self._post(("error", exc))
        finally:
            if events is not None and hasattr(events, "close"):
                try:
                    events.close()  # a cancelled run's graph stops here
                except Exception:  # noqa: BLE001 - closing a failed run
                    pass
            self._on_done()
            self._post(("end", None))

    def cancel(self) -> None:
        self.cancelled.set()

    async def next(self, request: Any | None = None) -> tuple[str, Any]:
        """The next event; RequestTimeout past the deadline, ClientGone when `request`'s client
        has left (the job is cancelled either way)."""
        while True:
            remaining = self.deadline - self.loop.time()
            if remaining <= 0:
                self.cancel()
                raise RequestTimeout(self.timeout)
            try:
                return await asyncio.wait_for(self.queue.get(), min(remaining, POLL_SECONDS))
            except (asyncio.TimeoutError, TimeoutError):
                if request is not None and await request.is_disconnected():
                    self.cancel()
                    raise ClientGone() from None

    async def outcome(self, request: Any | None = None) -> Any:
        """The value of the run's "result" event; the run's error raised as is."""
        result = None
        while True:
            kind, value = await self.next(request)
            if kind == "error":
                raise value
            if kind == "result":
                result = value
            elif kind == "end":
                return result
