"""Items from the user's own data: `mmagent eval --data FILE.jsonl | FOLDER | hf:ORG/NAME[:split]`.

JSONL, one object per line:

    {"id": "q1", "image": "imgs/receipt.png", "question": "What is the total?", "answer": ["9.75", "$9.75"],
     "type": "number"}

`image` and `audio` are a path or a list of paths, relative to the file; `answer` is a string, a list
of accepted answers, or an object of fields (extraction); `type`, `id` and `evidence` are optional.
A local `datasets` folder (`Dataset.save_to_disk`) or a Hugging Face dataset id (needs network) is
read with a field mapping; VQAv2- and TextVQA-style fields work without one (`question`,
`answers` as strings or as {"answer": ...} objects, `image`, `question_id`, `question_type`).

Bad rows — missing files, media that does not decode, missing fields, invalid JSON — are reported
with their line (or row) number and skipped, never silently: `load_data` returns them beside the
items.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, MMAgentError
from .core import EvalItem

#: Default field mapping for dataset sources: item field -> candidate columns, first present wins.
DEFAULT_MAPPING: dict[str, tuple[str, ...]] = {
    "id": ("id", "question_id", "qid"),
    "question": ("question", "query", "prompt"),
    "answer": ("answer", "answers", "multiple_choice_answer", "label"),
    "image": ("image", "images", "img", "image_path"),
    "audio": ("audio", "audio_path"),
    "type": ("type", "question_type", "answer_type", "category"),
    "evidence": ("evidence",),
}


@dataclass
class Skipped:
    where: str  # "data.jsonl:12" or "row 7"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Loaded:
    items: list[EvalItem]
    skipped: list[Skipped] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False)

    def take(self, where: str, build: Callable[[], EvalItem]) -> None:
        """Add the item `build` makes, or record why row `where` is skipped (bad row, duplicate id)."""
        try:
            item = build()
        except InputError as exc:
            self.skipped.append(Skipped(where, str(exc)))
            return
        if item.id in self._seen:
            self.skipped.append(Skipped(where, f"duplicate id {item.id!r}"))
            return
        self._seen.add(item.id)
        self.items.append(item)


def load_data(source: str, *, media_dir: Path, mapping: dict[str, str] | None = None,
              limit: int | None = None, check_media: bool = True, checked: frozenset[str] = frozenset()) -> Loaded:
    """The items of `source` (a JSONL file, a `datasets` folder, or "hf:ORG/NAME[:split]"). Every
    image and audio file is decoded once to check it, except those of items whose id is in
    `checked` (already evaluated: a resume); their files must still exist."""
    path = Path(source).expanduser()
    if source.startswith("hf:"):
        return _from_dataset(_hf_dataset(source[3:]), source, media_dir, mapping, limit, check_media, checked)
    if path.is_dir():
        return _from_dataset(_disk_dataset(path), str(path), media_dir, mapping, limit, check_media, checked)
    if path.is_file():
        return _from_jsonl(path, limit, check_media, checked)
    if _looks_like_hub_id(source):
        return _from_dataset(_hf_dataset(source), source, media_dir, mapping, limit, check_media, checked)
    raise InputError(f"--data: no such file or folder: {source}")


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split(":")[0].split("/")
    return len(parts) == 2 and all(parts) and not source.endswith((".jsonl", ".json"))


# -- JSONL --------------------------------------------------------------------------------------------


def _from_jsonl(path: Path, limit: int | None, check_media: bool, checked: frozenset[str]) -> Loaded:
    loaded = Loaded([])
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"--data {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(lines, 1):
        if limit is not None and len(loaded.items) >= limit:
            break
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            loaded.skipped.append(Skipped(where, f"invalid JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict):
            loaded.skipped.append(Skipped(where, "not a JSON object"))
            continue
        loaded.take(where, lambda: item_from_row(row, default_id=f"line-{number}", base=path.parent,
                                                 check_media=check_media, checked=checked))
    return loaded


def _paths(value: Any, base: Path, what: str) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        if not isinstance(v, str) or not v:
            raise InputError(f"'{what}' must be a path or a list of paths")
        p = Path(v).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise InputError(f"{what} file not found: {v}")
        out.append(str(p.resolve()))
    return out


def _answers(value: Any) -> list[str] | dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list) and value:
        out = []
        for v in value:
            if isinstance(v, dict) and "answer" in v:  # VQAv2: [{"answer": "2", ...}, ...]
                v = v["answer"]
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise InputError("'answer' must be a string, a list of strings or an object of fields")
            out.append(str(v))
        return out
    raise InputError("'answer' must be a string, a list of strings or an object of fields")


def item_from_row(row: dict[str, Any], *, default_id: str, base: Path, check_media: bool = True,
                  checked: frozenset[str] = frozenset()) -> EvalItem:
    """An item from one JSONL object; InputError says what is wrong with it."""
    if "answer" not in row and "answers" not in row:
        raise InputError("missing field 'answer'")
    images = _paths(row.get("image", row.get("images")), base, "image")
    audio = _paths(row.get("audio"), base, "audio")
    question = row.get("question", "")
    if not isinstance(question, str):
        raise InputError("'question' must be a string")
    if not question.strip() and not audio:
        raise InputError("missing field 'question' (needed unless the audio asks it)")
    evidence = row.get("evidence") or []
    evidence = [evidence] if isinstance(evidence, str) else [str(e) for e in evidence]
    item_id = row.get("id", default_id)
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool) or str(item_id) == "":
        raise InputError("'id' must be a non-empty string or number")
    kind = row.get("type")
    item = EvalItem(id=str(item_id), question=question, answer=_answers(row.get("answer", row.get("answers"))),
                    images=images, audio=audio, type=None if kind is None else str(kind), evidence=evidence,
                    meta={k: v for k, v in row.items() if k not in (
                        "id", "question", "answer", "answers", "image", "images", "audio", "type", "evidence")})
    if check_media and item.id not in checked:
        check_item_media(item)
    return item


def check_item_media(item: EvalItem) -> None:
    """InputError unless every image and audio file of `item` decodes as what it claims to be."""
    from ..content.sources import load_media

    for kind, paths in (("image", item.images), ("audio", item.audio)):
        for p in paths:
            try:
                load_media(p, expect=kind)
            except MMAgentError as exc:
                raise InputError(f"{kind} {Path(p).name} is unusable: {exc}") from None


# -- datasets -----------------------------------------------------------------------------------------


def _datasets():
    try:
        import datasets
    except ImportError:
        raise InputError("--data with a datasets folder or a Hugging Face id needs the `datasets` package "
                         "(pip install 'mmagent[eval]')") from None
    return datasets


def _disk_dataset(path: Path):
    datasets = _datasets()
    try:
        data = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure is "not a datasets folder"
        raise InputError(f"--data {path}: not a saved `datasets` folder ({type(exc).__name__}: {exc})") from None
    return _one_split(data, str(path))


def _hf_dataset(spec: str):
    datasets = _datasets()
    name, _, split = spec.partition(":")
    try:
        data = datasets.load_dataset(name, split=split or None)
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, gated...
        raise InputError(f"--data {spec}: could not load the Hugging Face dataset "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         "with no network, save it with `Dataset.save_to_disk` elsewhere and pass the folder") from None
    return _one_split(data, spec)


def _one_split(data: Any, label: str):
    if hasattr(data, "keys") and not hasattr(data, "features"):  # a DatasetDict
        splits = list(data.keys())
        for preferred in ("validation", "val", "test", "train"):
            if preferred in splits:
                return data[preferred]
        if not splits:
            raise InputError(f"--data {label}: the dataset has no splits")
        return data[splits[0]]
    return data


def _column(row: dict[str, Any], field_name: str, mapping: dict[str, str]) -> Any:
    if field_name in mapping:
        column = mapping[field_name]
        if column not in row:
            raise InputError(f"mapped column '{column}' (for {field_name}) is not in the row")
        return row[column]
    for column in DEFAULT_MAPPING.get(field_name, ()):
        if column in row and row[column] is not None:
            return row[column]
    return None


def _media_file(value: Any, media_dir: Path, kind: str) -> str | None:
    """A dataset cell (a path, PIL image, {"bytes"/"path"} dict, or audio dict) as a file path."""
    if value is None:
        return None
    if isinstance(value, str):
        if not Path(value).is_file():
            raise InputError(f"{kind} file not found: {value}")
        return str(Path(value).resolve())
    data: bytes | None = None
    suffix = ".png" if kind == "image" else ".wav"
    if hasattr(value, "save"):  # a PIL image
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        data = buf.getvalue()
    elif isinstance(value, dict) and value.get("bytes"):
        data = value["bytes"]
        suffix = Path(value.get("path") or "").suffix or suffix
    elif isinstance(value, dict) and value.get("path") and Path(value["path"]).is_file():
        return str(Path(value["path"]).resolve())
    elif isinstance(value, dict) and "array" in value and "sampling_rate" in value:
        import numpy as np
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, np.asarray(value["array"], dtype="float32"), int(value["sampling_rate"]), format="WAV")
        data = buf.getvalue()
    if data is None:
        raise InputError(f"cannot read the {kind} cell ({type(value).__name__})")
    media_dir.mkdir(parents=True, exist_ok=True)
    target = media_dir / f"{hashlib.sha256(data).hexdigest()[:20]}{suffix}"
    if not target.exists():
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return str(target)


def _from_dataset(data: Iterable[dict[str, Any]], label: str, media_dir: Path, mapping: dict[str, str] | None,
                  limit: int | None, check_media: bool, checked: frozenset[str] = frozenset()) -> Loaded:
    mapping = dict(mapping or {})
    unknown = set(mapping) - set(DEFAULT_MAPPING)
    if unknown:
        raise InputError(f"--field: unknown item field(s) {', '.join(sorted(unknown))} "
                         f"(use {', '.join(DEFAULT_MAPPING)})")
    loaded = Loaded([])
    for number, row in enumerate(_rows(data)):
        if limit is not None and len(loaded.items) >= limit:
            break
        loaded.take(f"{Path(label).name} row {number}",
                    lambda: _dataset_item(row, number, media_dir, mapping, check_media, checked))
    return loaded


def _dataset_item(row: dict[str, Any], number: int, media_dir: Path, mapping: dict[str, str],
                  check_media: bool, checked: frozenset[str]) -> EvalItem:
    """The item of dataset row `number` (media cells written under `media_dir`)."""
    image = _column(row, "image", mapping)
    audio = _column(row, "audio", mapping)
    images = [p for v in (image if isinstance(image, list) else [image])
              if (p := _media_file(v, media_dir / "images", "image"))]
    audios = [p for v in (audio if isinstance(audio, list) else [audio])
              if (p := _media_file(v, media_dir / "audio", "audio"))]
    item_row = {"question": _column(row, "question", mapping) or "", "answer": _column(row, "answer", mapping),
                "image": images or None, "audio": audios or None, "type": _column(row, "type", mapping),
                "evidence": _column(row, "evidence", mapping), "id": _column(row, "id", mapping)}
    if item_row["answer"] is None:
        raise InputError("missing field 'answer'")
    return item_from_row({k: v for k, v in item_row.items() if v is not None}, default_id=f"row-{number}",
                         base=Path("."), check_media=check_media, checked=checked)


def _rows(data: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for row in data:
        yield dict(row)


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """`--field question=query --field answer=answers` -> {"question": "query", "answer": "answers"}."""
    out = {}
    for pair in pairs:
        key, sep, column = pair.partition("=")
        if not sep or not key or not column:
            raise InputError(f"--field wants FIELD=COLUMN, not {pair!r}")
        out[key.strip()] = column.strip()
    return out
