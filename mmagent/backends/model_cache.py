"""One model per (loader, model, device, dtype) per process, shared by every backend instance."""

from __future__ import annotations

import threading
from typing import Any, Callable, Hashable, TypeVar

T = TypeVar("T")

_models: dict[Hashable, Any] = {}
_locks: dict[Hashable, threading.Lock] = {}
_guard = threading.Lock()


def cached_model(key: Hashable, load: Callable[[], T]) -> T:
    """Return the model stored under `key`, calling `load()` once (thread-safe) if absent."""
    try:
        return _models[key]
    except KeyError:
        pass
    with _guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        if key not in _models:
            _models[key] = load()
        return _models[key]


def loaded_models() -> list[Hashable]:
    return list(_models)


def unload(key: Hashable | None = None) -> None:
    """Drop one cached model, or all of them."""
    if key is None:
        _models.clear()
    else:
        _models.pop(key, None)
