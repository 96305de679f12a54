"""Resume overhead of `mmagent eval`: what `--resume` costs when there is nothing left to do, and
what appending one results row (flushed and fsynced) costs.

A zero-cost pipeline (a user graph `FILE.py:graph` that answers at once) over N items of user data
(`--data FILE.jsonl`, each item with its own 32x32 PNG, or text only): the first run, then the same
run with `resume=True` when all N rows are done — reading results.jsonl and the item set (which
checks every image again), then the summary and the reports. Times per phase come from timers
patched around the runner's functions. Then the cost of one row appended by `ResultsWriter`, with
its fsync and without (os.fsync made a no-op), alone and inside a whole run. Medians of --repeats.

    .venv/bin/python benchmarks/eval_resume.py [--sizes 1000,10000] [--repeats 3] [--rows 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from mmagent.eval import report, stats
from mmagent.eval import runner as eval_runner
from mmagent.eval.results import RESULTS, ResultsWriter, read_rows
from mmagent.eval.runner import run_eval

GRAPH = '''
from langgraph.graph import END, START, MessagesState, StateGraph
from langchain_core.messages import AIMessage

def answer(state):
    q = state["messages"][-1]
    text = q.content if isinstance(q.content, str) else " ".join(
        b.get("text", "") for b in q.content if b.get("type") == "text")
    return {"messages": [AIMessage("3" if "shapes" in text else "no")]}

builder = StateGraph(MessagesState)
builder.add_node("answer", answer)
builder.add_edge(START, "answer")
builder.add_edge("answer", END)
graph = builder.compile()
'''

QUESTIONS = (("How many shapes are there?", "3", "count"), ("Is there a red circle?", "no", "existence"),
             ("What colour is the square?", "blue", "colour"))


def write_data(folder: Path, n: int, images: bool) -> Path:
    """N items; with `images`, each its own 32x32 PNG (distinct pixels, so distinct hashes)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        question, answer, kind = QUESTIONS[i % len(QUESTIONS)]
        row = {"id": f"q{i}", "question": question, "answer": answer, "type": kind}
        if images:
            (folder / "img").mkdir(exist_ok=True)
            Image.new("RGB", (32, 32), (i % 256, (i // 256) % 256, (i // 65536) % 256)).save(folder / "img" / f"{i}.png")
            row["image"] = f"img/{i}.png"
        lines.append(json.dumps(row))
    path = folder / "items.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


class Timers:
    """Inclusive wall time of labelled functions, patched in while active."""

    def __init__(self, targets):
        self.targets, self.seconds, self._undo = targets, Counter(), []

    def __enter__(self):
        for owner, attr, label in self.targets:
            original = getattr(owner, attr)

            def timed(*args, _original=original, _label=label, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.seconds[_label] += time.perf_counter() - start

            setattr(owner, attr, timed)
            self._undo.append((owner, attr, original))
        return self

    def __exit__(self, *exc):
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)


PHASES = (
    (eval_runner, "load_items", "items (read the data, check every image)"),
    (eval_runner, "_prepare_out", "results.jsonl read (+ run.json)"),
    (eval_runner, "finish", "summary + reports"),
    (stats, "summarize", "  summarize (stats)"),
    (report, "write_reports", "  write_reports (md, html, json)"),
)


@contextmanager
def no_fsync():
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def timed_run(**kwargs) -> tuple[float, Counter, int]:
    with Timers(PHASES) as timers:
        start = time.perf_counter()
        run = run_eval(**kwargs)
        seconds = time.perf_counter() - start
    return seconds, timers.seconds, run.new_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="item counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2000, help="rows appended in the per-row test")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    command = ".venv/bin/python benchmarks/eval_resume.py " + shlex.join(sys.argv[1:])

    table = []
    with tempfile.TemporaryDirectory(prefix="mmagent-eval-resume-") as tmp:
        root = Path(tmp)
        graph_file = root / "instant.py"
        graph_file.write_text(GRAPH)
        pipeline = f"{graph_file}:graph"
        sample_row = None
        warm = write_data(root / "warm-up", 5, True)  # imports, the graph file, PIL: before timing
        timed_run(data=str(warm), pipelines=[pipeline], out=root / "warm-up-out")
        for n in sizes:
            for images in (True, False):
                label = f"{n} items, " + ("an image each" if images else "text only")
                data = write_data(root / f"data-{n}-{int(images)}", n, images)
                firsts, resumes, phases = [], [], []
                for rep in range(args.repeats):
                    out = root / f"out-{n}-{int(images)}-{rep}"
                    seconds, _, new = timed_run(data=str(data), pipelines=[pipeline], out=out)
                    assert new == n, (new, n)
                    firsts.append(seconds)
                    seconds, resumed, new = timed_run(data=str(data), pipelines=[pipeline], out=out, resume=True)
                    assert new == 0, new
                    resumes.append(seconds)
                    phases.append(resumed)
                    if sample_row is None:
                        sample_row = read_rows(out / RESULTS)[0]
                    print(f"  {label}, repeat {rep + 1}: run {firsts[-1]:.2f} s, no-op resume {resumes[-1]:.3f} s",
                          flush=True)
                size_kb = (root / f"out-{n}-{int(images)}-0" / RESULTS).stat().st_size / 1024
                table.append((label, n, statistics.median(firsts), statistics.median(resumes),
                              {k: statistics.median(p[k] for p in phases) for _, _, k in PHASES}, size_kb,
                              ))

        # one row appended: alone, with and without fsync (interleaved in blocks)
        per_row: dict[str, list[float]] = {"with fsync": [], "without fsync": []}
        for rep in range(args.repeats):
            for name in per_row:
                folder = root / f"rows-{name.replace(' ', '-')}-{rep}"
                with ResultsWriter(folder) as writer, (no_fsync() if name == "without fsync" else _null()):
                    start = time.perf_counter()
                    for i in range(args.rows):
                        writer.write({**sample_row, "item_id": f"r{i}"})
                    per_row[name].append((time.perf_counter() - start) / args.rows)
        # and inside a whole run of the smallest size
        n = sizes[0]
        data = root / f"data-{n}-1" / "items.jsonl"
        in_run: dict[str, list[float]] = {"with fsync": [], "without fsync": []}
        for rep in range(args.repeats):
            for name in in_run:
                with no_fsync() if name == "without fsync" else _null():
                    seconds, _, _ = timed_run(data=str(data), pipelines=[pipeline],
                                              out=root / f"fs-{name.replace(' ', '-')}-{rep}")
                in_run[name].append(seconds / n)

    print(f"\n`{command}`\n")
    print(f"Zero-cost pipeline (`FILE.py:graph` answering at once), batch size 1, median of {args.repeats}:\n")
    print("| items | first run s | ms/item | no-op resume s | items | results.jsonl read | summary + reports "
          "| (summarize) | (write_reports) | results.jsonl |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, n, first, resume, ph, size_kb in table:
        keys = [k for _, _, k in PHASES]
        print(f"| {label} | {first:.2f} | {first / n * 1000:.2f} | {resume:.3f} | "
              + " | ".join(f"{ph[k]:.3f}" for k in keys) + f" | {size_kb / 1024:.2f} MiB |")
    print(f"\nOne row appended by ResultsWriter ({len(json.dumps(sample_row))} bytes, {args.rows} rows):")
    for name, values in per_row.items():
        print(f"  {name}: {statistics.median(values) * 1e6:.0f} µs/row")
    print(f"Inside a whole run of {sizes[0]} items (an image each), per item:")
    for name, values in in_run.items():
        print(f"  {name}: {statistics.median(values) * 1000:.2f} ms/item")
    fs = statistics.median(per_row["with fsync"]) - statistics.median(per_row["without fsync"])
    print(f"fsync adds {fs * 1e6:.0f} µs a row alone, "
          f"{(statistics.median(in_run['with fsync']) - statistics.median(in_run['without fsync'])) * 1000:.2f} ms "
          "an item in a run")


@contextmanager
def _null():
    yield


if __name__ == "__main__":
    main()
