"""The user's own training data for `mmagent train encoder|adapter --data D`: read, checked, split.

`D` is one of
    a JSONL file     {"image": "imgs/a.png", "question": "Is there a cat?", "answer": "yes", "type": "yes/no"}
                     {"image": "imgs/b.png", "caption": "A cat on a mat."}
                     (`image` relative to the file's folder; an absolute path must lie inside it)
    an image folder  with `metadata.jsonl` or `metadata.csv` (Hugging Face "imagefolder": a
                     `file_name` column plus question/answer and/or caption (or `text`) columns)
    a `datasets`     a `Dataset.save_to_disk` folder, or a Hugging Face id (`ORG/NAME` or
      source         `hf:ORG/NAME[:split]`, needs network); VQAv2-style columns work as they are

Every image is read once (deduplicated by content), checked against `[limits]` (bytes, pixels),
decoded, converted to RGB and kept as a uint8 array (resized to `image_size` when given). Bad rows —
a missing, undecodable or oversized image, a path out of the folder, an empty answer, no question
and no caption, a line that is not a JSON object — are skipped and listed in `problems` with their
line number (1-based; a 0-based row index for `datasets`). A file that is not JSONL at all, or
data with no usable row, is an `InputError`.

The split is by image: all the questions of an image are on the same side. `val_fraction` of the
images (chosen by a hash of the image's bytes and the seed: deterministic, and an image keeps its
side when rows are added) are held out, unless `val` names a second source, which is then the
held-out set (an image found in both is held out).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..config import PathSettings, Settings, load_settings
from ..content.guard import inspect_media, to_8bit
from ..content.sniff import sniff
from ..content.sources import read_path
from ..errors import ForbiddenSourceError, InputError, one_line
from ..eval.data import DEFAULT_MAPPING, _answers, _column, _datasets, _hf_dataset, _looks_like_hub_id

#: Columns that may hold an image besides the eval harness's (`file_name`: imagefolder metadata).
IMAGE_COLUMNS = (*DEFAULT_MAPPING["image"], "file_name")
#: Columns that may hold a caption (`text`: the imagefolder convention for captions).
CAPTION_COLUMNS = ("caption", "text")
#: Split of a DatasetDict trained on (the first present), when the source names none.
TRAIN_SPLITS = ("train", "training")
YES_NO = ("yes", "no")
#: Problems `summary()` and `problem_report()` list by default (the rest are counted).
SHOWN_PROBLEMS = 10


class Problem(NamedTuple):
    """A row that was skipped: its line (1-based) or row (0-based, `datasets`) and the full message,
    which names the file and the line too ("data.jsonl:12: image imgs/x.png: no such file")."""

    line: int
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Example:
    image: int  # index into TrainingData.images
    kind: str  # "qa" or "caption"
    question: str  # "" for a caption
    answer: str  # the answer, or the caption
    type: str  # the row's `type`, else "yes/no" / "open" (qa) or "caption"
    line: int  # where it came from (as in Problem.line)
    source: str  # the file (or dataset) it came from, as named in messages


@dataclass
class TrainingData:
    """What `load_training_data` returns. `images[i]` is an (H, W, 3) uint8 RGB array."""

    images: list[Any]
    image_names: list[str]  # where image i was first seen ("imgs/a.png", "ds row 3")
    examples: list[Example]
    train_images: tuple[int, ...]
    val_images: tuple[int, ...]
    problems: list[Problem]
    source: str
    val_source: str | None = None
    val_fraction: float = 0.0
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def train(self) -> list[Example]:
        held = set(self.val_images)
        return [e for e in self.examples if e.image not in held]

    @property
    def val(self) -> list[Example]:
        held = set(self.val_images)
        return [e for e in self.examples if e.image in held]

    def pil(self, index: int):
        """Image `index` as an RGB PIL image."""
        from PIL import Image

        return Image.fromarray(self.images[index])

    def stack(self, indices) -> Any:
        """Images `indices` as one (N, H, W, 3) uint8 array (they must share a size: load with
        `image_size`)."""
        import numpy as np

        return np.stack([self.images[i] for i in indices])

    def counts(self) -> dict[str, Any]:
        train, val = self.train, self.val
        types: dict[str, dict[str, int]] = {}
        for side, examples in (("train", train), ("val", val)):
            for e in examples:
                types.setdefault(e.type, {"train": 0, "val": 0})[side] += 1
        kinds = Counter(e.kind for e in self.examples)
        return {"examples": len(self.examples), "qa": kinds["qa"], "caption": kinds["caption"],
                "images": len(self.images), "train_images": len(self.train_images),
                "val_images": len(self.val_images), "train_examples": len(train), "val_examples": len(val),
                "types": dict(sorted(types.items(), key=lambda kv: -sum(kv[1].values()))),
                "problems": len(self.problems)}

    def summary(self) -> str:
        """A few lines for the CLI: what was read, the split, counts per type, bad rows."""
        c = self.counts()
        sources = self.source + (f" + {self.val_source}" if self.val_source else "")
        held = (f"--val {self.val_source}" if self.val_source
                else f"{self.val_fraction:.0%} of the images, seed {self.seed}")
        lines = [f"{sources}: {c['examples']:,} examples ({c['qa']:,} questions, {c['caption']:,} captions) "
                 f"on {c['images']:,} images; {c['problems']:,} bad rows skipped",
                 f"  train: {c['train_images']:,} images, {c['train_examples']:,} examples; "
                 f"val: {c['val_images']:,} images, {c['val_examples']:,} examples ({held})",
                 "  by type (train / val): " + ", ".join(f"{t} {n['train']:,} / {n['val']:,}"
                                                         for t, n in c["types"].items())]
        lines += [f"  note: {n}" for n in self.notes]
        report = self.problem_report()
        return "\n".join(lines + ([report] if report else []))

    def problem_report(self, limit: int = SHOWN_PROBLEMS) -> str:
        """The first `limit` problems, one a line, and how many more; "" when there are none."""
        if not self.problems:
            return ""
        lines = [f"{len(self.problems):,} bad rows skipped:"] + [f"  {p.message}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit:,} more")
        return "\n".join(lines)


def load_training_data(source: str | os.PathLike, *, val: str | os.PathLike | None = None,
                       val_fraction: float = 0.1, seed: int = 0, image_size: int | None = None,
                       mapping: dict[str, str] | None = None, settings: Settings | None = None) -> TrainingData:
    """Read `source` (and `val`), check every row and image, and split by image (module doc).

    `mapping` names columns for fields (as `mmagent eval --field`: image, question, answer, type,
    and caption). `image_size` resizes every image (bicubic, as the scene VLM's processor) to
    image_size x image_size, which bounds memory; without it images keep their size.
    Raises InputError for a source that is not usable at all; bad rows only land in `problems`."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise InputError(f"--val-fraction must be a number from 0 to below 1, got {val_fraction!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or not 1 <= image_size <= 4096):
        raise InputError(f"image_size must be an integer from 1 to 4096, got {image_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")
    mapping = dict(mapping or {})
    unknown = set(mapping) - {"image", "question", "answer", "type", "caption"}
    if unknown:
        raise InputError(f"--field: unknown field(s) {', '.join(sorted(unknown))} "
                         "(use image, question, answer, type, caption)")
    bank = _ImageBank(settings or load_settings(), image_size)
    main = _read_source(str(source), bank, mapping)
    notes = list(main.notes)
    if val is None:
        seen = _images_of(main.examples)
        held = _held_out(seen, bank, val_fraction, seed)
        if val_fraction > 0 and not held:
            notes.append(f"only {len(seen)} image: nothing held out for validation")
        val_label = None
    else:
        other = _read_source(str(val), bank, mapping)
        notes += other.notes
        held = _images_of(other.examples)
        both = held & _images_of(main.examples)
        if both:
            n = sum(e.image in both for e in main.examples)
            notes.append(f"{len(both):,} images of {main.label} are also in {other.label}: "
                         f"their {n:,} examples are held out with them")
        main.examples += other.examples
        main.problems += other.problems
        val_label = other.label
    train = _images_of(main.examples) - held
    return TrainingData(images=bank.arrays, image_names=bank.names, examples=main.examples,
                        train_images=tuple(sorted(train)), val_images=tuple(sorted(held)),
                        problems=main.problems, source=main.label, val_source=val_label,
                        val_fraction=0.0 if val is not None else float(val_fraction), seed=seed, notes=notes)


# -- the split --------------------------------------------------------------------------------------


def _images_of(examples: list[Example]) -> set[int]:
    return {e.image for e in examples}


def _held_out(images: set[int], bank: _ImageBank, fraction: float, seed: int) -> set[int]:
    """`fraction` of `images` (at least one when asked, never all), the first by a seeded hash of
    their bytes: the same images whatever the order of the rows."""
    n = len(images)
    if fraction <= 0 or n < 2:
        return set()
    k = min(max(1, round(fraction * n)), n - 1)
    salt = f"mmagent-split:{seed}:".encode()
    ranked = sorted(images, key=lambda i: hashlib.sha256(salt + bank.digests[i]).digest())
    return set(ranked[:k])


# -- images -----------------------------------------------------------------------------------------


class _ImageBank:
    """Images read so far, one entry per distinct content; remembers each path's outcome so a path
    named by many rows is read once (and a bad one reported on each row without rereading)."""

    def __init__(self, settings: Settings, image_size: int | None) -> None:
        self.settings = settings
        self.image_size = image_size
        self.arrays: list[Any] = []
        self.names: list[str] = []
        self.digests: list[bytes] = []
        self._by_digest: dict[bytes, int] = {}
        self._by_path: dict[str, int | str] = {}  # path -> index, or the reason it is unusable
        self._by_value: dict[tuple[Path | None, str], int | str] = {}  # (base, path as written) -> same
        self._confined: dict[Path, Settings] = {}

    def from_path(self, value: str, base: Path | None) -> int:
        """The index of the image file `value` (relative to `base` and confined to it when `base` is
        given). InputError (one line naming `value`) when it is unusable."""
        known = self._by_value.get((base, value))  # the common case: a path seen on an earlier row
        if known is None:
            path = Path(value).expanduser()
            if base is not None and not path.is_absolute():
                path = base / path
            key = os.path.abspath(path)
            known = self._by_path.get(key)
        if isinstance(known, int):
            return known
        if known is not None:
            raise InputError(known)
        label = one_line(value, 160)
        try:
            try:
                data = read_path(Path(key), self._settings_for(base))
            except ForbiddenSourceError as exc:
                if base is None:
                    raise InputError(_about(label, str(exc), one_line(key, 200))) from None
                raise InputError(f"image {label}: outside the folder of the data file ({base}); "
                                 "image paths must stay inside it") from None
            except InputError as exc:
                raise InputError(_about(label, str(exc), one_line(key, 200))) from None
            index = self.from_bytes(data, label)
        except InputError as exc:
            self._by_path[key] = self._by_value[(base, value)] = str(exc)
            raise
        self._by_path[key] = self._by_value[(base, value)] = index
        return index

    def _settings_for(self, base: Path | None) -> Settings:
        if base is None:
            return self.settings
        confined = self._confined.get(base)
        if confined is None:
            confined = dataclasses.replace(self.settings, paths=PathSettings(allowed_roots=(str(base),)))
            self._confined[base] = confined
        return confined

    def from_bytes(self, data: bytes, label: str) -> int:
        """The index of the image whose file bytes are `data` (added if new); InputError (one line
        naming `label`) when they are not a usable image."""
        digest = hashlib.sha256(data).digest()
        known = self._by_digest.get(digest)
        if known is not None:
            return known
        try:
            inspect_media(data, self.settings.limits, expect="image", label=label)
            array = self._decode(data)
        except InputError as exc:
            raise InputError(_about(label, str(exc), label)) from None
        index = len(self.arrays)
        self.arrays.append(array)
        self.names.append(label)
        self.digests.append(digest)
        self._by_digest[digest] = index
        return index

    def _decode(self, data: bytes):
        import numpy as np
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                rgb = to_8bit(im).convert("RGB")
        except Exception as exc:  # noqa: BLE001 - inspect_media decoded it already; be safe anyway
            raise InputError(f"cannot decode ({type(exc).__name__}: {exc})") from None
        if self.image_size is not None and rgb.size != (self.image_size, self.image_size):
            rgb = rgb.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return np.asarray(rgb, dtype=np.uint8)


def _about(value: str, message: str, label: str) -> str:
    """"image VALUE: reason" from a content-layer message that starts with its own `label`."""
    rest = message
    if label and message.startswith(label):
        rest = message[len(label):].lstrip(": ") or message
    return f"image {value}{' ' if rest.startswith(('is ', 'has ')) else ': '}{rest}"


# -- rows -------------------------------------------------------------------------------------------


@dataclass
class _Read:
    label: str
    examples: list[Example] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _field(row: dict[str, Any], name: str, mapping: dict[str, str], columns: tuple[str, ...] = ()) -> Any:
    if name in mapping or not columns:
        return _column(row, name, mapping)
    present = [row[c] for c in columns if row.get(c) is not None]
    return next((v for v in present if v != ""), present[0] if present else None)


def _parse_row(row: dict[str, Any], mapping: dict[str, str]) -> tuple[Any, list[tuple[str, str, str, str]]]:
    """(the image cell, [(kind, question, answer, type)]) of one row; InputError says what is wrong."""
    image = _field(row, "image", mapping, IMAGE_COLUMNS)
    if isinstance(image, list):
        if len(image) != 1:
            raise InputError(f"{len(image)} images in one row: a training example has exactly one")
        image = image[0]
    if image is None or image == "":
        raise InputError("no image (expected an 'image' field: a path relative to the data file)")
    question = _field(row, "question", mapping, DEFAULT_MAPPING["question"])
    answer = _field(row, "answer", mapping, DEFAULT_MAPPING["answer"])
    caption = _field(row, "caption", mapping, CAPTION_COLUMNS)
    kind = _field(row, "type", mapping, DEFAULT_MAPPING["type"])
    if question is not None and not isinstance(question, str):
        raise InputError("'question' must be a string")
    if caption is not None and not isinstance(caption, str):
        raise InputError("'caption' must be a string")
    question = (question or "").strip()
    caption = (caption or "").strip()
    out = []
    if question:
        if answer is None:
            raise InputError("a question without an answer (no 'answer' field)")
        text = _one_answer(answer)
        out.append(("qa", question, text, _type(kind, "yes/no" if text.lower() in YES_NO else "open")))
    elif answer is not None and answer != "" and answer != []:
        raise InputError("no question: an 'answer' needs a 'question' (or give a 'caption' instead)")
    if caption:
        out.append(("caption", "", caption, _type(kind, "caption") if not question else "caption"))
    if not out:
        raise InputError("no 'question' + 'answer' and no 'caption': nothing to train on")
    return image, out


def _one_answer(value: Any) -> str:
    """The training answer: the text, or the most common of several (VQAv2's ten)."""
    answers = _answers(value)
    if isinstance(answers, dict):
        raise InputError("'answer' is an object of fields (extraction data): a training answer is text")
    answers = [a.strip() for a in answers if a.strip()]
    if not answers:
        raise InputError("empty answer")
    counts = Counter(a.lower() for a in answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a.lower()] == best)


def _type(value: Any, default: str) -> str:
    if value is None:
        return default
    text = one_line(str(value), 60).strip()
    return text or default


def _take(read: _Read, where: str, number: int, row: Any, mapping: dict[str, str], image_of) -> None:
    """Parse `row`, load its image with `image_of(cell)`, and record its examples or its problem."""
    try:
        if not isinstance(row, dict):
            raise InputError(f"not a JSON object (a JSON {_json_kind(row)})")
        cell, parsed = _parse_row(row, mapping)
        index = image_of(cell)
    except InputError as exc:
        read.problems.append(Problem(number, f"{where}: {exc}"))
        return
    for kind, question, answer, qtype in parsed:
        read.examples.append(Example(index, kind, question, answer, qtype, number, read.label))


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


# -- sources ----------------------------------------------------------------------------------------


def _read_source(source: str, bank: _ImageBank, mapping: dict[str, str]) -> _Read:
    if source.startswith("hf:"):
        read = _read_dataset(_hf_train(source[3:]), source, None, bank, mapping)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            read = _read_folder(path, bank, mapping)
        elif path.is_file():
            read = _read_csv(path, bank, mapping) if path.suffix.lower() == ".csv" else _read_jsonl(path, bank, mapping)
        elif _looks_like_hub_id(source) and path.suffix.lower() not in (".csv", ".jsonl", ".json"):
            read = _read_dataset(_hf_train(source), source, None, bank, mapping)
        else:
            raise InputError(f"--data: no such file or folder: {source}")
    if not read.examples:
        shown = "; ".join(p.message for p in read.problems[:3])
        more = f" (and {len(read.problems) - 3:,} more)" if len(read.problems) > 3 else ""
        raise InputError(f"{read.label}: no usable row ({len(read.problems):,} bad: {shown}{more})"
                         if read.problems else f"{read.label}: no rows")
    return read


def _read_folder(path: Path, bank: _ImageBank, mapping: dict[str, str]) -> _Read:
    metas = [path / name for name in ("metadata.jsonl", "metadata.csv") if (path / name).is_file()]
    if len(metas) == 2:
        raise InputError(f"{path} has both metadata.jsonl and metadata.csv: keep one")
    if metas:
        meta = metas[0]
        return _read_csv(meta, bank, mapping) if meta.suffix == ".csv" else _read_jsonl(meta, bank, mapping)
    if any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return _read_disk_dataset(path, bank, mapping)
    hint = ""
    jsonl = sorted(p.name for p in path.glob("*.jsonl"))
    if jsonl:
        hint = f" (to use {jsonl[0]}, pass the file itself: --data {path / jsonl[0]})"
    raise InputError(f"--data {path}: a folder must hold metadata.jsonl or metadata.csv (an image folder) "
                     f"or be a saved `datasets` folder{hint}")


def _read_jsonl(path: Path, bank: _ImageBank, mapping: dict[str, str]) -> _Read:
    read = _Read(path.name)
    base = path.parent.resolve()
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InputError(f"--data {path}: cannot read it ({exc.strerror})") from None
    with f:
        head = f.read(8192)
        kind = sniff(head) if head else None
        if kind is not None or b"\x00" in head:
            what = f"a {kind} file" if kind else "a binary file"
            raise InputError(f"{path} is not a JSONL file: it is {what} (line 1); JSONL has one JSON object per line")
        f.seek(0)
        objects, first_bad = 0, None
        for number, raw in enumerate(f, 1):
            where = f"{path.name}:{number}"
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                read.problems.append(Problem(number, f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})"))
                first_bad = first_bad or read.problems[-1]
                continue
            if not text.strip():
                continue
            if objects == 0 and not read.problems and text.strip() in ("[", "{"):
                raise InputError(f"{path} is not a JSONL file: line {number} is {text.strip()!r}, it looks like one "
                                 "JSON document spread over lines; JSONL has one JSON object per line")
            try:
                row = json.loads(text.strip())
            except ValueError as exc:
                reason = f"{exc.msg}: column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
                read.problems.append(Problem(number, f"{where}: invalid JSON ({reason})"))
                first_bad = first_bad or read.problems[-1]
                continue
            objects += isinstance(row, dict)
            _take(read, where, number, row, mapping, lambda cell: _image_path(cell, base, bank))
    if objects == 0:
        if first_bad is None and not read.problems:
            raise InputError(f"{path} is empty: no JSONL rows")
        first = first_bad or read.problems[0]
        raise InputError(f"{path} is not a JSONL file: no line is a JSON object; first bad line: {first.message}")
    return read


def _image_path(cell: Any, base: Path, bank: _ImageBank) -> int:
    if not isinstance(cell, str):
        raise InputError("'image' must be a path (a string) relative to the data file")
    if "://" in cell or cell.startswith("data:"):
        raise InputError(f"image {one_line(cell, 80)}: a URL; training reads local files only (download the images "
                         "next to the data file)")
    return bank.from_path(cell, base)


def _read_csv(path: Path, bank: _ImageBank, mapping: dict[str, str]) -> _Read:
    read = _Read(path.name)
    base = path.parent.resolve()
    with open(path, "rb") as f:
        head = f.read(8192)
    if sniff(head) is not None or b"\x00" in head:
        raise InputError(f"{path} is not a CSV file: it is a binary file (line 1)")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            image_column = mapping.get("image", "file_name")
            if image_column not in columns and not set(IMAGE_COLUMNS) & set(columns):
                raise InputError(f"{path}: no {image_column} column (line 1 has: {', '.join(columns) or 'nothing'}); "
                                 "the imagefolder convention names each image in `file_name`")
            for row in reader:
                number = reader.line_num
                if None in row:
                    read.problems.append(Problem(number, f"{path.name}:{number}: more cells than columns"))
                    continue
                _take(read, f"{path.name}:{number}", number, row, mapping,
                      lambda cell: _image_path(cell, base, bank))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV file ({exc})") from None
    return read


# -- datasets ---------------------------------------------------------------------------------------


def _hf_train(spec: str):
    name, _, split = spec.partition(":")
    return _hf_dataset(f"{name}:{split or TRAIN_SPLITS[0]}")


def _read_disk_dataset(path: Path, bank: _ImageBank, mapping: dict[str, str]) -> _Read:
    datasets = _datasets()
    try:
        data = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure is "not a datasets folder"
        raise InputError(f"--data {path}: not a saved `datasets` folder ({type(exc).__name__}: {exc})") from None
    notes = []
    if hasattr(data, "keys") and not hasattr(data, "features"):  # a DatasetDict
        splits = list(data.keys())
        if not splits:
            raise InputError(f"--data {path}: the dataset has no splits")
        chosen = next((s for s in TRAIN_SPLITS if s in splits), splits[0])
        others = [s for s in splits if s != chosen]
        notes.append(f"trained on split '{chosen}' of {path.name}"
                     + (f" (to hold out another, pass --val {path / others[0]})" if others else ""))
        data = data[chosen]
    read = _read_dataset(data, path.name, path, bank, mapping)
    read.notes += notes
    return read


def _read_dataset(data, label: str, base: Path | None, bank: _ImageBank, mapping: dict[str, str]) -> _Read:
    """Rows of a `datasets.Dataset` (`label`: its name in messages); image cells as bytes when the
    column is an Image feature."""
    read = _Read(label)
    features = getattr(data, "features", None) or {}
    columns = list(getattr(data, "column_names", None) or features)
    image_column = mapping.get("image") or next((c for c in IMAGE_COLUMNS if c in columns), None)
    if image_column is None:
        raise InputError(f"{label}: no image column (columns: {', '.join(columns) or 'none'}); "
                         "name it with --field image=COLUMN")
    feature = features.get(image_column)
    if type(feature).__name__ == "Image" and getattr(feature, "decode", False):
        data = data.cast_column(image_column, type(feature)(decode=False))  # bytes: checked before decoding
    answer_column = mapping.get("answer") or next((c for c in DEFAULT_MAPPING["answer"] if c in columns), None)
    names = getattr(features.get(answer_column), "names", None) if answer_column else None  # a ClassLabel
    for number, row in enumerate(data):
        row = dict(row)
        if names and isinstance(row.get(answer_column), int) and 0 <= row[answer_column] < len(names):
            row[answer_column] = names[row[answer_column]]
        _take(read, f"{read.label} row {number}", number, row, mapping,
              lambda cell, n=number: _image_cell(cell, base, bank, f"{read.label} row {n}"))
    return read


def _image_cell(cell: Any, base: Path | None, bank: _ImageBank, where: str) -> int:
    """A dataset image cell: {"bytes", "path"}, raw bytes, a PIL image, or a path (relative to the
    dataset folder, or absolute)."""
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bank.from_bytes(bytes(cell["bytes"]), one_line(str(cell.get("path") or where), 160))
        cell = cell.get("path")
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return bank.from_bytes(bytes(cell), where)
    if hasattr(cell, "save"):  # a PIL image (a column that is not an Image feature)
        buf = io.BytesIO()
        cell.save(buf, format="PNG")
        return bank.from_bytes(buf.getvalue(), where)
    if isinstance(cell, str) and cell:
        path = Path(cell).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        return bank.from_path(str(path), None)
    raise InputError(f"cannot read the image cell ({type(cell).__name__})")


#: An answer word counts (as a thing an image shows) when it answers at least this many questions.
MIN_WORD_COUNT = 5


def _named(question: str, column: dict[str, int]) -> list[int]:
    """The columns of the answer words a question names, each once, in order; a plural names its
    word ("hearts", "crosses": heart, cross)."""
    import re

    found: dict[int, None] = {}
    for w in re.findall(r"[\w']+", question.lower()):
        for form in (w, w[:-1] if w.endswith("s") else None, w[:-2] if w.endswith("es") else None):
            if form in column:
                found[column[form]] = None
                break
    return list(found)


def answer_words(examples: list, images, words: list[str] | None = None) -> tuple[Any, Any, list[str]]:
    """(targets, known, words): for each image (rows, in the order of `images`) and each of the
    data's answer words (one-word answers that are not yes/no or numbers, answering at least
    `MIN_WORD_COUNT` questions: "pink", "heart" — what an image shows somewhere, not a fact about
    all of it), whether the image shows it (targets 1/0) where the questions tell (known 1), read
    from the answers themselves:

    - an open question answered with a word: the image shows that word;
    - a yes/no question answered "yes": it shows every answer word the question names
      ("Is there a pink heart?" — yes);
    - answered "no" and naming exactly one answer word: it does not show that word ("Is there a
      hexagon?" — no). With two ("a pink heart?" — no) it is not known which one is missing.

    Everything else stays unknown (known 0): a word no question of the image touches is not
    taken as absent. (A negated question — "Is there no heart?" — would read wrongly; such
    questions are rare in visual QA data.) `examples` need `.image`, `.question`, `.answer` and
    `.kind` ("qa"). `words`: this vocabulary instead of the examples' own (for held-out images)."""
    import torch

    qa = [e for e in examples if getattr(e, "kind", "qa") == "qa"]
    counts = Counter(e.answer.lower() for e in qa if len(e.answer.split()) == 1
                     and e.answer.lower() not in YES_NO and not e.answer.isdigit())
    if words is None:
        words = sorted(w for w, n in counts.items() if n >= MIN_WORD_COUNT)
    column = {w: i for i, w in enumerate(words)}
    row = {image: i for i, image in enumerate(images)}
    targets = torch.zeros(len(row), len(words))
    known = torch.zeros(len(row), len(words))
    absent: list[tuple[int, int]] = []
    for e in qa:
        if e.image not in row:
            continue
        r, answer = row[e.image], e.answer.lower()
        if answer in column:
            targets[r, column[answer]] = known[r, column[answer]] = 1.0
        elif answer in YES_NO:
            named = _named(e.question, column)
            if answer == "yes":
                for c in named:
                    targets[r, c] = known[r, c] = 1.0
            elif len(named) == 1:
                absent.append((r, named[0]))
    for r, c in absent:  # "present" wins over a contradicting "absent"
        if not targets[r, c]:
            known[r, c] = 1.0
    return targets, known, words


def answer_pairs(examples: list, images, words: list[str], most: int = 16) -> tuple[Any, Any]:
    """(pairs, mask): which two answer words (columns of `words`) one object of each image shows
    together, or does not, read from the questions — so that an image's tokens bind a colour to
    its shape on the same patch rather than on two neighbouring ones:

    - an open question answered with a word and naming another ("What colour is the heart?" —
      pink): one object shows both (target 1);
    - a yes/no question naming exactly two answer words ("Is there a pink heart?"): one object
      shows both when "yes", none does when "no" (target 0 — the hallucination a model must not make).

    `pairs` is (len(images), most, 3): (word a, word b, target) per row, `mask` (len(images), most)
    1 where a pair is set (at most `most` per image, the first ones read)."""
    import torch

    column = {w: i for i, w in enumerate(words)}
    row = {image: i for i, image in enumerate(images)}
    found: list[dict[tuple[int, int], float]] = [{} for _ in row]
    for e in examples:
        if getattr(e, "kind", "qa") != "qa" or e.image not in row:
            continue
        answer = e.answer.lower()
        named = _named(e.question, column)
        seen = found[row[e.image]]
        if answer in column:
            for c in named:
                if c != column[answer]:
                    seen[tuple(sorted((column[answer], c)))] = 1.0
        elif answer in YES_NO and len(named) == 2:
            key = tuple(sorted(named))
            seen[key] = max(seen.get(key, 0.0), 1.0 if answer == "yes" else 0.0)  # "together" wins
    pairs = torch.zeros(len(row), most, 3, dtype=torch.long)
    mask = torch.zeros(len(row), most)
    for r, seen in enumerate(found):
        for k, ((a, b), target) in enumerate(list(seen.items())[:most]):
            pairs[r, k] = torch.tensor([a, b, int(target)])
            mask[r, k] = 1.0
    return pairs, mask


#: Number words read as counts ("two"), besides digits.
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
#: The largest count the encoder's count head and the adapter's count units know; larger answers are left out.
MAX_COUNT = 10


def _number(answer: str) -> int | None:
    text = answer.strip().lower().rstrip(".")
    value = int(text) if text.isdigit() else NUMBER_WORDS.index(text) if text in NUMBER_WORDS else None
    return value if value is not None and value <= MAX_COUNT else None


class Counts(NamedTuple):
    """What the count questions say (`answer_counts`): `targets` (images, keys) the count, -100
    where no question tells; `keys` what each column counts — the answer words its questions name,
    () for everything ("How many shapes are there?"); `said` how the data writes each number."""

    targets: Any
    keys: list[tuple[str, ...]]
    said: dict[int, str]

    def units(self) -> list[tuple[int, int]]:
        """(key column, count) for each count an image is told to hold: the adapter's count units."""
        return [(k, n) for k in range(len(self.keys)) for n in sorted(set(self.targets[:, k].tolist()) - {-100})]


def answer_counts(examples: list, images, words: list[str], keys: list[tuple[str, ...]] | None = None) -> Counts:
    """How many of something each image shows, read from its questions answered with a number
    (a digit or "zero" ... "ten"): the thing counted is the answer words the question names
    ("How many pink hearts?" — (heart, pink); none: ("How many objects?") everything). A key
    counts when at least `MIN_WORD_COUNT` questions ask it (`keys`: these instead, for held-out
    images). An image-level fact: the encoder learns it on its CLS token, which LLaVA's "full"
    strategy passes to the LLM, so the LLM reads "2" rather than counting patch tokens itself."""
    import torch

    column = {w: i for i, w in enumerate(words)}
    row = {image: i for i, image in enumerate(images)}
    asked: list[tuple[Any, tuple[str, ...], int]] = []
    forms: dict[int, Counter] = {}
    for e in examples:
        if getattr(e, "kind", "qa") != "qa" or (n := _number(e.answer)) is None:
            continue
        asked.append((e.image, tuple(sorted(words[c] for c in _named(e.question, column))), n))
        forms.setdefault(n, Counter())[e.answer.strip().lower().rstrip(".")] += 1
    if keys is None:  # as answer_words' vocabulary: read from all the examples
        often = Counter(key for _, key, _ in asked)
        keys = sorted(k for k, n in often.items() if n >= MIN_WORD_COUNT)
    at = {k: i for i, k in enumerate(keys)}
    targets = torch.full((len(row), len(keys)), -100, dtype=torch.long)
    for image, key, n in asked:
        if key in at and image in row:
            targets[row[image], at[key]] = n
    return Counts(targets, keys, {n: c.most_common(1)[0][0] for n, c in sorted(forms.items())})
