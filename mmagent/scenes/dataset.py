"""Datasets on disk: `write_dataset` (atomic) and the loaders.

Layout of a dataset directory:
    images/000000.png ...   the rendered scenes
    scenes.jsonl            one scene a line: id, image, caption, description, objects, word, ...
    questions.jsonl         one question a line: id, scene, image, question, answer, type (and, for
                            position questions, explained: the answer with its reasons)
    dataset.json            how it was made (seed, options) and counts per question type
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..folders import folder_written_whole
from .generate import check_options, generate_scene
from .questions import QUESTION_TYPES
from .vocab import FORMAT_VERSION

FORMAT = "mmagent-scenes"
MAX_SCENES = 10_000_000


def write_dataset(out_dir: str | os.PathLike, n: int, seed: int | str = 0, *, size: int = 128,
                  max_objects: int = 4, word_prob: float = 0.3, overwrite: bool = False) -> Path:
    """Generate scenes 0..n-1 of `seed` into `out_dir`; returns its path.

    Everything is written into a temporary sibling directory that replaces `out_dir` only once
    complete, so an interrupted run leaves no half-written dataset. A non-empty `out_dir` is
    refused unless `overwrite=True`, and even then only when it is a scenes dataset (or empty):
    `--overwrite` never deletes an unrelated directory."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SCENES:
        raise InputError(f"n must be an integer from 1 to {MAX_SCENES:,}, got {n!r}")
    check_options(size, max_objects, word_prob)
    ours = lambda folder: (folder / "dataset.json").is_file() or (folder / "scenes.jsonl").is_file()  # noqa: E731
    with folder_written_whole(out_dir, overwrite=overwrite, ours=ours, what="a scenes dataset") as tmp:
        (tmp / "images").mkdir()
        types: Counter[str] = Counter()
        with_word = 0
        with open(tmp / "scenes.jsonl", "w", encoding="utf-8") as scenes_file, \
                open(tmp / "questions.jsonl", "w", encoding="utf-8") as questions_file:
            from .drawing import render

            for index in range(n):
                scene = generate_scene(seed, index, size=size, max_objects=max_objects, word_prob=word_prob)
                image = f"images/{index:06d}.png"
                render(scene).save(tmp / image, format="PNG")
                record = scene.to_dict()
                scenes_file.write(_line({"id": record.pop("id"), "image": image, **record}))
                for k, q in enumerate(scene.questions):
                    questions_file.write(_line({"id": f"{index:06d}-{k}", "scene": index, "image": image,
                                                "question": q.question, "answer": q.answer, "type": q.type}
                                               | ({"explained": q.explained} if q.explained else {})))
                    types[q.type] += 1
                with_word += scene.word is not None
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "seed": seed, "n": n, "size": size,
                "max_objects": max_objects, "word_prob": word_prob, "scenes_with_word": with_word,
                "questions": sum(types.values()),
                "question_types": {t: types[t] for t in QUESTION_TYPES}}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return Path(out_dir).expanduser().absolute()


def _line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path.parent} is not a scenes dataset (no {path.name})")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_questions(dataset_dir: str | os.PathLike, types: str | list[str] | tuple[str, ...] | None = None
                   ) -> list[dict[str, Any]]:
    """The questions of a dataset (optionally only some types), each with `image_path` added:
    the absolute path of its image (`image` stays relative to the dataset directory)."""
    root = Path(dataset_dir).expanduser().absolute()
    wanted = {types} if isinstance(types, str) else set(types) if types else None
    if wanted and wanted - set(QUESTION_TYPES):
        raise InputError(f"unknown question type(s): {', '.join(sorted(wanted - set(QUESTION_TYPES)))}")
    rows = _read_jsonl(root / "questions.jsonl")
    return [{**q, "image_path": str(root / q["image"])} for q in rows if wanted is None or q["type"] in wanted]


def load_scenes(dataset_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The scenes of a dataset (as in scenes.jsonl), each with `image_path` added."""
    root = Path(dataset_dir).expanduser().absolute()
    return [{**s, "image_path": str(root / s["image"])} for s in _read_jsonl(root / "scenes.jsonl")]
