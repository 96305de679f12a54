"""Adapter training step time: float32 against bf16 autocast (`--precision`), on this machine.

A stage-2 step as `mmagent train adapter --data` runs it: 16 conversations of up to --turns
questions about the toy dataset's images (`mmagent.train.toydata`), the grounded MLP projector
and LoRA r16 on SmolLM2-135M-Instruct (from the offline zoo), forward + backward + AdamW. The
vision tower is mmagent's own data encoder after one training step: a step's cost depends on the
shapes, not on what the weights learned. Precisions alternate step by step (fp32, bf16, fp32, ...)
on the same batches, so drift of the machine falls on both; the first step of each is a warm-up
and not counted. Prints each precision's median step time, answers per second and the ratio, and
whether this CPU computes bf16 natively (`--precision auto` picks bf16 only where it does).

    .venv/bin/python benchmarks/train_precision.py [--steps 6] [--turns 4] [--images 200]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps of each precision (plus one warm-up)")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()

    import torch

    import mmagent.train.adapter as A
    from mmagent.train.encoder import EncoderRecipe, train_encoder_on_data
    from mmagent.train.toydata import write_toy_dataset

    with tempfile.TemporaryDirectory() as tmp:
        toy = write_toy_dataset(Path(tmp) / "toy", n_images=args.images, seed=0)
        train_encoder_on_data(Path(tmp) / "enc", EncoderRecipe.for_data(steps=1), str(toy.jsonl), quiet=True)
        recipe = A.AdapterRecipe(data=str(toy.jsonl))
        torch.manual_seed(0)
        tower = A.load_tower(Path(tmp) / "enc", None)
        model, processor = A.build_llava(tower, recipe)
        data = A.user_data(recipe, tower)
        A.add_lora(model, recipe.lora_rank, recipe.lora_modules)
        items = A.stage_examples(data.captions, data.questions, "mixed", data.types, turns=args.turns)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        cpu = torch.device("cpu")
        fits = {"fp32": A.MicroBatches(model, processor, data.pixels, cpu, quiet=True, bf16=False),
                "bf16": A.MicroBatches(model, processor, data.pixels, cpu, quiet=True, bf16=True)}
        times: dict[str, list[float]] = {name: [] for name in fits}
        answers = []
        for i in range(args.steps + 1):
            batch = [items[j] for j in A.batch_indices(i, len(items), recipe.batch_size, recipe.seed)]
            answers.append(sum(1 + len(e.more) for e in batch))
            for name, fit in fits.items():
                t0 = time.perf_counter()
                optimizer.zero_grad()
                fit.backward(batch)
                optimizer.step()
                times[name].append(time.perf_counter() - t0)
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    per_step = statistics.mean(answers[1:])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native} "
          f"(--precision auto trains in {'bf16' if native else 'fp32'} here)")
    print(f"{args.steps} timed steps each, {recipe.batch_size} conversations of up to {args.turns} questions "
          f"({per_step:.1f} answers a step)")
    medians = {name: statistics.median(t[1:]) for name, t in times.items()}
    for name, m in medians.items():
        print(f"  {name}: median {m:.2f} s a step, {per_step / m:.2f} answers/s")
    print(f"  bf16 / fp32 step time: {medians['bf16'] / medians['fp32']:.2f}x")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
