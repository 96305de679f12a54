"""`mmagent train encoder|adapter`: mmagent's own scene-world VLM, trained on the CPU (or a GPU)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from .output import print_json


def _check_out(out: Path, resume: bool, *checkpoints: str) -> None:
    """Refuse to start over on top of an earlier run (it would be lost); --resume continues it."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    if not resume and any((out / c).is_file() for c in checkpoints):
        raise InputError(f"{out} already holds a training run: add --resume to continue it, or pick another --out")


@click.group()
def train() -> None:
    """Train the scene-world VLM: a vision encoder, then a LLaVA adapter into SmolLM2."""


@train.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--steps", type=click.IntRange(1), default=6000, show_default=True)
@click.option("--scenes", "train_scenes", type=click.IntRange(64), default=20000, show_default=True,
              help="Training scenes (generated, deterministic).")
@click.option("--batch-size", type=click.IntRange(2), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out.")
def encoder(out: Path, steps: int, train_scenes: int, batch_size: int, seed: int, resume: bool) -> None:
    """Two-tower pretraining: a small ViT against frozen MiniLM description embeddings + attribute heads."""
    _check_out(out, resume, "checkpoint.pt")
    from ..train.encoder import EncoderRecipe, train_encoder

    recipe = EncoderRecipe(seed=seed, steps=steps, train_scenes=train_scenes, batch_size=batch_size)
    print_json(train_encoder(out, recipe, resume=resume))


@train.command()
@click.option("--encoder", "encoder_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              required=True, help="Folder written by `mmagent train encoder`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--projector", type=click.Choice(["mlp", "linear", "resampler", "qformer"]), default="mlp",
              show_default=True, help="LLaVA MLP or linear projector, perceiver resampler or Q-Former-lite.")
@click.option("--num-queries", type=click.IntRange(1), default=4, show_default=True,
              help="Image tokens of the resampler / Q-Former (a square: 1, 4, 16, 64).")
@click.option("--lora-rank", type=click.IntRange(0), default=16, show_default=True,
              help="Stage 2 also trains LoRA (peft) on the LLM; 0: the adapter only.")
@click.option("--lora-modules", type=click.Choice(["all", "attention"]), default="all", show_default=True,
              help="LoRA on attention and MLP projections, or attention only.")
@click.option("--caption-steps", type=click.IntRange(0), default=20, show_default=True, help="Stage 1.")
@click.option("--qa-steps", type=click.IntRange(0), default=450, show_default=True, help="Stage 2.")
@click.option("--focus-steps", type=click.IntRange(0), default=500, show_default=True,
              help="Stage 3: QA with every question type equally often.")
@click.option("--scenes", "train_scenes", type=click.IntRange(16), default=3000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoints in --out.")
def adapter(encoder_dir: Path, out: Path, projector: str, num_queries: int, lora_rank: int, lora_modules: str,
            caption_steps: int, qa_steps: int, focus_steps: int, train_scenes: int, batch_size: int, seed: int,
            resume: bool) -> None:
    """LLaVA recipe: frozen encoder + frozen SmolLM2; train the projector on captions, then QA."""
    if not (encoder_dir / "vision" / "config.json").is_file():
        raise InputError(f"{encoder_dir} holds no trained encoder (expected {encoder_dir}/vision/config.json)")
    _check_out(out, resume, "caption/checkpoint.pt", "qa/checkpoint.pt", "focus/checkpoint.pt")
    from ..train.adapter import AdapterRecipe, train_adapter

    recipe = AdapterRecipe(seed=seed, projector=projector, num_queries=num_queries, lora_rank=lora_rank,
                           lora_modules=lora_modules, caption_steps=caption_steps, qa_steps=qa_steps,
                           focus_steps=focus_steps,
                           train_scenes=train_scenes, batch_size=batch_size)
    print_json(train_adapter(encoder_dir, out, recipe, resume=resume))


COMMANDS = [train]
