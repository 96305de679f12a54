"""Eval throughput: does `mmagent eval` add anything on top of the backend's own batching?

The same held-out scene-world questions (the `scenes-vqa` suite: every question type, 128 px scenes
of a seed no training run used) through the adapter route with the shipped scene VLM, four ways:

  (a) loop     a batch-1 loop of `vlm.chat` on the exact messages the adapter graph builds
  (b) batch    the backend's own `vlm.batch(requests)` in chunks of B, same requests
  (c) eval B=1 `run_eval(suite="scenes-vqa", pipelines=["adapter"], batch_size=1)`
  (d) eval B   `run_eval(..., batch_size=B)`

plus (e) and (f), `run_eval` with a zero-cost VLM (answers instantly) at B=1 and B: what the runner
and the adapter graph cost per item on their own. The messages of (a)/(b) are recorded by running
the adapter graph once per item with a recording VLM behind the same batching proxy the runner
uses, so they carry the suite's `max_tokens` cap exactly as `run_eval` hands them to `batch`.
(a) and (b) run in a worker thread while the main thread keeps an OpenMP team too, as in a
`run_eval` (LangGraph runs sync nodes in its executor's threads): libgomp spins its idle threads
unless it manages more threads than there are CPUs, and on a CPU busy with other processes a
single spinning team made the same `chat` 5-8x slower (3.3 s vs 0.47 s a call on 2 loaded cores).
The model is loaded (and run once) before timing; each eval run gets a fresh `--out`; the ways are
interleaved over `--repeats` and medians printed, with the ratios (d)/(b) (target >= 0.9: the
runner adds nothing), (d)/(c), (b)/(a), and how many predictions of (c) and (d) differ.
A last run of (e) with timers patched around the runner's and the graph's functions shows where the
runner's own time goes per item; `--profile` adds a cProfile of (e) (main thread only: graph nodes
run in LangGraph's worker threads, which the timers cover). CPU seconds are the process's.

    .venv/bin/python benchmarks/eval_throughput.py [--items 64] [--batch 16] [--repeats 3] [--profile]
        [--linger S ...]   # also (d) with the Batcher's linger at S seconds (default: batching.LINGER)
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import pstats
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mmagent import runner
from mmagent.config import load_settings
from mmagent import batching
from mmagent.eval.core import get_suites
from mmagent.eval.runner import load_items, run_eval
from mmagent.toolbox import Toolbox

SUITE = "scenes-vqa"


class Recorder:
    """Stands where a `Batcher` stands behind the batching proxy: records each request as the runner
    would hand it to `backend.batch` (messages, and the key: capped max_tokens, temperature, stop)
    and answers at once (so it is also the zero-cost VLM)."""

    def __init__(self):
        self.requests: list[tuple] = []
        self.batches: list[int] = []

    def submit(self, messages, key=()):
        max_tokens, temperature, stop = key
        self.requests.append((list(messages), max_tokens, temperature, tuple(stop or ())))
        return "yes"


class InstantVLM(batching.BatchedVLM):
    """The zero-cost VLM: the real backend's names, answers at once (`chat` through a `Recorder`,
    `batch` directly), so the runner still wraps and batches it as it would the real one."""

    def batch(self, requests, **kwargs):
        return ["yes"] * len(requests)


class Timers:
    """Inclusive wall time per labelled function (any thread), patched in for a breakdown run."""

    def __init__(self):
        self.seconds: Counter = Counter()
        self.calls: Counter = Counter()
        self._undo: list = []
        self.labels: list[str] = []

    def patch(self, owner, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        def timed_generator(*args, **kwargs):  # the time until it is used up
            start = time.perf_counter()
            try:
                return (yield from original(*args, **kwargs))
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        if inspect.isgeneratorfunction(original):
            timed = timed_generator

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))
        self.labels.append(label)

    def __enter__(self):
        from mmagent.graphs import adapter, kit
        from mmagent.eval import results
        from mmagent.eval import runner as eval_runner
        from mmagent.langchain import ChatMMAgent

        for owner, attr, label in (
            (eval_runner.Evaluator, "run_one", "Evaluator.run_one (all of an item)"),
            (runner, "request_message", "  request_message (load_media: decode, hash, store)"),
            (runner, "build_pipeline", "  build_pipeline (graph build + compile)"),
            (runner, "_run", "  graph.stream (the graph run)"),
            (kit.Nodes, "begin", "    node begin"),
            (kit.Nodes, "transcribe", "    node transcribe"),
            (adapter._AdapterNodes, "see", "    node see"),
            (kit.Nodes, "intent", "      intent (embedder)"),
            (kit.Nodes, "_answer", "      VLM call via LangChain (zero-cost VLM)"),
            (ChatMMAgent, "_generate", "        ChatMMAgent._generate"),
            (eval_runner.Evaluator, "row", "  Evaluator.row (metric)"),
            (results.ResultsWriter, "write", "ResultsWriter.write (fsync)"),
        ):
            self.patch(owner, attr, label)
        return self

    def __exit__(self, *exc):
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)


class Lingering:
    """Runs `run` with `mmagent.batching.Batcher`'s `linger` default replaced (this process only)."""

    def __init__(self, run, linger: float):
        self.run, self.linger = run, linger

    def __call__(self):
        original = batching.Batcher.__init__
        defaults = original.__defaults__
        names = original.__code__.co_varnames[1:original.__code__.co_argcount]
        position = names.index("linger") - (len(names) - len(defaults))
        original.__defaults__ = defaults[:position] + (self.linger,) + defaults[position + 1:]
        try:
            return self.run()
        finally:
            original.__defaults__ = defaults


def counting(vlm):
    """Wrap `vlm.batch` on the instance so the sizes of the batches the runner makes are known."""
    sizes: list[int] = []
    inner = vlm.batch

    def batch(requests, **kwargs):
        sizes.append(len(requests))
        return inner(requests, **kwargs)

    vlm.batch = batch
    return sizes


def record_requests(vlm, toolbox: Toolbox, items, suite, settings) -> list[tuple]:
    recorder = Recorder()
    recording = toolbox.with_backends({"vlm": batching.BatchedVLM(vlm, recorder, suite.max_tokens)})
    for item in items:
        runner.run(suite.prompt_for(item), images=item.images, pipeline="adapter", toolbox=recording,
                   settings=settings)
    if len(recorder.requests) != len(items):
        sys.exit(f"expected one VLM call per item, recorded {len(recorder.requests)} for {len(items)}")
    return recorder.requests


def run_loop(vlm, requests) -> list[str]:
    return [vlm.chat(m, max_tokens=mt, temperature=t, stop=list(s) or None).text for m, mt, t, s in requests]


def run_batch(vlm, requests, size: int) -> list[str]:
    out: list[str] = []
    for start in range(0, len(requests), size):
        chunk = requests[start:start + size]
        _, mt, t, s = chunk[0]
        assert all(r[1:] == (mt, t, s) for r in chunk), "requests with different options"
        out += vlm.batch([r[0] for r in chunk], max_tokens=mt, temperature=t, stop=list(s) or None)
    return out


class Eval:
    """One `run_eval` into a fresh folder; records when the first and the last row came."""

    def __init__(self, root: Path, toolbox: Toolbox, items: int, batch: int, seed: int, settings):
        self.root, self.toolbox, self.items, self.batch, self.seed, self.settings = \
            root, toolbox, items, batch, seed, settings
        self.runs = 0

    def __call__(self):
        self.runs += 1
        out = Path(tempfile.mkdtemp(prefix=f"run{self.runs}-b{self.batch}-", dir=self.root))
        marks: list[float] = []
        start = time.perf_counter()
        run = run_eval(suite=SUITE, pipelines=["adapter"], out=out, limit=self.items, batch_size=self.batch,
                       seed=self.seed, toolbox=self.toolbox, settings=self.settings,
                       progress=lambda _p, _d, _t: marks.append(time.perf_counter()))
        total = time.perf_counter() - start
        errors = [r["error"] for r in run.rows if r["error"]]
        if errors:
            sys.exit(f"eval rows with errors: {errors[:3]}")
        phases = {"items": marks[0] - start, "rows": marks[-1] - marks[0], "reports": start + total - marks[-1]}
        return {r["item_id"]: r["prediction"] for r in run.rows}, phases, run.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="cProfile the runner with a zero-cost VLM")
    parser.add_argument("--linger", type=float, action="append", default=[],
                        help="also run (d) with the Batcher's linger set to this many seconds (repeatable)")
    args = parser.parse_args()
    command = ".venv/bin/python benchmarks/eval_throughput.py " + shlex.join(sys.argv[1:])
    settings = load_settings()
    suite = get_suites().get(SUITE)

    toolbox = Toolbox(settings=settings)
    why = toolbox.why_unavailable("vlm")
    if why:
        sys.exit(f"the VLM is not available here: {why} (run `mmagent models prepare`)")
    vlm = toolbox.get("vlm")
    embed = "none" if not toolbox.has("embed") else f"{toolbox.get('embed').name}:{toolbox.get('embed').model_id}"
    import torch

    print(f"vlm: {vlm.name}:{vlm.model_id} on {vlm.device}; embedder for intents: {embed}; "
          f"torch threads {torch.get_num_threads()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="mmagent-eval-throughput-") as tmp:
        root = Path(tmp)
        items, _ = load_items(suite, limit=args.items, seed=args.seed, media_dir=root / "media")
        types = Counter(i.type for i in items)
        print(f"{len(items)} items of {SUITE} (seed {args.seed}): "
              + ", ".join(f"{k} {v}" for k, v in sorted(types.items())), flush=True)
        requests = record_requests(vlm, toolbox, items, suite, settings)
        print(f"recorded {len(requests)} VLM requests (max_tokens {requests[0][1]})", flush=True)

        # (a) and (b) run in a worker thread, as the runner's graph nodes do, with an OpenMP team
        # alive in the main thread too: the same threads as in a run_eval (see the module doc)
        torch.ones(1 << 22).mul_(2).sum()
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="direct")
        # warm-up: the model, both code paths, the graph, the embedder
        worker.submit(run_loop, vlm, requests[:2]).result()
        worker.submit(run_batch, vlm, requests[: args.batch], args.batch).result()
        sizes = counting(vlm)
        Eval(root, toolbox, min(4, args.items), 2, args.seed, settings)()
        sizes.clear()

        instant = toolbox.with_backends({"vlm": InstantVLM(vlm, Recorder(), suite.max_tokens)})
        ways = {
            "(a) loop of vlm.chat": lambda: (worker.submit(run_loop, vlm, requests).result(), None, None),
            f"(b) vlm.batch, B={args.batch}": lambda: (
                worker.submit(run_batch, vlm, requests, args.batch).result(), None, None),
            "(c) run_eval, B=1": Eval(root, toolbox, args.items, 1, args.seed, settings),
            f"(d) run_eval, B={args.batch}": Eval(root, toolbox, args.items, args.batch, args.seed, settings),
            "(e) run_eval, zero-cost VLM, B=1": Eval(root, instant, args.items, 1, args.seed, settings),
            f"(f) run_eval, zero-cost VLM, B={args.batch}": Eval(root, instant, args.items, args.batch, args.seed,
                                                                 settings),
        }
        for linger in args.linger:
            ways[f"(d) run_eval, B={args.batch}, linger {linger:g} s"] = Lingering(
                Eval(root, toolbox, args.items, args.batch, args.seed, settings), linger)
        names = list(ways)
        times: dict[str, list[float]] = {n: [] for n in names}
        cpus: dict[str, list[float]] = {n: [] for n in names}
        phases: dict[str, list[dict]] = {n: [] for n in names}
        answers: dict[str, list] = {n: [] for n in names}
        rows: dict[str, list] = {}
        batch_sizes: dict[str, list[int]] = {}
        for rep in range(args.repeats):
            for name in names:
                sizes.clear()
                start, cpu = time.perf_counter(), time.process_time()
                predictions, phase, got = ways[name]()
                times[name].append(time.perf_counter() - start)
                cpus[name].append(time.process_time() - cpu)
                answers[name].append(predictions)
                if phase:
                    phases[name].append(phase)
                    rows[name] = got
                batch_sizes[name] = list(sizes)
                print(f"  repeat {rep + 1}: {name}: {times[name][-1]:.2f} s", flush=True)

        with Timers() as timers:
            start = time.perf_counter()
            Eval(root, instant, args.items, 1, args.seed, settings)()
            breakdown_total = time.perf_counter() - start
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            Eval(root, instant, args.items, 1, args.seed, settings)()
            profile.disable()

    n = len(items)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    a, b, c, d, e, f = names[:6]
    print(f"\n`{command}`\n")
    print(f"{n} scenes-vqa items, adapter pipeline, scene VLM ({vlm.device}, torch threads "
          f"{torch.get_num_threads()}), median of {args.repeats}\n")
    print("| way | median s | items/s | s/item | CPU s/item | batches the VLM ran (last repeat) |")
    print("|---|---|---|---|---|---|")
    for name in names:
        med = statistics.median(times[name])
        shown = Counter(batch_sizes.get(name, []))
        batches = ", ".join(f"{k}×{v}" for k, v in sorted(shown.items(), reverse=True)) if shown else "—"
        if name == a:
            batches = f"1×{n} (chat)"
        elif name == b:
            batches = ", ".join(f"{k}×{v}" for k, v in sorted(
                Counter(min(args.batch, n - s) for s in range(0, n, args.batch)).items(), reverse=True))
        elif name in (e, f):
            batches = "— (no model)"
        print(f"| {name} | {med:.2f} | {rate[name]:.2f} | {med / n:.3f} | "
              f"{statistics.median(cpus[name]) / n:.3f} | {batches} |")
    print()
    print(f"(d)/(b) = {rate[d] / rate[b]:.2f}  (target >= 0.9: the runner adds nothing to the backend's batching)")
    for name in names[6:]:
        print(f"{name[:3]}/(b) with {', '.join(name.split(', ')[2:])} = {rate[name] / rate[b]:.2f}")
    print(f"(d)/(c) = {rate[d] / rate[c]:.2f}  (batched eval vs batch-1 eval)")
    print(f"(b)/(a) = {rate[b] / rate[a]:.2f}  (the backend's batch vs a loop of chat)")
    print(f"(c)/(a) = {rate[c] / rate[a]:.2f}  (batch-1 eval vs a loop of chat)")
    for name in (c, d, e, f):
        ph = {k: statistics.median(p[k] for p in phases[name]) for k in ("items", "rows", "reports")}
        print(f"{name}: making the items {ph['items']:.2f} s, rows {ph['rows']:.2f} s, reports {ph['reports']:.2f} s")
    per_item_e = statistics.median(times[e]) / n
    per_item_f = statistics.median(times[f]) / n
    print(f"runner + adapter graph alone (zero-cost VLM): {per_item_e * 1000:.1f} ms/item at B=1, "
          f"{per_item_f * 1000:.1f} ms/item at B={args.batch}")
    stage = {name: {k: statistics.mean(r["stages"].get(k, 0.0) for r in rows[name]) for k in ("embed", "vlm")}
             for name in (c, d)}
    for name in (c, d):
        print(f"{name}: mean stage seconds per item: embed {stage[name]['embed']:.3f}, vlm {stage[name]['vlm']:.3f}")

    print(f"\nWhere the runner's own time goes: `run_eval` with the zero-cost VLM, B=1, {n} items, "
          f"{breakdown_total:.2f} s (inclusive wall time per item; nested lines are part of the line above):\n")
    print("| function | ms/item | calls |")
    print("|---|---|---|")
    for label in timers.labels:
        print(f"| {label} | {timers.seconds[label] / n * 1000:.1f} | {timers.calls[label]} |")

    def differ(x: str, y: str) -> int:
        first, second = answers[x][0], answers[y][0]
        if isinstance(first, dict):
            return sum(first[k] != second[k] for k in first)
        return sum(p != q for p, q in zip(first, second))

    runs_c = [sum(p[k] != answers[c][0][k] for k in p) for p in answers[c]]
    runs_d = [sum(p[k] != answers[d][0][k] for k in p) for p in answers[d]]
    ids = [i.id for i in items]
    as_list = {name: [answers[name][0][i] for i in ids] for name in (c, d)}
    print(f"\npredictions that differ: (c) vs (d) {differ(c, d)} of {n}; (a) vs (b) {differ(a, b)}; "
          f"(a) vs (c) {sum(p != q for p, q in zip(answers[a][0], as_list[c]))}; "
          f"(b) vs (d) {sum(p != q for p, q in zip(answers[b][0], as_list[d]))}; "
          f"across repeats: (c) {max(runs_c)}, (d) {max(runs_d)}")

    if args.profile:
        stream = io.StringIO()
        stats = pstats.Stats(profile, stream=stream)
        stats.sort_stats("cumulative").print_stats(30)
        print(f"\ncProfile of (e) (zero-cost VLM, B=1, {n} items), cumulative:\n{stream.getvalue()}")


if __name__ == "__main__":
    main()
