"""The backend registry: filled by the `register_backends` hook, queried by role and name."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from ..config import Settings, load_settings
from ..errors import BackendNotFoundError, PluginError
from .base import Backend
from .roles import ROLE_CONTRACTS


@dataclass(frozen=True)
class BackendEntry:
    role: str
    name: str
    cls: type[Backend]
    plugin: str

    def missing_requirements(self) -> list[str]:
        """Import names the backend needs that are not installed (checked without importing)."""
        return [mod for mod in self.cls.requires if importlib.util.find_spec(mod.split(".")[0]) is None]


class BackendRegistry:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], BackendEntry] = {}

    def register(self, cls: type, plugin: str = "runtime") -> None:
        """Add a backend class; raises PluginError when it breaks the contract."""
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise PluginError(f"{cls!r} is not a subclass of mmagent.Backend")
        role, name = getattr(cls, "role", None), getattr(cls, "name", None)
        if not (isinstance(role, str) and role and isinstance(name, str) and name):
            raise PluginError(f"{cls.__qualname__} must set string class attributes 'role' and 'name'")
        contract = ROLE_CONTRACTS.get(role)
        if contract is not None and not issubclass(cls, contract):
            raise PluginError(f"{cls.__qualname__} has role '{role}' but does not subclass {contract.__name__}")
        if (role, name) in self.entries:
            other = self.entries[(role, name)].plugin
            raise PluginError(f"backend {role}/{name} is already registered by plugin '{other}'")
        self.entries[(role, name)] = BackendEntry(role, name, cls, plugin)

    @classmethod
    def from_plugins(cls, plugins) -> "BackendRegistry":
        """A registry filled by every plugin's `register_backends` hook (failures recorded per plugin)."""
        registry = cls()
        plugins.collect("register_backends", lambda c, owner: registry.register(c, plugin=owner),
                        lambda c: f"{c.role}/{c.name}")
        return registry

    def list(self, role: str | None = None) -> list[BackendEntry]:
        return [e for e in self.entries.values() if role is None or e.role == role]

    def get(self, role: str, name: str | None = None, settings: Settings | None = None) -> BackendEntry:
        """The entry for (role, name); without a name, the configured one, else the first registered."""
        if name is None:
            name = (settings or load_settings()).role(role).backend
        if name is None:
            candidates = self.list(role)
            if not candidates:
                raise BackendNotFoundError(f"no backend is registered for role '{role}' (see `mmagent plugins`)")
            return candidates[0]
        try:
            return self.entries[(role, name)]
        except KeyError:
            known = ", ".join(e.name for e in self.list(role)) or "none"
            raise BackendNotFoundError(f"no backend '{name}' for role '{role}' (registered: {known})") from None

    def create(self, role: str, name: str | None = None, *, settings: Settings | None = None,
               **overrides: Any) -> Backend:
        """An instance configured from settings (`[roles.<role>]`), then `overrides`."""
        settings = settings or load_settings()
        entry = self.get(role, name, settings)
        configured = settings.role(role)
        same_backend = configured.backend in (None, entry.name)
        kwargs: dict[str, Any] = {}
        if same_backend:
            kwargs = {"model": configured.model, "device": configured.device, "dtype": configured.dtype,
                      **configured.options}
        kwargs.update(overrides)
        return entry.cls(**kwargs)


def get_registry() -> BackendRegistry:
    """The process-wide registry (the runtime's), filled from the plugins on first use."""
    from ..runtime import get_runtime

    return get_runtime().backends


def get_backend(role: str, name: str | None = None, **overrides: Any) -> Backend:
    """A backend for `role` (by `name`, or the configured default), configured and ready to load."""
    return get_registry().create(role, name, **overrides)


def list_backends(role: str | None = None) -> list[BackendEntry]:
    return get_registry().list(role)
