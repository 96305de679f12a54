"""Loads plugins: the built-in modules, then the `mmagent` entry points (filtered by
MMAGENT_LOAD_PLUGINS). A plugin that fails to import, to register or inside a hook is recorded
and skipped; it never breaks the others."""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "mmagent"
ALLOWLIST_VAR = "MMAGENT_LOAD_PLUGINS"


@dataclass
class PluginInfo:
    """What `mmagent plugins` shows for one plugin."""

    name: str
    source: str  # "builtin" or "entry point"
    package: str | None = None
    version: str | None = None
    module: str | None = None
    status: str = "ok"  # ok | error
    errors: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)  # "asr/whisper", "command palette", ...

    def fail(self, message: str) -> None:
        self.status = "error"
        self.errors.append(message)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Plugins:
    """A pluggy manager plus the record of what each plugin did."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        #: Called after a plugin is added at run time (the runtime forgets what was registered).
        self.on_change: Callable[[], None] | None = None

    def load(self, builtins: list[str], entry_points: bool = True) -> None:
        for module_name in builtins:
            info = PluginInfo(name=module_name.rsplit(".", 1)[-1], source="builtin", package="mmagent",
                              module=module_name)
            self._add(info, lambda m=module_name: importlib.import_module(m))
        if entry_points:
            self._load_entry_points()

    def add(self, plugin: Any, name: str, source: str = "runtime") -> PluginInfo:
        """Register an object or module as a plugin (tests, notebooks)."""
        info = PluginInfo(name=name, source=source, module=getattr(plugin, "__name__", None))
        self._add(info, lambda: plugin)
        if self.on_change is not None:
            self.on_change()
        return info

    def call(self, hook: str, kwargs_for: Callable[[PluginInfo], dict[str, Any]]) -> None:
        """Call every implementation of `hook` in registration order, isolating failures.

        `kwargs_for(info)` builds the hook's arguments for each plugin, so a `register` callback
        can credit (or blame) the plugin that called it.
        """
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            info = self.infos.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name, source="runtime"))
            try:
                impl.function(**{k: v for k, v in kwargs_for(info).items() if k in impl.argnames})
            except Exception as exc:  # a plugin's bug must not take the others down
                info.fail(f"{hook} raised {type(exc).__name__}: {exc}")

    def collect(self, hook: str, add: Callable[[Any, str], None], label: Callable[[Any], str]) -> None:
        """Call every plugin's `hook(register)`. Each `register(item)` runs `add(item, plugin_name)`
        and records `label(item)` in what the plugin provides; an MMAgentError that `add` raises
        (a duplicate name, a broken contract) is recorded as the plugin's failure instead."""
        from .errors import MMAgentError

        def per_plugin(info: PluginInfo) -> dict[str, Any]:
            def register(item: Any) -> None:
                try:
                    add(item, info.name)
                    info.provides.append(label(item))
                except MMAgentError as exc:
                    info.fail(str(exc))
            return {"register": register}

        self.call(hook, per_plugin)

    def _add(self, info: PluginInfo, loader: Callable[[], Any]) -> None:
        self.infos[info.name] = info
        try:
            plugin = loader()
        except Exception as exc:
            info.fail(f"failed to import: {type(exc).__name__}: {exc}")
            return
        try:
            self.pm.register(plugin, name=info.name)
        except Exception as exc:  # pluggy.PluginValidationError, duplicate name ...
            info.fail(f"failed to register: {' '.join(str(exc).split())}")
            return
        # pluggy accepts implementations of hooks nobody declared (a typo such as
        # `register_backend` would silently do nothing): reject them unless marked optionalhook.
        unknown = sorted(
            caller.name for caller in self.pm.get_hookcallers(plugin) or []
            if caller.spec is None
            and any(not impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin)
        )
        if unknown:
            self.pm.unregister(plugin)
            known = ", ".join(sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "mmagent_spec")))
            info.fail(f"failed to register: unknown hook(s) {', '.join(unknown)} (known: {known})")

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        allow = os.environ.get(ALLOWLIST_VAR)
        allowed = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
        allowed_dists = {_canonical(n) for n in allowed or ()}  # pip's rule: My_Plugin == my-plugin
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            package = dist.metadata["Name"] if dist is not None else None
            if allowed is not None and ep.name not in allowed and _canonical(package) not in allowed_dists:
                continue
            if ep.name in self.infos:
                self.infos[ep.name].fail(f"another plugin named '{ep.name}' is installed ({package})")
                continue
            info = PluginInfo(name=ep.name, source="entry point", package=package,
                              version=dist.version if dist is not None else None, module=ep.value)
            self._add(info, ep.load)


def _canonical(dist_name: str | None) -> str | None:
    """A distribution name normalised as in PEP 503."""
    return None if dist_name is None else re.sub(r"[-_.]+", "-", dist_name).lower()


def get_plugins() -> Plugins:
    """The process-wide plugin set (the runtime's), loaded on first use."""
    from .runtime import get_runtime

    return get_runtime().plugins


def reset_plugins() -> None:
    """Forget loaded plugins and everything they registered (tests; after installing a plugin at
    run time). Loaded models are kept."""
    from .runtime import reset_runtime

    reset_runtime()
