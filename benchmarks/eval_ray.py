"""Eval on Ray vs the local engine: the same items, the same pipeline, on this machine.

The `scenes-vqa` suite (held-out 128 px scenes, every question type; seed 0) through the `adapter`
pipeline with the shipped scene VLM (offline):

  local   `run_eval(..., engine="local", batch_size=B)`: one process, torch on every core
  ray     `run_eval(..., engine="ray", workers=W, batch_size=B/W)`: W actors on a local Ray
          cluster, each with its own model (Ray gives each actor one CPU thread: OMP_NUM_THREADS)

Timed from the first progress call of the pipeline (the items are made) to its last row; the
local figure is taken warm (the model loaded by a first, untimed run of 4 items) and cold (a
fresh process would pay the load: the first run), the Ray figure always includes the workers'
start and model load (every `run_eval --engine ray` pays them), and separately:
  - cluster start: `ray.init()` here (what `--engine ray` pays when no cluster runs),
  - worker start + first chunk: time to each worker's first rows,
  - steady state: the rows after each worker's first chunk over the time they took.
Rows are compared: predictions that differ between the engines are counted.

    .venv/bin/python benchmarks/eval_ray.py [--items 48] [--workers 2] [--batch 8]
"""

from __future__ import annotations

import argparse
import logging
import shlex
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="local batch size; each Ray worker gets batch/workers")
    args = parser.parse_args()
    command = ".venv/bin/python benchmarks/eval_ray.py " + shlex.join(sys.argv[1:])
    import ray

    worker_batch = max(1, args.batch // args.workers)
    n = args.items
    with tempfile.TemporaryDirectory(prefix="mmagent-eval-ray-") as tmp:
        tmp = Path(tmp)
        cold = Clock()
        run(tmp / "local-cold", cold, limit=n, batch_size=args.batch)
        print(f"local cold (model load included): {cold.seconds:.2f} s", flush=True)
        warm = Clock()
        local = run(tmp / "local", warm, limit=n, batch_size=args.batch)
        print(f"local warm: {warm.seconds:.2f} s", flush=True)

        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        cluster_start = time.perf_counter() - t0
        cpus = int(ray.cluster_resources().get("CPU", 0))
        print(f"ray.init: {cluster_start:.2f} s ({cpus} CPUs)", flush=True)
        try:
            clock = Clock()
            t0 = time.perf_counter()
            remote = run(tmp / "ray", clock, limit=n, batch_size=worker_batch, engine="ray", workers=args.workers)
            ray_call = time.perf_counter() - t0
        finally:
            ray.shutdown()
        print(f"ray: {clock.seconds:.2f} s", flush=True)

    rows = remote.rows  # in arrival order (a fresh folder: no rows from before)
    workers = sorted({r["worker"] for r in rows})
    first_chunk_done = {}
    for row, at in zip(rows, clock.arrivals):
        first_chunk_done.setdefault(row["worker"], at)
    ramp_end = max(first_chunk_done.values())
    after = [at for at in clock.arrivals if at > ramp_end]
    steady = len(after) / (after[-1] - ramp_end) if len(after) > 1 else float("nan")
    per_worker = {w: sum(r["worker"] == w for r in rows) for w in workers}
    local_pred = {r["item_id"]: r["prediction"] for r in local.rows}
    differ = sum(local_pred[r["item_id"]] != r["prediction"] for r in remote.rows)
    acc_local = local.summary["pipelines"][PIPELINE]["accuracy"]
    acc_ray = remote.summary["pipelines"][PIPELINE]["accuracy"]
    rss = {w: max(r["peak_rss_mb"] for r in rows if r["worker"] == w) for w in workers}
    local_rss = max(r["peak_rss_mb"] for r in local.rows)

    print(f"\n`{command}`\n")
    print(f"{n} {SUITE} items (seed 0), `{PIPELINE}` pipeline, shipped scene VLM on CPU, {cpus} cores\n")
    print("| engine | seconds | items/s | vs local warm | peak RSS MiB |")
    print("|---|---|---|---|---|")
    lw = n / warm.seconds
    print(f"| local, batch {args.batch}, warm | {warm.seconds:.2f} | {lw:.2f} | 1.00 | {local_rss:.0f} |")
    print(f"| local, batch {args.batch}, cold (model load) | {cold.seconds:.2f} | {n / cold.seconds:.2f} | "
          f"{n / cold.seconds / lw:.2f} | |")
    print(f"| ray, {len(workers)} workers x batch {worker_batch} (worker start + model load included) | "
          f"{clock.seconds:.2f} | {n / clock.seconds:.2f} | {n / clock.seconds / lw:.2f} | "
          f"{' + '.join(f'{rss[w]:.0f}' for w in workers)} |")
    print(f"| ray, steady state (after each worker's first chunk) | | {steady:.2f} | {steady / lw:.2f} | |")
    print()
    print(f"Ray start-up: cluster `ray.init()` {cluster_start:.2f} s; workers' first rows after "
          + ", ".join(f"{first_chunk_done[w] - clock.start:.2f} s (worker {w})" for w in workers)
          + f" (actor start + model load + one chunk of {max(worker_batch, 4)}); whole run_eval call {ray_call:.2f} s")
    print(f"items per worker: {per_worker}")
    print(f"accuracy local {acc_local:.3f}, ray {acc_ray:.3f}; predictions that differ: {differ} of {n}")


if __name__ == "__main__":
    main()
