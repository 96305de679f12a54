"""The backends a pipeline run may use, by role: resolved lazily, overridable, and honest about
what is available here."""

from __future__ import annotations

from typing import Mapping

from .backends.base import Backend
from .backends.registry import get_registry
from .backends.roles import ROLE_CONTRACTS
from .config import Settings, load_settings
from .errors import BackendNotFoundError, PluginError


class Toolbox:
    """`toolbox.get("asr")` → the backend for a role. Backends passed in `backends` win (tests,
    benchmarks, notebooks); the rest come from the registry and `[roles.*]` configuration, unless
    `exclusive`, in which case the given backends are the only ones."""

    def __init__(self, backends: Mapping[str, Backend] | None = None, settings: Settings | None = None,
                 exclusive: bool = False):
        self.settings = settings or load_settings()
        self._backends: dict[str, Backend] = dict(backends or {})
        for role, backend in self._backends.items():
            check_contract(role, backend)
        self._explicit = set(self._backends)
        self._exclusive = exclusive
        self._reasons: dict[str, str | None] = {}

    def get(self, role: str) -> Backend:
        if role not in self._backends:
            if self._exclusive:
                raise BackendNotFoundError(f"no {role} backend in this toolbox")
            self._backends[role] = get_registry().create(role, settings=self.settings)
        return self._backends[role]

    def why_unavailable(self, role: str) -> str | None:
        """None if `role` can be used; else why not. Roles the user configured are always tried."""
        if role in self._explicit:
            return None
        if role not in self._reasons:
            try:
                backend = self.get(role)
            except BackendNotFoundError as exc:
                self._reasons[role] = str(exc)
            else:
                configured = self.settings.role(role)
                user_chose = configured.backend is not None or configured.model is not None
                self._reasons[role] = None if user_chose else backend.unavailable_reason()
        return self._reasons[role]

    def has(self, role: str) -> bool:
        return self.why_unavailable(role) is None

    def with_backends(self, backends: Mapping[str, Backend]) -> Toolbox:
        """A toolbox like this one (same settings, same chosen backends, as exclusive) with
        `backends` in place of those roles' backends."""
        return Toolbox({**{r: self._backends[r] for r in self._explicit}, **backends}, settings=self.settings,
                       exclusive=self._exclusive)


def check_contract(role: str, backend: object) -> None:
    """A backend handed to a toolbox must follow its role's contract class (`ROLE_CONTRACTS`; any
    `Backend` for a role without one), as a registered backend class must: PluginError otherwise."""
    contract = ROLE_CONTRACTS.get(role, Backend)
    if not isinstance(backend, contract):
        raise PluginError(f"the backend given for role '{role}' ({type(backend).__qualname__}) does not follow "
                          f"the role's contract: subclass mmagent.backends.{contract.__name__}")
