"""The base every backend derives from: identity, what it accepts and produces, lazy model loading."""

from __future__ import annotations

import importlib.util
import os
from typing import Any, ClassVar

from ..errors import BackendError
from .model_cache import cached_model


class Backend:
    """A model behind a role. Subclasses set the class attributes and implement `load_model()`.

    Construction is cheap; the model is loaded on first use and shared (one copy per process for
    the same class, model, device and dtype).
    """

    role: ClassVar[str]
    name: ClassVar[str]
    description: ClassVar[str] = ""
    accepts: ClassVar[tuple[str, ...]] = ()
    produces: ClassVar[tuple[str, ...]] = ()
    default_model: ClassVar[str | None] = None
    #: Import names this backend needs; `mmagent plugins` reports missing ones without importing them.
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: str | None = None, device: str = "auto", dtype: str = "auto", **options: Any):
        self.model_id = model or self.default_model
        self.device = device
        self.dtype = dtype
        self.options = options

    # -- model lifecycle --------------------------------------------------------------------------

    def load_model(self) -> Any:
        """Load and return the heavy model object (import torch etc. here, not at module level)."""
        return None

    @property
    def model(self) -> Any:
        """The loaded model, loaded on first access."""
        return cached_model(self.cache_key, self._load)

    @property
    def cache_key(self) -> tuple:
        return (type(self).__module__, type(self).__qualname__, self.model_id, self.device, self.dtype)

    def _load(self) -> Any:
        try:
            return self.load_model()
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(
                f"{self.role}/{self.name} could not load model {self.model_id!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def unavailable_reason(self) -> str | None:
        """None when this backend can run here without surprises, else one line saying why not.

        Checked without loading anything: required modules installed, and the model local (a zoo
        model whose source is installed, an existing path, or a Hugging Face id already in the
        local cache). Pipelines skip tools that are unavailable unless the user configured them.
        """
        missing = [m for m in self.requires if importlib.util.find_spec(m.split(".")[0]) is None]
        if missing:
            return f"{self.role}/{self.name} needs {', '.join(missing)} (not installed)"
        return model_unavailable_reason(self.model_id)

    def is_local(self) -> bool:
        """Whether requests stay on this machine (or the user's own network): False for a backend
        that sends data to a remote service. The router's `local-only` policy reads it."""
        return True

    def takes(self, kind: str) -> bool:
        """Whether this backend reads `kind` ("text", "image", "audio", "video") natively. The
        class's `accepts`, unless the instance was configured with narrower ones (an API model that
        takes images but not audio)."""
        narrowed = getattr(self, "accepts_here", None)
        return kind in (narrowed if narrowed is not None else self.accepts)

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.role, "name": self.name, "model": self.model_id, "device": self.device,
            "dtype": self.dtype, "accepts": list(self.accepts), "produces": list(self.produces),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.role}/{self.name} model={self.model_id!r} device={self.device}>"


def model_unavailable_reason(model_id: str | None) -> str | None:
    """Why `model_id` cannot be used offline here, or None if it can (see `unavailable_reason`)."""
    if model_id is None:
        return None
    from ..zoo import get_zoo

    zoo = get_zoo()
    if model_id in zoo.specs:
        if zoo.status(model_id) == "unavailable":
            spec = zoo.spec(model_id)
            return f"zoo model '{model_id}' needs {spec.source} ({spec.install_hint or 'not installed'})"
        return None
    if os.path.exists(os.path.expanduser(model_id)):
        return None
    if model_id.count("/") == 1:
        from ..hf_hub import cached_snapshot

        if cached_snapshot(model_id) is not None:
            return None
    return f"model '{model_id}' is neither a zoo model, a local path nor in the Hugging Face cache"


