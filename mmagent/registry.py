"""Name -> object registries filled from a plugin hook (graphs, evaluation suites and metrics)."""

from __future__ import annotations

from typing import Any, Iterator

from .errors import InputError, PluginError


class NamedRegistry:
    """Name -> object, filled from a plugin hook; invalid names and duplicates are refused (the
    first registration wins: built-ins load first)."""

    #: what one item is called in messages ("suite"), and in "unknown ..." errors (default: kind)
    kind = "thing"
    unknown: str | None = None
    #: the class registered items must be, and the hook that registers them
    cls: type = object
    cls_path = "object"  # how the class is named in errors (its public import path)
    hook = ""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}
        self.owners: dict[str, str] = {}

    @classmethod
    def from_plugins(cls, plugins) -> NamedRegistry:
        registry = cls()
        plugins.collect(cls.hook, registry.register, lambda obj: f"{cls.kind} {obj.name}")
        return registry

    def register(self, obj: Any, owner: str = "runtime") -> None:
        if not isinstance(obj, self.cls):
            raise PluginError(f"{obj!r} is not an {self.cls_path}")
        if not obj.name or not all(c.isalnum() or c in "-_." for c in obj.name):
            raise PluginError(f"{self.kind} name '{obj.name}' must be letters, digits, '-', '_' or '.'")
        if obj.name in self.items:
            raise PluginError(f"{self.kind} '{obj.name}' is already registered by '{self.owners[obj.name]}'")
        self.items[obj.name] = obj
        self.owners[obj.name] = owner

    def get(self, name: str) -> Any:
        try:
            return self.items[name]
        except KeyError:
            raise InputError(f"unknown {self.unknown or self.kind} '{name}' "
                             f"(available: {', '.join(self.items) or 'none'})") from None

    def list(self) -> list[Any]:
        return list(self.items.values())

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items.values())
