"""A small training loop shared by the encoder and adapter trainers: checkpoints every N steps
(atomic), `resume` after a kill, a JSONL loss log, and a progress bar."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import torch


def save_checkpoint(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def pin_recipe(out: Path, recipe: dict, resume: bool, *, free: tuple[str, ...] = ("device",)) -> None:
    """Write `out/recipe.json` at a run's start; on `resume`, refuse a recipe that differs from the
    one the run began with (the weights would be neither run's). `free`: fields a resume may change."""
    from ..errors import InputError

    path = out / "recipe.json"
    # a data path given relative on one run and absolute on the next is the same data
    recipe = {k: str(Path(v).resolve()) if k in ("data", "val") and isinstance(v, str) and os.path.exists(v) else v
              for k, v in json.loads(json.dumps(recipe)).items()}
    mine = {k: v for k, v in recipe.items() if k not in free}
    if resume and path.is_file():
        before = {k: v for k, v in json.loads(path.read_text()).items() if k not in free}
        changed = sorted(k for k in before.keys() | mine.keys() if before.get(k) != mine.get(k))
        if changed:
            said = ", ".join(f"{k} {before.get(k)!r} -> {mine.get(k)!r}" for k in changed)
            raise InputError(f"{out}: --resume with another recipe than the run began with ({said}); "
                             f"resume with the same options, or start a new --out")
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(recipe, indent=2))
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


class TrainableState:
    """The trainable parameters of a big, mostly frozen model as a checkpointable "module": only
    they are saved (a projector and LoRA weights: MBs, not the frozen LLM's hundreds)."""

    def __init__(self, model: torch.nn.Module):
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self.params.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(state[name])


def run_loop(
    out: Path,
    steps: int,
    step_fn: Callable[[int], dict[str, float]],
    *,
    modules: dict[str, torch.nn.Module | TrainableState],
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    resume: bool = False,
    checkpoint_every: int = 100,
    label: str = "training",
    quiet: bool = False,
) -> int:
    """Run `step_fn(step)` (returns loss parts) from step 0 or the last checkpoint to `steps`.

    Returns the number of steps run in this call.
    """
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / "checkpoint.pt", out / "log.jsonl"
    start = 0
    if resume and (state := load_checkpoint(ckpt_path)) is not None:
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
        # The killed run logged steps past its last checkpoint; they are run again now.
        truncate_log(log_path, start)
    elif log_path.exists():
        log_path.unlink()

    def checkpoint(step: int) -> None:
        save_checkpoint(ckpt_path, step=step, optimizer=optimizer.state_dict(), rng=torch.get_rng_state(),
                        scheduler=scheduler.state_dict() if scheduler is not None else None,
                        modules={name: m.state_dict() for name, m in modules.items()})

    with _progress(quiet) as progress, log_path.open("a") as log:
        task = progress.add_task(label, total=steps, completed=start)
        t0 = time.perf_counter()
        for step in range(start, steps):
            parts = step_fn(step)
            if scheduler is not None:
                scheduler.step()
            record = {"step": step + 1, **{k: round(float(v), 5) for k, v in parts.items()},
                      "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 2)}
            log.write(json.dumps(record) + "\n")
            log.flush()
            progress.update(task, advance=1, description=f"{label} loss {parts.get('loss', 0):.4f}")
            if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
                checkpoint(step + 1)
    return steps - start


def truncate_log(log_path: Path, step: int) -> None:
    """Keep the records of steps 1..`step` (a checkpoint's) in a JSONL log, so that a resumed run
    logs every step exactly once. A line cut by a kill, or a record past `step`, is dropped."""
    if not log_path.is_file():
        return
    kept = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line + "\n")
    tmp = log_path.with_name(log_path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, log_path)


def logged_seconds(log_path: Path) -> float:
    """Training time of a stage from its log, across resumes (each resumed run counts from 0)."""
    total = last = 0.0
    for line in log_path.read_text().splitlines() if log_path.is_file() else []:
        seconds = json.loads(line)["seconds"]
        if seconds < last:
            total += last
        last = seconds
    return round(total + last, 1)


def _progress(quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=quiet)


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup_fraction: float):
    """Linear warm-up over `warmup_fraction` of `steps`, then cosine decay to zero."""
    import math

    warmup = max(1, int(steps * warmup_fraction))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(s, steps) / steps)))


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """The sample indices of `step`: a function of (seed, step) only, so a resumed run sees exactly
    the batches an uninterrupted one would."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randperm(n, generator=generator)[:batch_size]
