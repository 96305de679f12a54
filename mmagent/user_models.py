"""Models the user adds to the zoo by name: `mmagent models add NAME PATH` (`Zoo.add_user_model`).

A user model is a model folder saved by transformers (a `config.json`; a diffusers pipeline's
`model_index.json`), typically what `mmagent train adapter` writes. `add` checks it, infers its
role from the config (or takes `--role`), **copies** it into `<zoo root>/NAME/` (a temporary
`.NAME.partial-*` sibling renamed into place once complete, with a `MANIFEST.json` like every
built model) and records it in `<zoo root>/.user-models.json` (written to a temporary file and
renamed over the old one, under an flock). From then on the zoo lists it like any plugin's model,
and every backend that resolves zoo names (`-m vlm=NAME`, `[roles.vlm] model = "NAME"`) finds it.

Why a copy: the model keeps working when the training folder is deleted, moved or overwritten by
the next run, and the manifest catches a damaged file; a trained model is tens of MB. The copy is
never rebuilt: when it is damaged or gone, `ensure` says to add it again (`--force`).

Links: a symlink inside PATH is copied as the file it points to only while that file lies inside
PATH (checked on the path and again on the opened file); a link out of PATH, a link to a folder,
or anything but regular files and folders is refused, and nothing is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, InputError, MMAgentError

if TYPE_CHECKING:
    from .zoo import ModelSpec, Zoo

log = logging.getLogger(__name__)

#: The registry of user models, in the zoo root (hidden: no model name starts with a dot).
REGISTRY = ".user-models.json"
LOCK = ".user-models.lock"
#: How a user model's `source` begins (also written to its MANIFEST.json).
SOURCE_PREFIX = "added by the user from "
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: config.json is read whole: a bigger one is not a model's config.
MAX_CONFIG_BYTES = 4 << 20

#: model_type → role, where the type alone decides (checked before the generic rules below).
ROLE_BY_TYPE: dict[str, str] = {
    **dict.fromkeys(("llava", "mmagent_llava", "llava_next", "llava_onevision", "llava_next_video", "vipllava",
                     "blip-2", "instructblip", "idefics", "idefics2", "idefics3", "smolvlm", "qwen2_vl",
                     "qwen2_5_vl", "qwen3_vl", "mllama", "paligemma", "gemma3", "aya_vision", "internvl",
                     "chameleon", "fuyu", "kosmos-2", "pixtral", "mistral3", "florence2", "molmo"), "vlm"),
    **dict.fromkeys(("whisper", "wav2vec2", "hubert", "speech_to_text", "moonshine"), "asr"),
    **dict.fromkeys(("blip", "vision-encoder-decoder", "git"), "caption"),
    **dict.fromkeys(("detr", "conditional_detr", "deformable_detr", "yolos", "rt_detr", "owlvit", "owlv2"),
                    "detect"),
}


# -- checks ---------------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """`name` when it can name a zoo model (a folder name, never a path or a Hugging Face id)."""
    if not NAME_RE.fullmatch(name or ""):
        raise InputError(f"bad model name {name!r}: use letters, digits, '.', '_' and '-' (at most 100, "
                         "starting with a letter or digit)")
    return name


def read_config(folder: Path, shown: str) -> tuple[str, dict]:
    """(file name, parsed content) of the folder's `config.json` (else `model_index.json`)."""
    for filename in ("config.json", "model_index.json"):
        path = folder / filename
        if not path.exists() and not path.is_symlink():
            continue
        real, root = os.path.realpath(path), os.path.realpath(folder)
        if not _inside(real, root):
            raise InputError(f"{shown}: {filename} links outside the folder (to {real})")
        if not path.is_file():
            raise InputError(f"{shown}: {filename} is not a regular file")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InputError(f"{shown}: {filename} is over {MAX_CONFIG_BYTES >> 20} MB: not a model configuration")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"{shown}: {filename} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(f"{shown}: {filename} is not a JSON object")
        return filename, data
    raise InputError(f"{shown} holds no config.json: not a model folder saved by transformers "
                     "(save_pretrained, or what `mmagent train adapter` writes under model/)")


def infer_role(folder: Path, filename: str, config: dict) -> str | None:
    """The role a model folder plays, from its configuration; None when it cannot be told."""
    if filename == "model_index.json":  # a diffusers pipeline
        return "image_gen"
    if (folder / "modules.json").is_file() or (folder / "config_sentence_transformers.json").is_file():
        return "embed"
    kind = str(config.get("model_type") or "")
    architectures = [str(a) for a in config.get("architectures") or [] if isinstance(a, str)]
    if kind in ROLE_BY_TYPE:
        return ROLE_BY_TYPE[kind]
    if "vision_config" in config and "text_config" in config:
        return "vlm"
    if any(a.endswith(("ForImageTextToText", "ForVision2Seq")) for a in architectures):
        return "vlm"
    if any(a.endswith(("ForSpeechSeq2Seq", "ForCTC")) for a in architectures):
        return "asr"
    if any(a.endswith("ForObjectDetection") for a in architectures):
        return "detect"
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "llm"
    return None


def check_role(role: str) -> str:
    from .config import KNOWN_ROLES

    if role not in KNOWN_ROLES:
        raise InputError(f"unknown role {role!r} (roles: {', '.join(KNOWN_ROLES)})")
    return role


# -- the registry ---------------------------------------------------------------------------------


def registry_path(zoo: Zoo) -> Path:
    return zoo.root / REGISTRY


def read_registry(zoo: Zoo, strict: bool = True) -> dict[str, dict[str, Any]]:
    """name → entry (`path`, `role`, `description`, `added`). A damaged registry is a ConfigError
    when `strict` (add, remove), else logged and read as empty (every other use of the zoo)."""
    path = registry_path(zoo)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        return _damaged(path, f"cannot be read: {exc}", strict)
    try:
        models = json.loads(text)["models"]
        if not isinstance(models, dict):
            raise TypeError("'models' is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        return _damaged(path, f"is damaged ({type(exc).__name__}: {exc})", strict)
    out = {}
    for name, entry in models.items():
        if (NAME_RE.fullmatch(str(name)) and isinstance(entry, dict) and isinstance(entry.get("path"), str)
                and isinstance(entry.get("role"), str)):
            out[name] = entry
        else:
            log.warning("%s: ignoring the malformed entry %r", path, name)
    return out


def _damaged(path: Path, why: str, strict: bool) -> dict:
    message = f"the user model registry {path} {why}; fix it or delete it (then add the models again)"
    if strict:
        raise ConfigError(message)
    log.warning("%s", message)
    return {}


def _write_registry(zoo: Zoo, models: dict[str, dict[str, Any]]) -> None:
    path = registry_path(zoo)
    tmp = path.with_name(f"{REGISTRY}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"version": 1, "models": models}, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def _registry_lock(zoo: Zoo) -> Iterator[None]:
    """An exclusive flock for the registry's read-modify-write (nothing where flock is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(zoo.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise MMAgentError(f"cannot write to the zoo folder {zoo.root}: {exc.strerror or exc}; make it writable "
                           "or set MMAGENT_HOME to a writable directory") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def user_spec(zoo: Zoo, name: str, entry: dict[str, Any]) -> ModelSpec:
    """The zoo entry of a recorded user model."""
    from .zoo import ModelSpec, ModelUnavailableError

    origin = entry["path"]

    def build(folder: Path, report) -> None:
        raise ModelUnavailableError(
            f"user model '{name}': its copy at {zoo.path(name)} is missing or damaged; add it again: "
            f"mmagent models add --force {shlex.quote(name)} {shlex.quote(origin)}")

    description = entry.get("description") or f"{entry['role']} model added by the user"
    return ModelSpec(name, entry["role"], str(description), SOURCE_PREFIX + origin, build, added_from=origin)


def load_user_models(zoo: Zoo) -> None:
    """Add the recorded user models to `zoo.specs` (a name a plugin registered stays the plugin's)."""
    for name, entry in read_registry(zoo, strict=False).items():
        if name in zoo.specs:
            log.warning("user model '%s' is hidden by the zoo model of that name (%s); remove it with "
                        "`mmagent models remove %s` and add it under another name", name, zoo.specs[name].source,
                        name)
            continue
        zoo.add(user_spec(zoo, name, entry))


# -- add and remove -------------------------------------------------------------------------------


def add_user_model(zoo: Zoo, name: str, path: str | os.PathLike, *, role: str | None = None,
                   description: str | None = None, force: bool = False) -> ModelSpec:
    """Copy model folder `path` into the zoo as `name`, record it, and return its spec.

    Refused (InputError, nothing written): a bad name; a name of a plugin's model; a name already
    added, unless `force` (which replaces it); `path` not a folder, without config.json, or with
    links out of it; a role that cannot be inferred when `role` is not given.
    """
    from .zoo import MANIFEST, _VERIFIED, _lock_folder, _write_manifest, _write_stamp

    check_name(name)
    shown = str(path)
    source = Path(path).expanduser()
    if not source.exists():
        raise InputError(f"{shown} does not exist")
    if not source.is_dir():
        raise InputError(f"{shown} is not a folder (give the model folder, which holds config.json)")
    filename, config = read_config(source, shown)
    if role is not None:
        check_role(role)
    else:
        role = infer_role(source, filename, config)
        if role is None:
            kind = config.get("model_type") or "none"
            from .config import KNOWN_ROLES

            raise InputError(f"cannot tell the role of {shown} (model_type {kind!r}); give it with --role "
                             f"(one of {', '.join(KNOWN_ROLES)})")
    builtin = zoo.specs.get(name)
    if builtin is not None and builtin.added_from is None:
        raise InputError(f"'{name}' is a built-in zoo model ({builtin.source}); choose another name")
    try:
        zoo.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MMAgentError(f"cannot create the zoo folder {zoo.root}: {exc.strerror or exc}") from None
    folder = zoo.path(name)
    with _registry_lock(zoo):
        models = read_registry(zoo)
        if name in models and not force:
            raise InputError(f"model '{name}' was already added (from {models[name]['path']}); "
                             "--force replaces it")
        if name not in models and (folder.exists() or folder.is_symlink()):
            origin = _manifest_source(folder / MANIFEST)
            if not (origin or "").startswith(SOURCE_PREFIX):
                raise InputError(f"{folder} already holds another model ({origin or 'unknown source'}); "
                                 "choose another name")
            if not force:  # a copy whose record was lost (a killed add): ours, but say so
                raise InputError(f"{folder} holds an earlier copy of a user model ({origin}); --force replaces it")
        entry = {"path": str(source.resolve()), "role": role, "added": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if description:
            entry["description"] = description
        spec = user_spec(zoo, name, entry)
        zoo.clean_partials()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=zoo.root))
        lock = _lock_folder(tmp)  # `clean_partials` of another process leaves a locked folder alone
        swapped = False
        try:
            _copy_folder(source, tmp, shown)
            _write_manifest(tmp, spec)
            if folder.exists() or folder.is_symlink():
                old = zoo.root / f".{name}.partial-old-{uuid.uuid4().hex[:8]}"
                os.rename(folder, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, folder)
            swapped = True
            _write_stamp(folder)
            models[name] = entry
            _write_registry(zoo, models)
        except OSError as exc:
            if swapped:  # the copy is in place but not recorded: leave no model nobody knows of
                shutil.rmtree(folder, ignore_errors=True)
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            raise MMAgentError(f"could not add model '{name}' to {zoo.root}: {exc.strerror or exc}{where}") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            if lock is not None:
                os.close(lock)
        _VERIFIED.add(str(folder))
    zoo.specs[name] = spec
    return spec


def remove_user_model(zoo: Zoo, name: str) -> None:
    """Forget user model `name` and delete its copy. Models that plugins register are refused."""
    from .zoo import MANIFEST, _VERIFIED

    if not zoo.root.is_dir():
        models: dict = {}
    else:
        with _registry_lock(zoo):
            models = read_registry(zoo)
            if name in models:
                del models[name]
                try:
                    _write_registry(zoo, models)
                except OSError as exc:
                    raise MMAgentError(f"could not update {registry_path(zoo)}: {exc.strerror or exc}") from None
                folder = zoo.path(name)
                hidden = name in zoo.specs and zoo.specs[name].added_from is None
                # A plugin model of the same name owns a folder it built; the user's copy goes.
                if not hidden or (_manifest_source(folder / MANIFEST) or "").startswith(SOURCE_PREFIX):
                    _discard(zoo, folder)
                _VERIFIED.discard(str(folder))
                if not hidden:
                    zoo.specs.pop(name, None)
                return
    spec = zoo.specs.get(name)
    if spec is not None:
        raise InputError(f"'{name}' is a built-in zoo model ({spec.source}); only models added with "
                         "`mmagent models add` can be removed")
    raise InputError(f"no user model named {name!r} (added: {', '.join(sorted(models)) or 'none'})")


def _discard(zoo: Zoo, folder: Path) -> None:
    if not (folder.exists() or folder.is_symlink()):
        return
    aside = zoo.root / f".{folder.name}.partial-old-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(folder, aside)  # gone from its name at once; a failed rmtree is cleaned up later
    except OSError as exc:
        raise MMAgentError(f"could not delete {folder}: {exc.strerror or exc}") from None
    shutil.rmtree(aside, ignore_errors=True)


def _manifest_source(manifest: Path) -> str | None:
    try:
        return str(json.loads(manifest.read_text())["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- copying --------------------------------------------------------------------------------------


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _copy_folder(source: Path, dest: Path, shown: str) -> None:
    """Copy the files and folders under `source` into the empty folder `dest` (links followed only
    to files inside `source`; the zoo's own MANIFEST.json and stamp at the top are left out)."""
    from .zoo import MANIFEST, STAMP

    root = os.path.realpath(source)

    def refuse(exc: OSError) -> None:
        raise exc

    for dirpath, dirnames, filenames in os.walk(root, onerror=refuse):
        rel_dir = os.path.relpath(dirpath, root)
        for sub in dirnames:
            if os.path.islink(os.path.join(dirpath, sub)):
                raise InputError(f"{shown}: {_rel(rel_dir, sub)} is a link to a folder; copy that folder in instead")
            (dest / rel_dir / sub).mkdir()
        for filename in filenames:
            if rel_dir == "." and filename in (MANIFEST, STAMP):
                continue
            _copy_file(os.path.join(dirpath, filename), dest / rel_dir / filename, root, shown,
                       _rel(rel_dir, filename))


def _rel(rel_dir: str, name: str) -> str:
    return name if rel_dir == "." else f"{rel_dir}/{name}"


def _copy_file(path: str, dest: Path, root: str, shown: str, rel: str) -> None:
    real = os.path.realpath(path)
    if not _inside(real, root):
        raise InputError(f"{shown}: {rel} links outside the folder (to {real}); links out are not followed")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{shown}: {rel} is a broken link") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{shown}: {rel} is not a regular file")
    # O_NONBLOCK: a file swapped for a FIFO meanwhile does not hang the open; checked again below.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{shown}: {rel} is not a regular file")
        opened = _fd_path(fd)
        if opened is not None and not _inside(opened, root):  # a link swapped in after the check
            raise InputError(f"{shown}: {rel} links outside the folder (to {opened}); links out are not followed")
        with os.fdopen(os.dup(fd), "rb") as src, open(dest, "xb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    finally:
        os.close(fd)


def _fd_path(fd: int) -> str | None:
    """The real path of an open file (Linux), or None where it cannot be told."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
