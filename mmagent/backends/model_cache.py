"""One model per (loader, model, device, dtype) per process, shared by every backend instance.

The cache itself is the runtime's (`mmagent.runtime.Runtime.models`); these functions use it.
"""

from __future__ import annotations

from typing import Callable, Hashable, TypeVar

T = TypeVar("T")


def _cache():
    from ..runtime import get_runtime

    return get_runtime().models


def cached_model(key: Hashable, load: Callable[[], T]) -> T:
    """Return the model stored under `key`, calling `load()` once (thread-safe) if absent."""
    return _cache().get(key, load)


def loaded_models() -> list[Hashable]:
    return _cache().keys()


def unload(key: Hashable | None = None) -> None:
    """Drop one cached model, or all of them."""
    _cache().unload(key)
