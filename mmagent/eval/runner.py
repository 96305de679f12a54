"""Run an evaluation: items × pipelines → `DIR/results.jsonl` (row by row), then the reports.

    run_eval(suite="scenes-vqa", pipelines=["tools", "adapter"], out="runs/a", limit=60, batch_size=8)

Each item goes through the pipeline's own graph (`mmagent.run`, or any `FILE.py:graph`), exactly
as a user's request would; B items run at once and the chat backends batch their calls
(`mmagent.batching`). Every finished (item, pipeline) is appended to results.jsonl at once,
so a killed run loses at most the items in flight, and `resume=True` skips what is there.
Pipelines run one after another, so each one's latency and peak memory are its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings, load_settings
from ..errors import InputError
from .core import EvalItem, Metric, Suite, get_metrics, get_suites
from .data import Skipped, load_data
from .results import RESULTS, ResultsWriter, iter_keys, read_rows

ENGINES = ("local", "ray")
#: What a run records in DIR/run.json and checks again on --resume.
RUN_FILE = "run.json"


@dataclass
class EvalRun:
    out: Path
    suite: Suite
    items: list[EvalItem]
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    skipped: list[Skipped] = field(default_factory=list)
    reports: dict[str, Path] = field(default_factory=dict)
    #: rows written by this call (not those found on --resume)
    new_rows: int = 0


# -- resolving what to run -----------------------------------------------------------------------------


def resolve_suite(suite: str | Suite | None, data: str | None, metric: str | None,
                  mapping: dict[str, str] | None = None) -> Suite:
    if (suite is None) == (data is None):
        raise InputError("give one of --suite NAME|FILE.yaml or --data FILE.jsonl|FOLDER|hf:ID")
    if isinstance(suite, Suite):
        chosen = suite
    elif suite is not None:
        if suite.endswith((".yaml", ".yml")) or os.sep in suite:
            from .suites import load_suite_file

            chosen = load_suite_file(suite)
        else:
            chosen = get_suites().get(suite)
    else:
        name = "data:" + Path(str(data)).name
        chosen = Suite(name=name, description=f"items from {data}", source=str(data), metric=metric or "auto",
                       mapping=dict(mapping or {}))
    if metric and metric != chosen.metric:
        chosen = dataclasses.replace(chosen, metric=metric)
    return chosen


def load_items(suite: Suite, *, limit: int | None, seed: int, media_dir: Path,
               checked: frozenset[str] = frozenset()) -> tuple[list[EvalItem], list[Skipped]]:
    """The suite's items (at most `limit`; the suite's own limit when None) and the rows skipped.
    Data items whose id is in `checked` (done for every pipeline: a resume) skip the media check."""
    limit = suite.limit if limit is None else limit
    generator = suite.generator()
    if generator is not None:
        items = list(generator(limit, seed, media_dir))
        return (items[:limit] if limit is not None else items), []
    source = str(suite.source)
    if suite.origin and not source.startswith("hf:") and not Path(source).is_absolute():
        source = str(Path(suite.origin).parent / source)
    loaded = load_data(source, media_dir=media_dir, mapping=suite.mapping, limit=limit, checked=checked)
    return loaded.items, loaded.skipped


def pick_metric(suite: Suite, items: Sequence[EvalItem]) -> Metric:
    """The suite's metric; "auto" (user data) chooses by the answers' shape: fields → field_match,
    VQAv2-style answer lists (3 or more) → vqa_accuracy, else `contains` (pipelines answer in
    sentences)."""
    name = suite.metric
    if name == "auto":
        if any(isinstance(i.answer, dict) for i in items):
            name = "field_match"
        elif any(isinstance(i.answer, list) and len(i.answer) >= 3 for i in items):
            name = "vqa_accuracy"
        else:
            name = "contains"
    return get_metrics().get(name)


def check_pipelines(pipelines: Sequence[str], toolbox: Any = None, settings: Settings | None = None) -> list[str]:
    """The pipeline names, each registered (with the roles it needs available here) or a
    loadable `FILE.py:graph`: a pipeline that cannot run fails before any item does."""
    from ..graphs_registry import get_graphs

    names = [p.strip() for p in pipelines if p.strip()]
    if not names:
        raise InputError("--pipelines: name at least one pipeline")
    if len(set(names)) != len(names):
        raise InputError("--pipelines: a pipeline is named twice")
    for name in names:
        if ":" in name:
            from ..runner import load_graph

            load_graph(name)
        else:
            spec = get_graphs().get(name)
            if toolbox is None:
                from ..toolbox import Toolbox

                toolbox = Toolbox(settings=settings)
            for role in spec.roles:
                reason = toolbox.why_unavailable(role)
                if reason:
                    raise InputError(f"pipeline '{name}' cannot run here: its {role} role is unavailable ({reason})")
    return names


# -- one item ------------------------------------------------------------------------------------------


class Evaluator:
    """Runs items through one pipeline and scores them; shared by the local and the Ray engine."""

    def __init__(self, pipeline: str, suite: Suite, metric: Metric, *, batch_size: int = 1, seed: int = 0,
                 settings: Settings | None = None, extra_metrics: Sequence[Metric] = (), toolbox: Any = None):
        self.pipeline, self.suite, self.metric, self.seed = pipeline, suite, metric, seed
        self.extra_metrics = list(extra_metrics)
        self.batch_size = max(1, batch_size)
        self.settings = settings or load_settings()
        #: items handed to `rows` and not finished (queued or running): what a batch waits for
        self._unfinished = 0
        self._lock = threading.Lock()
        self.batchers: dict[str, Any] = {}
        self.toolbox = None
        if ":" in pipeline:
            from ..runner import load_graph

            self._graph = load_graph(pipeline)
        else:
            from ..runner import build_pipeline
            from ..toolbox import Toolbox
            from ..batching import batching_toolbox

            self.toolbox, self.batchers = batching_toolbox(toolbox or Toolbox(settings=self.settings), self.batch_size,
                                                           self.in_flight, max_tokens=suite.max_tokens)
            # compiled once, run by every item's thread (a compiled graph without a checkpointer is reentrant)
            self._graph = build_pipeline(pipeline, self.toolbox)

    def in_flight(self) -> int:
        """Items not finished yet. A batcher waits for min(B, this) calls: counting only started
        items, the first threads of a wave found 1-3 running and ran batches of 1-3."""
        return self._unfinished

    def run_one(self, item: EvalItem) -> dict[str, Any]:
        """The results row of one item (errors recorded in the row, not raised)."""
        from .. import runner

        start = time.perf_counter()
        try:
            prompt = self.suite.prompt_for(item)
            result = runner._result_of(runner.run_graph(self._graph, prompt, images=item.images, audio=item.audio,
                                                        settings=self.settings))
            error, answer, steps, artifacts = None, result.answer, result.steps, result.artifacts
            route = (result.route or {}).get("route")
        except Exception as exc:  # noqa: BLE001 - one bad item is a row with its error, not a dead run
            error, answer, steps, artifacts, route = f"{type(exc).__name__}: {exc}", "", [], [], None
            prompt = item.question
        finally:
            with self._lock:
                self._unfinished -= 1
        seconds = time.perf_counter() - start
        row = self.row(item, prompt, answer, seconds, steps, artifacts, error)
        if route:
            row["route"] = route  # the route `auto` chose for this item
        return row

    def row(self, item: EvalItem, prompt: str, answer: str, seconds: float, steps: list[dict],
            artifacts: list[dict], error: str | None) -> dict[str, Any]:
        scores: dict[str, float] = {}
        if error is None:
            scores = dict(self.metric(answer, item))
            for extra in self.extra_metrics:
                scores.update({(k if k != "score" else extra.name): v for k, v in extra(answer, item).items()})
        score = float(scores.get("score", 0.0))
        stages: dict[str, float] = {}
        for step in steps:
            if isinstance(step.get("seconds"), (int, float)) and step.get("tool"):
                stages[step["tool"]] = round(stages.get(step["tool"], 0.0) + step["seconds"], 4)
        intermediates: dict[str, str] = {}
        for art in artifacts:
            if art.get("text"):
                kind = art.get("kind", "text")
                intermediates[kind] = (intermediates[kind] + "\n" + art["text"]) if kind in intermediates \
                    else art["text"]
        return {"item_id": item.id, "pipeline": self.pipeline, "type": item.type, "question": item.question,
                "prompt": prompt, "prediction": answer, "reference": item.answer, "score": round(score, 4),
                "correct": error is None and score >= self.metric.threshold,
                "metrics": {k: round(float(v), 4) for k, v in scores.items()}, "seconds": round(seconds, 4),
                "stages": stages, "intermediates": intermediates, "evidence": item.evidence, "error": error,
                "suite": self.suite.name, "seed": self.seed, "batch_size": self.batch_size,
                "images": list(item.images), "audio": list(item.audio)}

    def rows(self, items: Sequence[EvalItem]) -> Iterator[dict[str, Any]]:
        """Rows as items finish (B at a time when batch_size is B)."""
        with self._lock:
            self._unfinished += len(items)
        if self.batch_size == 1:
            for item in items:
                yield self.run_one(item)
            return
        with ThreadPoolExecutor(max_workers=self.batch_size, thread_name_prefix="mmagent-eval") as pool:
            futures = [pool.submit(self.run_one, item) for item in items]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise


class PeakMemory:
    """The process's peak resident memory (MiB) while it is active, sampled every 20 ms (Linux
    /proc; elsewhere ru_maxrss), and torch's peak CUDA allocation when CUDA is in use."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak_mb = interval, 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 ** 2)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self) -> PeakMemory:
        self.peak_mb = self.rss_mb()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="mmagent-eval-memory")
        self._thread.start()
        return self

    def current(self) -> float:
        self.peak_mb = max(self.peak_mb, self.rss_mb())
        return round(self.peak_mb, 1)

    def gpu_mb(self) -> float | None:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            return round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        return None

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (when loaded) torch: greedy decoding is deterministic anyway; this
    fixes whatever samples (bootstrap, generators)."""
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2 ** 32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


# -- the run ---------------------------------------------------------------------------------------------


def _run_config(suite: Suite, data: str | None, seed: int, metric: str) -> dict[str, Any]:
    return {"suite": suite.name, "data": data, "seed": seed, "metric": metric}


def _rows_before(out: Path, resume: bool) -> list[dict[str, Any]]:
    """The rows already in `out`: refused unless resuming (the folder is another run's)."""
    rows = read_rows(out / RESULTS)
    if rows and not resume:
        raise InputError(f"{out} already holds {len(rows)} results: add --resume to continue that run, "
                         "or choose another --out")
    return rows


def _prepare_out(out: Path, config: dict[str, Any], resume: bool) -> None:
    """Check a resumed folder holds this run (same suite, data, seed, metric); record the run."""
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / RUN_FILE
    if run_file.exists() and resume:
        try:
            before = json.loads(run_file.read_text())
        except ValueError:
            before = {}
        differs = [k for k in config if k in before and before[k] != config[k]]
        if differs:
            raise InputError(f"--resume: {out} holds a run with a different "
                             + ", ".join(f"{k} ({before[k]!r}, not {config[k]!r})" for k in differs))
    tmp = run_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=1))
    tmp.replace(run_file)


ProgressFn = Callable[[str, int, int], None]


def run_eval(*, suite: str | Suite | None = None, data: str | None = None, pipelines: Sequence[str] | None = None,
             out: str | os.PathLike[str], limit: int | None = None, batch_size: int = 1, resume: bool = False,
             seed: int = 0, engine: str = "local", metric: str | None = None, mapping: dict[str, str] | None = None,
             address: str | None = None, workers: int | None = None, settings: Settings | None = None,
             toolbox: Any = None, progress: ProgressFn | None = None, on_skipped: Callable[[Skipped], None] | None = None) -> EvalRun:
    """Evaluate `pipelines` on a suite's (or the user's) items into folder `out`; see the module doc.
    `toolbox`: the backends registered pipelines use (default: the configured ones; local engine).
    `progress(pipeline, done, total)` is called as rows finish; `on_skipped` for each bad data row."""
    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    settings = settings or load_settings()
    chosen = resolve_suite(suite, data, metric, mapping)
    names = check_pipelines(list(pipelines or chosen.pipelines), toolbox, settings)
    out = Path(out)
    seed_everything(seed)
    rows = _rows_before(out, resume)
    # On a resume, items already done by every pipeline need no second media check (a no-op
    # resume of 10,000 images spent 95 % of its time decoding them again).
    finished: dict[str, set[str]] = {}
    for row in rows:
        finished.setdefault(str(row["item_id"]), set()).add(str(row["pipeline"]))
    checked = frozenset(i for i, done_by in finished.items() if set(names) <= done_by)
    items, skipped = load_items(chosen, limit=limit, seed=seed, media_dir=out / "media", checked=checked)
    for bad in skipped:
        if on_skipped:
            on_skipped(bad)
    if skipped:
        _write_skipped(out, skipped)
    if not items:
        raise InputError(f"no usable items in {chosen.name}" + (f" ({len(skipped)} skipped)" if skipped else ""))
    chosen_metric = pick_metric(chosen, items)
    extras = [get_metrics().get(m) for m in chosen.extra_metrics if m != chosen_metric.name]
    _prepare_out(out, _run_config(chosen, data, seed, chosen_metric.name), resume)
    done = set(iter_keys(rows))
    new = 0
    if engine == "ray":
        from .ray_engine import ray_cluster

        cluster = ray_cluster(address)  # one cluster start for every pipeline
    else:
        cluster = contextlib.nullcontext()
    with cluster, ResultsWriter(out) as writer:
        for name in names:
            todo = [i for i in items if (i.id, name) not in done]
            total, finished = len(items), len(items) - len(todo)
            if progress:
                progress(name, finished, total)
            if not todo:
                continue
            if engine == "ray":
                from .ray_engine import ray_rows

                stream = ray_rows(name, chosen, chosen_metric, todo, batch_size=batch_size, seed=seed,
                                  address=address, workers=workers, extra_metrics=extras, settings=settings)
                memory = None
            else:
                evaluator = Evaluator(name, chosen, chosen_metric, batch_size=batch_size, seed=seed,
                                      settings=settings, extra_metrics=extras, toolbox=toolbox)
                stream, memory = evaluator.rows(todo), PeakMemory()
            with memory or contextlib.nullcontext():
                for row in stream:
                    if memory is not None:
                        row["peak_rss_mb"] = memory.current()
                        gpu = memory.gpu_mb()
                        if gpu is not None:
                            row["peak_gpu_mb"] = gpu
                    writer.write(row)
                    rows.append(row)
                    new += 1
                    finished += 1
                    if progress:
                        progress(name, finished, total)
    return finish(out, chosen, chosen_metric, items, rows, names, skipped, new)


def finish(out: Path, suite: Suite, metric: Metric, items: list[EvalItem], rows: list[dict], names: list[str],
           skipped: list[Skipped], new: int) -> EvalRun:
    """Summarize the rows of this run's items and pipelines and write the reports."""
    from .report import write_reports
    from .stats import summarize

    ids = {i.id for i in items}
    order = {n: k for k, n in enumerate(names)}
    mine = sorted((r for r in rows if r["item_id"] in ids and r["pipeline"] in order),
                  key=lambda r: order[r["pipeline"]])
    summary = summarize(mine, suite=suite.name, metric=metric.name)
    if skipped:
        summary["skipped"] = [{"where": s.where, "reason": s.reason} for s in skipped]
    reports = write_reports(out, summary, mine)
    return EvalRun(out=out, suite=suite, items=items, rows=mine, summary=summary, skipped=skipped,
                   reports=reports, new_rows=new)


def _write_skipped(out: Path, skipped: list[Skipped]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "skipped.jsonl"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"where": s.where, "reason": s.reason}) + "\n" for s in skipped))
    tmp.replace(path)
