"""The process's mmagent state in one object: plugins, and what they registered (backends, tools,
graphs, zoo models), the media stores and the loaded-model cache.

Before, each of these was a module global that another module had to remember to reset; now
`get_runtime()` returns the one `Runtime`, and `reset_runtime()` replaces it whole (tests; after a
plugin is installed at run time). Everything is built lazily, on first use, so `import mmagent`
stays cheap. Loaded models survive a reset by default: they do not depend on the plugin set.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Hashable, TypeVar

if TYPE_CHECKING:
    from .backends.registry import BackendRegistry
    from .content.store import MediaStore
    from .eval.core import MetricRegistry, SuiteRegistry
    from .graphs_registry import GraphRegistry
    from .plugin_manager import Plugins
    from .tools import ToolRegistry
    from .zoo import Zoo

T = TypeVar("T")

#: Modules registered as built-in plugins, in order (imported by name: core never imports them
#: statically). `mmagent.graphs` registers the prebuilt graphs.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "mmagent.plugins.whisper",
    "mmagent.plugins.ocr",
    "mmagent.plugins.minilm",
    # Before `vision`: the scene captioner, the only one with offline weights, is the caption default.
    "mmagent.plugins.scene_vlm",
    "mmagent.plugins.vision",
    "mmagent.plugins.transformers_llm",
    "mmagent.plugins.vlm",
    "mmagent.plugins.piper_tts",
    "mmagent.plugins.video",
    "mmagent.plugins.diffusers_t2i",
    "mmagent.plugins.openai_client",
    "mmagent.graphs",
    "mmagent.eval",
)


class ModelCache:
    """One model per key (loader, model, device, dtype), loaded once even under threads."""

    def __init__(self) -> None:
        self._models: dict[Hashable, Any] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        try:
            return self._models[key]
        except KeyError:
            pass
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._models:
                self._models[key] = load()
            return self._models[key]

    def keys(self) -> list[Hashable]:
        return list(self._models)

    def unload(self, key: Hashable | None = None) -> None:
        if key is None:
            self._models.clear()
        else:
            self._models.pop(key, None)


class Runtime:
    """Everything mmagent loads once per process. Attributes are built on first access."""

    def __init__(self, builtins: tuple[str, ...] = BUILTIN_PLUGINS, entry_points: bool = True,
                 models: ModelCache | None = None):
        self.builtins = builtins
        self.entry_points = entry_points
        self.models = models or ModelCache()
        self._lock = threading.RLock()
        self._plugins: Plugins | None = None
        self._registries: dict[str, Any] = {}  # "backends", "tools", "graphs", "suites", "metrics"
        self._zoos: dict[str, Zoo] = {}
        self._stores: dict[str, MediaStore] = {}

    @property
    def plugins(self) -> Plugins:
        with self._lock:
            if self._plugins is None:
                from .plugin_manager import Plugins

                plugins = Plugins()
                plugins.load(list(self.builtins), entry_points=self.entry_points)
                plugins.on_change = self.refresh
                self._plugins = plugins
            return self._plugins

    @property
    def backends(self) -> BackendRegistry:
        return self._registry("backends", "mmagent.backends.registry:BackendRegistry")

    @property
    def tools(self) -> ToolRegistry:
        return self._registry("tools", "mmagent.tools:ToolRegistry")

    @property
    def graphs(self) -> GraphRegistry:
        return self._registry("graphs", "mmagent.graphs_registry:GraphRegistry")

    @property
    def suites(self) -> SuiteRegistry:
        return self._registry("suites", "mmagent.eval.core:SuiteRegistry")

    @property
    def metrics(self) -> MetricRegistry:
        return self._registry("metrics", "mmagent.eval.core:MetricRegistry")

    def _registry(self, name: str, cls_path: str) -> Any:
        """The registry `name`, filled from the plugins (`cls.from_plugins`) on first access."""
        with self._lock:
            if self._registries.get(name) is None:
                from importlib import import_module

                module, _, cls = cls_path.partition(":")
                self._registries[name] = getattr(import_module(module), cls).from_plugins(self.plugins)
            return self._registries[name]

    def refresh(self) -> None:
        """Forget what the plugins registered (not the plugins): the next access asks them again,
        e.g. after `plugins.add(module, name)`."""
        with self._lock:
            self._registries.clear()
            self._zoos.clear()

    def zoo(self, root: str | None = None) -> Zoo:
        """The model zoo under `root` (default: `$MMAGENT_HOME/models`)."""
        from .config import load_settings

        root = root or str(load_settings().home_path / "models")
        with self._lock:
            if root not in self._zoos:
                from .zoo import Zoo

                self._zoos[root] = Zoo.from_plugins(root, self.plugins)
            return self._zoos[root]

    def store(self, root: str | None = None) -> MediaStore:
        """The media store under `root` (default: `$MMAGENT_HOME/media`)."""
        from .config import load_settings

        root = root or str(load_settings().home_path / "media")
        with self._lock:
            if root not in self._stores:
                from .content.store import MediaStore

                self._stores[root] = MediaStore(root)
            return self._stores[root]


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, created on first use."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime()
    return _runtime


def reset_runtime(keep_models: bool = True) -> Runtime:
    """Start over with a fresh runtime (plugins re-read); loaded models are kept unless asked."""
    global _runtime
    with _runtime_lock:
        models = _runtime.models if (_runtime is not None and keep_models) else None
        _runtime = Runtime(models=models)
    return _runtime
