"""A small training loop shared by the encoder and adapter trainers: checkpoints every N steps
(atomic), `resume` after a kill, a JSONL loss log, and a progress bar; data parallel over the
processes `torchrun` starts (`Ranks`), with the result of one process."""

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


def pin_recipe(out: Path, recipe: dict, resume: bool, *, free: tuple[str, ...] = ("device",),
               write: bool = True) -> None:
    """Write `out/recipe.json` at a run's start; on `resume`, refuse a recipe that differs from the
    one the run began with (the weights would be neither run's). `free`: fields a resume may change.
    `write` False: check only (the processes of a data-parallel run but the first)."""
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
    if not write:
        return
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
    ranks: "Ranks | None" = None,
) -> int:
    """Run `step_fn(step)` (returns loss parts) from step 0 or the last checkpoint to `steps`.

    `ranks`: a data-parallel run's processes; every one resumes from the checkpoint, only the
    first writes checkpoints, the log and the progress bar (their states are the same).
    Returns the number of steps run in this call.
    """
    main = ranks is None or ranks.main
    quiet = quiet or not main
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
        if main:  # the killed run logged steps past its last checkpoint; they are run again now
            truncate_log(log_path, start)
    elif log_path.exists() and main:
        log_path.unlink()

    def checkpoint(step: int) -> None:
        if not main:
            return
        save_checkpoint(ckpt_path, step=step, optimizer=optimizer.state_dict(), rng=torch.get_rng_state(),
                        scheduler=scheduler.state_dict() if scheduler is not None else None,
                        modules={name: m.state_dict() for name, m in modules.items()})

    with _progress(quiet) as progress, (log_path.open("a") if main else open(os.devnull, "w")) as log:
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
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    # on stderr: stdout is the run's metrics (JSON), e.g. redirected to a file
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=quiet, console=Console(stderr=True))


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


class Ranks:
    """The processes of a data-parallel run: `torchrun --nproc-per-node N -m mmagent train ...`
    starts N, one per GPU (or N CPU processes), and sets WORLD_SIZE, RANK and LOCAL_RANK; alone,
    a run is one rank of one. Each step's batch stays what one process would draw (`batch_indices`):
    rank r takes its contiguous share (`share`), and the gradients are summed over the ranks
    (`sum_grads`: one flat all-reduce — the trainable state is a projector and LoRA, megabytes),
    so every rank takes the same optimizer step, the step of the whole batch. The trainers weight
    each rank's loss by its share of the batch (per-example means), or gather the outputs where a
    loss sees the whole batch (`gather`: CLIP's contrastive loss). Rank 0 writes; the process
    group is gloo for CPU tensors and NCCL for CUDA ones."""

    def __init__(self, rank: int = 0, world: int = 1, local: int = 0):
        self.rank, self.world, self.local = rank, world, local

    @property
    def main(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Ranks(rank={self.rank}, world={self.world}, local={self.local})"

    @classmethod
    def told(cls) -> "Ranks":
        """This process's place as torchrun's variables say, without joining the process group."""
        from ..errors import InputError

        try:
            return cls(int(os.environ.get("RANK") or 0), max(1, int(os.environ.get("WORLD_SIZE") or 1)),
                       int(os.environ.get("LOCAL_RANK") or 0))
        except ValueError:
            raise InputError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)") from None

    @classmethod
    def join(cls) -> "Ranks":
        """This process's place: joins torchrun's process group on the first call (WORLD_SIZE > 1)."""
        from ..errors import InputError

        told = cls.told()
        world, local = told.world, told.local
        if world == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            if "MASTER_ADDR" not in os.environ:
                raise InputError(f"WORLD_SIZE={world} without MASTER_ADDR: start a data-parallel run with "
                                 f"torchrun --nproc-per-node {world} -m mmagent train ...")
            if torch.cuda.is_available():
                torch.cuda.set_device(local % torch.cuda.device_count())
            dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
            import atexit

            atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
        return cls(dist.get_rank(), dist.get_world_size(), local)

    def share(self, items):
        """This rank's contiguous share of a batch (a list or a tensor); the shares, in rank order,
        are the batch."""
        n = len(items)
        return items[n * self.rank // self.world:n * (self.rank + 1) // self.world]

    def gather(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """Every rank's `tensor` (its share's outputs) concatenated in rank order, gradients flowing
        back to each rank's own share: a loss computed on the result, divided by `world` on every
        rank, gives each share the gradient of the loss on the whole batch. Shares may differ in size."""
        if self.world == 1 or tensor is None:
            return tensor
        import torch.distributed as dist

        sizes = [torch.zeros((), dtype=torch.long) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor(len(tensor)))
        sizes = [int(s) for s in sizes]
        most = max(sizes)
        padded = torch.cat([tensor, tensor.new_zeros(most - len(tensor), *tensor.shape[1:])]) \
            if len(tensor) < most else tensor
        whole = _Gather.apply(padded.contiguous(), self.rank, self.world)
        return torch.cat([whole[r * most:r * most + size] for r, size in enumerate(sizes)])

    def sum_grads(self, params) -> None:
        """Sum the gradients of `params` over the ranks (a parameter without one counts as zeros)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        params = [p for p in params if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        for p, summed in zip(params, _at_once(grads, dist.all_reduce)):
            p.grad = summed

    def same_start(self, params) -> None:
        """Rank 0's values of `params` on every rank (the trainable state at a stage's start)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        params = list(params)
        with torch.no_grad():
            for p, first in zip(params, _at_once([p.detach() for p in params], lambda flat: dist.broadcast(flat, 0))):
                p.copy_(first)

    def total(self, value: float) -> float:
        """`value` summed over the ranks (each rank's weighted share of a loss: the batch's loss)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor(float(value), dtype=torch.float64)
        dist.all_reduce(t)
        return t.item()

    def collect(self, items: list) -> list:
        """Every rank's `items` (picklable), concatenated in rank order, on every rank."""
        if self.world == 1:
            return items
        import torch.distributed as dist

        parts: list = [None] * self.world
        dist.all_gather_object(parts, items)
        return [x for part in parts for x in part]

    def wait(self) -> None:
        """Every rank here before any goes on (rank 0 has written what the others read next)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def _at_once(tensors: list[torch.Tensor], collective) -> list[torch.Tensor]:
    """`collective` (an in-place all-reduce, broadcast ...) on all of `tensors` as one flat tensor:
    one message, not one per parameter. Returns the results, shaped as `tensors`."""
    if not tensors:
        return []
    flat = torch.cat([t.reshape(-1) for t in tensors])
    collective(flat)
    return [part.view_as(t).to(t.dtype) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


class _Gather(torch.autograd.Function):
    """All-gather along dim 0 (equal shares) whose backward sums the gradients of every rank's
    copy and keeps this rank's share: all-reduce, so that any backend does it (gloo's CPU
    tensors, NCCL's CUDA ones)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.n = rank, len(tensor)
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n], None, None
