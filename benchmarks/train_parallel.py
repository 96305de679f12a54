"""Adapter training step time: one process against N data-parallel processes (torchrun).

The shipped scene VLM (`plugins/scene_vlm/weights`, SmolLM2-135M-Instruct under its projector
and LoRA) trains stage 2 for --steps steps of --batch-size scene questions: first in one process
(all of the machine's threads), then under `torchrun --nproc-per-node N` (torchrun gives each
process one thread on a CPU; on a GPU machine each process takes a GPU). The same recipe both
times, so the losses must agree step by step — checked — and the median step time compares
them. The first step of each run is a warm-up and not counted.

    .venv/bin/python benchmarks/train_parallel.py [--processes 2] [--steps 8] [--batch-size 16] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(out: Path, steps: int, batch_size: int, device: str) -> None:
    """One run (a rank of torchrun's, or the only process): stage 2 from the shipped model."""
    from mmagent.train.adapter import AdapterRecipe, train_adapter

    recipe = AdapterRecipe(init=str(ROOT / "plugins" / "scene_vlm" / "weights"), caption_steps=0, qa_steps=steps,
                           focus_steps=0, relations_steps=0, train_scenes=200, eval_scenes=2, batch_size=batch_size,
                           precision="fp32", device=device, checkpoint_every=10_000)
    train_adapter(None, out, recipe, quiet=True)


def step_seconds(log: Path) -> tuple[list[float], list[float]]:
    """Each step's seconds (from the log's running clock) and loss."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    clock = [r["seconds"] for r in records]
    return [b - a for a, b in zip([0.0] + clock, clock)], [r["loss"] for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="steps of each run (the first one a warm-up)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.batch_size, args.device)
        return

    me = [str(Path(__file__).resolve()), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
          "--device", args.device]
    runs = {1: [sys.executable, *me], args.processes: [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.processes}", *me]}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, command in runs.items():
            out = Path(tmp) / f"p{n}"
            done = subprocess.run([*command, "--worker", str(out)], capture_output=True, text=True,
                                  env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
            if done.returncode != 0:
                sys.exit(f"{n} process(es): {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'}")
            results[n] = step_seconds(out / "qa" / "log.jsonl")
    (one, loss_one), (many, loss_many) = results[1], results[args.processes]
    worst = max(abs(a - b) for a, b in zip(loss_one, loss_many))
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, CUDA devices: {torch.cuda.device_count()}; "
          f"stage 2 of the shipped scene VLM, {args.steps} steps of {args.batch_size} questions, fp32")
    m1, mn = statistics.median(one[1:]), statistics.median(many[1:])
    print(f"  1 process:   median {m1:.2f} s a step ({args.batch_size / m1:.2f} examples/s)")
    print(f"  {args.processes} processes: median {mn:.2f} s a step ({args.batch_size / mn:.2f} examples/s)")
    print(f"  speed-up {m1 / mn:.2f}x; largest loss difference between the runs {worst:.1e}")


if __name__ == "__main__":
    main()
