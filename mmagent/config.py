"""Configuration: defaults < user config file < ./mmagent.toml < $MMAGENT_CONFIG < environment.

Every effective value remembers where it came from, so `mmagent config` can say so.

    home = "~/.cache/mmagent"          # MMAGENT_HOME: media store, converted models
    [limits]  max_bytes, max_pixels, max_audio_seconds, max_video_seconds, max_prompt_chars
    [fetch]   enabled, allow_private, allowed_hosts, connect_timeout, read_timeout, total_timeout,
              max_redirects
    [paths]   allowed_roots
    [roles.asr]  backend, model, device, dtype, options = {...}   (one table per role)
    [router]  policy, latency_budget, routes, competence, margin, unmeasured   (`--pipeline auto`)

Environment: MMAGENT_HOME, MMAGENT_<SECTION>_<KEY> (e.g. MMAGENT_LIMITS_MAX_BYTES,
MMAGENT_FETCH_ENABLED) and MMAGENT_<ROLE>_<BACKEND|MODEL|DEVICE|DTYPE> (e.g. MMAGENT_ASR_MODEL).
Lists in the environment are comma-separated.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

#: Roles mmagent's contracts define. Plugins may add more; any lowercase name is accepted.
KNOWN_ROLES = ("asr", "caption", "ocr", "detect", "vlm", "llm", "unified", "image_gen", "tts", "embed")
ROLE_FIELDS = ("backend", "model", "device", "dtype")
_ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Limits:
    """Caps applied to every input before it is decoded or stored."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_audio_seconds: float = 1800.0
    max_video_seconds: float = 600.0
    #: Characters of prompt text a request may carry (`run`, `stream`, `run_messages`, the CLI).
    max_prompt_chars: int = 32_000


@dataclass(frozen=True)
class FetchSettings:
    """http(s) fetching of media URLs. Off unless enabled."""

    enabled: bool = False
    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    max_redirects: int = 3


@dataclass(frozen=True)
class PathSettings:
    """Local files. Empty `allowed_roots` means any readable path (the CLI); the server sets roots."""

    allowed_roots: tuple[str, ...] = ()


#: The router's policies (`[router] policy`): see `mmagent.routing.policy`.
ROUTER_POLICIES = ("quality", "latency", "local-only", "budget")


@dataclass(frozen=True)
class RouterSettings:
    """How `--pipeline auto` chooses among the routes that can serve a request."""

    #: quality: the highest expected accuracy; latency: the fastest within `margin` of the best;
    #: local-only: quality among routes whose models run here; budget: quality within `latency_budget`.
    policy: str = "quality"
    #: Seconds a request may take (expected); 0 = no budget. Any policy skips routes over it.
    latency_budget: float = 0.0
    #: The routes to choose among (registered graphs with a brain); empty = all of them.
    routes: tuple[str, ...] = ()
    #: A competence file from `mmagent route fit`; empty = the one shipped for the offline defaults.
    competence: str = ""
    #: Expected-accuracy slack the latency policy trades for speed.
    margin: float = 0.05
    #: Expected accuracy assumed for a route no eval has measured (a configured API model).
    unmeasured: float = 0.5


@dataclass(frozen=True)
class RoleSettings:
    """Which backend serves a role and with what model, device and dtype."""

    backend: str | None = None
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    home: str
    limits: Limits = Limits()
    fetch: FetchSettings = FetchSettings()
    paths: PathSettings = PathSettings()
    roles: Mapping[str, RoleSettings] = field(default_factory=dict)
    router: RouterSettings = RouterSettings()
    #: dotted key -> where its value came from ("default", a file path, or "env MMAGENT_X").
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def role(self, name: str) -> RoleSettings:
        return self.roles.get(name, RoleSettings())

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser()

    def flat(self) -> dict[str, Any]:
        """Every effective value under its dotted key (`limits.max_bytes`, `roles.asr.model`)."""
        out: dict[str, Any] = {"home": self.home}
        for section in ("limits", "fetch", "paths", "router"):
            for f in dataclasses.fields(getattr(self, section)):
                out[f"{section}.{f.name}"] = getattr(getattr(self, section), f.name)
        for role in sorted(self.roles):
            for f in dataclasses.fields(RoleSettings):
                out[f"roles.{role}.{f.name}"] = getattr(self.roles[role], f.name)
        return out


_SECTIONS: dict[str, type] = {"limits": Limits, "fetch": FetchSettings, "paths": PathSettings,
                              "router": RouterSettings}
#: Settings where 0 is meaningful (none / off) rather than an error.
_ZERO_OK = ("fetch.max_redirects", "router.latency_budget", "router.margin", "router.unmeasured")


def default_home() -> str:
    import platformdirs

    return platformdirs.user_cache_dir("mmagent")


def user_config_file() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("mmagent")) / "mmagent.toml"


def config_files(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> list[Path]:
    """The files that are read, lowest precedence first (only those that exist)."""
    environ = os.environ if environ is None else environ
    files = [user_config_file(), (cwd or Path.cwd()) / "mmagent.toml"]
    found = [p for p in files if p.is_file()]
    explicit = environ.get("MMAGENT_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"MMAGENT_CONFIG points to {path}, which is not a file")
        found.append(path)
    return found


def load_settings(
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the configuration afresh (cheap: a few small files)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for path in config_files(cwd, environ):
        for key, value in _read_toml(path).items():
            values[key], sources[key] = value, str(path)
    for key, (value, var) in _read_environ(environ).items():
        values[key], sources[key] = value, f"env {var}"
    for key, value in (overrides or {}).items():
        values[key], sources[key] = value, "argument"
    return _build(values, sources)


# -- reading -------------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        # utf-8-sig: a byte-order mark (as Windows editors write it) is accepted and dropped.
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "home":
            flat["home"] = value
        elif key in _SECTIONS:
            table = _expect_table(value, key, path)
            known = [f.name for f in dataclasses.fields(_SECTIONS[key])]
            for sub, subvalue in table.items():
                if sub not in known:
                    raise ConfigError(f"{path}: unknown setting '{key}.{sub}' (known in [{key}]: {', '.join(known)})")
                flat[f"{key}.{sub}"] = subvalue
        elif key == "roles":
            for role, table in _expect_table(value, key, path).items():
                for sub, subvalue in _expect_table(table, f"roles.{role}", path).items():
                    flat[f"roles.{role}.{sub}"] = subvalue
        else:
            raise ConfigError(f"{path}: unknown setting '{key}' (known: home, limits, fetch, paths, roles, router)")
    return flat


def _expect_table(value: Any, key: str, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{key}' must be a table")
    return value


def _read_environ(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    if "MMAGENT_HOME" in environ:  # set but empty is an error (in _build), not the default home
        out["home"] = (environ["MMAGENT_HOME"], "MMAGENT_HOME")
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            var = f"MMAGENT_{section}_{f.name}".upper()
            if var in environ:
                out[f"{section}.{f.name}"] = (environ[var], var)
    for var, value in environ.items():
        if not var.startswith("MMAGENT_"):
            continue
        for fname in ROLE_FIELDS:
            suffix = f"_{fname.upper()}"
            if var.endswith(suffix):
                role = var[len("MMAGENT_") : -len(suffix)].lower()
                if role and role not in _SECTIONS and _ROLE_NAME.match(role):
                    out[f"roles.{role}.{fname}"] = (value, var)
    return out


# -- validation ----------------------------------------------------------------------------------


def _build(values: dict[str, Any], sources: dict[str, str]) -> Settings:
    all_sources = dict(sources)
    home = values.pop("home", None)
    if home is None:
        home = default_home()
    elif not isinstance(home, str) or not home.strip():
        raise ConfigError(f"home must be a non-empty path, got {home!r} ({sources.get('home')})")
    all_sources.setdefault("home", "default")

    sections: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        kwargs = {}
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            all_sources.setdefault(key, "default")
            if key in values:
                kwargs[f.name] = _coerce(values.pop(key), f.default, key, sources[key])
        sections[section] = cls(**kwargs)

    role_values: dict[str, dict[str, Any]] = {role: {} for role in KNOWN_ROLES}
    for key in [k for k in values if k.startswith("roles.")]:
        _, role, fname = key.split(".", 2)
        if not _ROLE_NAME.match(role):
            raise ConfigError(f"invalid role name '{role}' ({sources[key]})")
        if fname not in {f.name for f in dataclasses.fields(RoleSettings)}:
            raise ConfigError(
                f"unknown role setting '{key}' ({sources[key]}); known: {', '.join(ROLE_FIELDS)}, options"
            )
        role_values.setdefault(role, {})[fname] = _coerce_role(values.pop(key), fname, key, sources[key])
    roles = {}
    for role, kwargs in role_values.items():
        for f in dataclasses.fields(RoleSettings):
            all_sources.setdefault(f"roles.{role}.{f.name}", "default")
        roles[role] = RoleSettings(**kwargs)

    if values:  # files are checked as they are read: what is left came from `overrides`
        raise ConfigError("unknown settings: " + ", ".join(f"{k} ({sources.get(k, '?')})" for k in sorted(values)))
    return Settings(home=home, roles=roles, sources=all_sources, **sections)


def parse_bool(value: Any, where: str) -> bool:
    """A boolean from TOML or the environment (true/false, yes/no, on/off, 1/0); ConfigError else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    raise ConfigError(f"{where} must be true or false, got {value!r}")


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    where = f"{key} ({source})"
    if isinstance(default, bool):
        return parse_bool(value, where)
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, got {value!r}")
        if any(not v.strip() for v in value):
            # An empty root would silently mean the current directory (an empty host: anything).
            raise ConfigError(f"{where} must not contain an empty string, got {value!r}")
        return tuple(value)
    if isinstance(default, (int, float)):
        try:
            number = type(default)(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            number = None
        if number is None or (isinstance(value, float) and isinstance(default, int) and value != int(value)):
            raise ConfigError(f"{where} must be {'an integer' if isinstance(default, int) else 'a number'}, got {value!r}")
        if not math.isfinite(number):  # nan compares false with everything: it would switch a cap off
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        if number < 0 or (number == 0 and key not in _ZERO_OK):
            raise ConfigError(f"{where} must be positive, got {value!r}")
        return number
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        if key == "router.policy" and value not in ROUTER_POLICIES:
            raise ConfigError(f"{where} must be one of {', '.join(ROUTER_POLICIES)}, got {value!r}")
        return value
    raise AssertionError(f"no coercion for {key}")  # pragma: no cover


def _coerce_role(value: Any, fname: str, key: str, source: str) -> Any:
    if fname == "options":
        if not isinstance(value, dict):
            raise ConfigError(f"{key} ({source}) must be a table")
        return dict(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} ({source}) must be a non-empty string, got {value!r}")
    if fname == "device" and not _DEVICE.match(value):
        raise ConfigError(f"{key} ({source}): unknown device {value!r} (use auto, cpu, cuda, cuda:N, mps, xpu or xpu:N)")
    if fname == "dtype" and value.lower() not in config_dtypes():
        raise ConfigError(f"{key} ({source}): unknown dtype {value!r} (use {', '.join(config_dtypes())})")
    return value


#: The devices `mmagent.backends.devices.resolve_device` accepts (checked here, without torch).
_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


def config_dtypes() -> tuple[str, ...]:
    """The dtypes a role may name: auto, those `resolve_dtype` knows, and int8 (faster-whisper's)."""
    from .backends.devices import _DTYPES  # lazily: the backends package imports this module

    return ("auto", *_DTYPES, "int8")


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
