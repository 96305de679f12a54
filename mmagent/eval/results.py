"""`DIR/results.jsonl`: one JSON object per finished (item, pipeline), appended as it finishes.

A row:

    {"item_id": "scene-3-q2", "pipeline": "adapter", "type": "count",
     "question": "How many shapes are there?", "prompt": "...",   # what the pipeline was asked
     "prediction": "There are 3 shapes.", "reference": ["3"],     # accepted answers, or a dict
     "score": 1.0, "correct": true, "metrics": {"score": 1.0, ...},   # the suite metric's numbers
     "seconds": 0.31,                                              # the item's wall time
     "stages": {"vlm": 0.29},                                      # seconds per step (tool/role)
     "intermediates": {"caption": "...", "ocr": "...", "transcript": "..."},  # what tools wrote
     "evidence": ["3"],                                            # facts the answer needs
     "error": null,                                                # or "BackendError: ..." (score 0)
     "peak_rss_mb": 812.4,                                         # process peak while this pipeline ran
     "suite": "scenes-vqa", "seed": 0, "batch_size": 8}

Rows are written whole, one `write` of one line, flushed and fsynced: a run killed at any moment
leaves at most one torn last line, which `read_rows` drops (and `--resume` redoes). A row's key is
(item_id, pipeline): resuming skips the keys present, so nothing is doubled.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError

RESULTS = "results.jsonl"


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a results file; a torn last line (a killed run) is dropped, any other bad line
    is an error (the file is not ours to guess about)."""
    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if number == len(lines):  # the last line, not newline-terminated: a write cut short
                break
            raise InputError(f"{path}:{number}: not a results row (invalid JSON)") from None
        if not isinstance(row, dict) or "item_id" not in row or "pipeline" not in row:
            raise InputError(f"{path}:{number}: not a results row (needs item_id and pipeline)")
        rows.append(row)
    return rows


def iter_keys(rows: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for row in rows:
        yield str(row["item_id"]), str(row["pipeline"])


class ResultsWriter:
    """Appends rows to `DIR/results.jsonl` from any thread; a torn tail left by a killed run is cut
    off first, so the file stays one valid row per line."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.path = Path(folder) / RESULTS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._truncate_torn_tail()
        self._fh = open(self.path, "ab")

    def _truncate_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)

    def write(self, row: dict[str, Any]) -> None:
        line = (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            self._fh.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
