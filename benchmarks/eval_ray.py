"""Eval on Ray vs the local engine: the same items, the same pipeline, on this machine.

The `scenes-vqa` suite (held-out 128 px scenes, every question type; seed 0) through the `adapter`
pipeline with the shipped scene VLM (offline):

  local   `run_eval(..., engine="local", batch_size=B)`: one process, torch on every core
  ray     `run_eval(..., engine="ray", workers=W, batch_size=B/W)`: W actors on a local Ray
          cluster, each with its own model (Ray gives each actor one CPU thread: OMP_NUM_THREADS)

Each run is timed from the pipeline's first progress call (the items are made) to its last row.
The local figure is taken warm (model loaded by a first, timed "cold" run) — the Ray figure always
includes the workers' start and model load, since every `run_eval --engine ray` pays them — and
separately:
  - cluster start: `ray.init()` here (what `--engine ray` pays when no cluster is running),
  - workers' first rows: actor start + model load + one chunk,
  - steady state: the rows after every worker's first chunk over the time they took.
Warm local and Ray runs alternate over `--repeats` (medians). Predictions that differ between the
engines are counted. Ray runs its workers at niceness 15 by default, which only matters when other
processes compete for the cores; the benchmark sets RAY_worker_niceness=0 (unless set) so that on a
shared machine both engines compete on equal terms. The load average is printed before and after.

    .venv/bin/python benchmarks/eval_ray.py [--items 48] [--workers 2] [--batch 8] [--repeats 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mmagent.eval.runner import run_eval

SUITE, PIPELINE = "scenes-vqa", "adapter"


class Clock:
    """Progress callback: when streaming began and when each row arrived."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.arrivals: list[float] = []

    def __call__(self, pipeline: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        else:
            self.arrivals.append(now)

    @property
    def seconds(self) -> float:
        return self.arrivals[-1] - self.start


def run(out: Path, clock: Clock, **kwargs):
    return run_eval(suite=SUITE, pipelines=[PIPELINE], out=out, progress=clock, seed=0, **kwargs)


def ray_phases(result, clock: Clock) -> dict[str, float]:
    """First rows per worker, steady-state items/s (rows in arrival order: a fresh folder)."""
    first: dict[int, float] = {}
    for row, at in zip(result.rows, clock.arrivals):
        first.setdefault(row["worker"], at - clock.start)
    ramp_end = clock.start + max(first.values())
    after = [at for at in clock.arrivals if at > ramp_end]
    steady = len(after) / (after[-1] - ramp_end) if len(after) > 1 else float("nan")
    return {"first": max(first.values()), "steady": steady}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="local batch size; each Ray worker gets batch/workers")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    command = ".venv/bin/python benchmarks/eval_ray.py " + shlex.join(sys.argv[1:])
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    worker_batch = max(1, args.batch // args.workers)
    n = args.items
    load_before = load()
    local_s: list[float] = []
    ray_s: list[float] = []
    phases: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="mmagent-eval-ray-") as tmp:
        tmp = Path(tmp)
        cold = Clock()
        run(tmp / "local-cold", cold, limit=n, batch_size=args.batch)
        print(f"local cold (model load included): {cold.seconds:.2f} s", flush=True)

        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        cluster_start = time.perf_counter() - t0
        cpus = int(ray.cluster_resources().get("CPU", 0))
        print(f"ray.init: {cluster_start:.2f} s ({cpus} CPUs)", flush=True)
        try:
            for rep in range(args.repeats):
                warm = Clock()
                local = run(tmp / f"local-{rep}", warm, limit=n, batch_size=args.batch)
                local_s.append(warm.seconds)
                clock = Clock()
                remote = run(tmp / f"ray-{rep}", clock, limit=n, batch_size=worker_batch, engine="ray",
                             workers=args.workers)
                ray_s.append(clock.seconds)
                phases.append(ray_phases(remote, clock))
                print(f"repeat {rep + 1}: local warm {warm.seconds:.2f} s, ray {clock.seconds:.2f} s "
                      f"(first rows {phases[-1]['first']:.2f} s, steady {phases[-1]['steady']:.2f} items/s)",
                      flush=True)
        finally:
            ray.shutdown()

    workers = sorted({r["worker"] for r in remote.rows})
    per_worker = {w: sum(r["worker"] == w for r in remote.rows) for w in workers}
    local_pred = {r["item_id"]: r["prediction"] for r in local.rows}
    differ = sum(local_pred[r["item_id"]] != r["prediction"] for r in remote.rows)
    acc_local = local.summary["pipelines"][PIPELINE]["accuracy"]
    acc_ray = remote.summary["pipelines"][PIPELINE]["accuracy"]
    rss = {w: max(r["peak_rss_mb"] for r in remote.rows if r["worker"] == w) for w in workers}
    local_rss = max(r["peak_rss_mb"] for r in local.rows)
    lw_s, ray_med = statistics.median(local_s), statistics.median(ray_s)
    steady = statistics.median(p["steady"] for p in phases)
    first = statistics.median(p["first"] for p in phases)
    lw = n / lw_s

    print(f"\n`{command}`\n")
    print(f"{n} {SUITE} items (seed 0), `{PIPELINE}` pipeline, shipped scene VLM on CPU, {cpus} cores; "
          f"median of {args.repeats}; load average {load_before} before, {load()} after\n")
    print("| engine | seconds | items/s | vs local warm | peak RSS MiB |")
    print("|---|---|---|---|---|")
    print(f"| local, batch {args.batch}, warm | {lw_s:.2f} | {lw:.2f} | 1.00 | {local_rss:.0f} |")
    print(f"| local, batch {args.batch}, cold (model load included) | {cold.seconds:.2f} | {n / cold.seconds:.2f} | "
          f"{n / cold.seconds / lw:.2f} | |")
    print(f"| ray, {len(workers)} workers × batch {worker_batch} (worker start + model load included) | "
          f"{ray_med:.2f} | {n / ray_med:.2f} | {n / ray_med / lw:.2f} | "
          f"{' + '.join(f'{rss[w]:.0f}' for w in workers)} |")
    print(f"| ray, steady state (after every worker's first chunk) | | {steady:.2f} | {steady / lw:.2f} | |")
    print()
    print(f"Ray start-up: `ray.init()` {cluster_start:.2f} s (once per `--engine ray` run without a cluster); "
          f"all workers' first rows after {first:.2f} s (actor start + model load + a chunk of "
          f"{max(worker_batch, 4)} items)")
    print(f"items per worker: {per_worker}")
    print(f"accuracy local {acc_local:.3f}, ray {acc_ray:.3f}; predictions that differ: {differ} of {n}")


if __name__ == "__main__":
    main()
