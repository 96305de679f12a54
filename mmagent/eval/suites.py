"""Suites declared as data: one YAML file each, as lmms-eval declares its tasks.

    name: scenes-vqa                      # required: letters, digits, '-', '_' or '.'
    description: Scene questions by type  # one line, shown by `mmagent eval --list`
    source: mmagent.eval.generators:scenes_vqa   # required, one of:
            #   "module:function"          a generator (limit, seed, media_dir) -> items
            #   data.jsonl / a folder      a JSONL file or a local `datasets` folder, relative to
            #                              this YAML file's folder (or absolute)
            #   "hf:ORG/NAME[:split]"      a Hugging Face dataset (read with `mapping`)
    metric: scene_answer                  # default exact_match
    extra_metrics: [bleu]                 # reported beside the main metric
    prompt: "{question}"                  # str.format over the item's question, type and meta
    pipelines: [tools, adapter]           # compared when a run names none
    limit: 60                             # items a run takes without --limit (null: all)
    mapping: {question: question, answer: answers, image: image}   # dataset column names
    max_tokens: 32                        # most tokens a pipeline's answer may use

The keys are the fields of `mmagent.eval.core.Suite` (less `origin`, which is set to the file).
Anything else — an unknown key, a missing name or source, a value of the wrong type, a data path
that does not exist, a generator that cannot be imported, YAML that does not parse — is an
`InputError` naming the file and the key. mmagent's own suites are `mmagent/eval/suites/*.yaml`
(`builtin_suites`).
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import fields
from importlib import import_module
from pathlib import Path

from ..errors import InputError
from .core import Suite

SUITES_DIR = Path(__file__).with_name("suites")
#: The keys a suite file may have, in the order the docs list them.
KEYS = tuple(f.name for f in fields(Suite) if f.name != "origin")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_GENERATOR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def load_suite_file(path: str | os.PathLike[str]) -> Suite:
    """The `Suite` a YAML file declares; relative data sources resolve against the file's folder."""
    import yaml

    path = Path(path).expanduser()
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"suite file {label}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"suite file {label}: is a folder, not a YAML file") from None
    except UnicodeDecodeError:
        raise InputError(f"suite file {label}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"suite file {label}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InputError(f"suite file {label}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise InputError(f"suite file {label}: must be a mapping of suite keys ({', '.join(KEYS)}), got {got}")
    for key in data:
        if key not in KEYS:
            raise InputError(f"suite file {label}: unknown key {key!r} (known: {', '.join(KEYS)})")
    for key in ("name", "source"):
        if data.get(key) is None:
            raise InputError(f"suite file {label}: key '{key}' is required")

    def bad(key: str, wanted: str) -> InputError:
        return InputError(f"suite file {label}: key '{key}' must be {wanted}, got {data[key]!r}")

    def text_value(key: str, default: str | None = None) -> str | None:
        value = data.get(key, default)
        if value is None:
            return default
        if not isinstance(value, str):
            raise bad(key, "a string")
        return value

    def positive(key: str) -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(key, "a positive integer or null")
        return value

    def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise bad(key, "a list of names")
        return tuple(v.strip() for v in value)

    name = text_value("name")
    if not _NAME.fullmatch(name):
        raise bad("name", "letters, digits, '-', '_' or '.'")
    description = text_value("description", "")
    if "\n" in description.strip():
        raise bad("description", "one line")
    metric = text_value("metric", "exact_match")
    if not _NAME.fullmatch(metric):
        raise bad("metric", "a metric name")
    prompt = text_value("prompt", "{question}")
    try:
        list(string.Formatter().parse(prompt))
    except ValueError as exc:
        raise InputError(f"suite file {label}: key 'prompt' is not a valid template ({exc}): {prompt!r}") from None
    pipelines = names("pipelines", ("tools", "adapter"))
    if not pipelines:
        raise bad("pipelines", "a non-empty list of pipeline names")
    mapping = data.get("mapping") or {}
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise bad("mapping", "a mapping of field names to column names")
    return Suite(
        name=name,
        description=description.strip(),
        source=_source(text_value("source"), path, label),
        metric=metric,
        prompt=prompt,
        pipelines=pipelines,
        limit=positive("limit"),
        mapping=dict(mapping),
        extra_metrics=names("extra_metrics", ()),
        max_tokens=positive("max_tokens"),
        origin=str(path.resolve()),
    )


def _source(source: str, path: Path, label: str) -> str:
    """The source as the runner takes it: "hf:..." as is, "module:function" checked to import, a
    data path made absolute (resolved against the YAML file's folder) and checked to exist."""
    source = source.strip()
    if not source:
        raise InputError(f"suite file {label}: key 'source' is empty")
    if source.startswith("hf:"):
        if not re.fullmatch(r"hf:[\w.-]+(/[\w.-]+)?(:\S+)?", source):
            raise InputError(f"suite file {label}: key 'source' must be hf:ORG/NAME[:split], got {source!r}")
        return source
    local = (path.parent / source).expanduser()
    if _GENERATOR.fullmatch(source) and not local.exists():
        module, _, attr = source.partition(":")
        try:
            fn = getattr(import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"suite file {label}: key 'source': cannot load generator {source} "
                             f"({type(exc).__name__}: {exc})") from None
        if not callable(fn):
            raise InputError(f"suite file {label}: key 'source': {source} is not a function")
        return source
    if not local.exists():
        raise InputError(f"suite file {label}: key 'source': {local} does not exist (a data path is relative "
                         "to the suite file; a generator is 'module:function'; a Hugging Face dataset 'hf:ORG/NAME')")
    return str(local.resolve())


def builtin_suites() -> list[Suite]:
    """mmagent's own suites, one per `mmagent/eval/suites/*.yaml`, in file-name order."""
    return [load_suite_file(file) for file in sorted(SUITES_DIR.glob("*.yaml"))]

