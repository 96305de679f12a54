"""`mmagent train encoder|adapter`: a LLaVA-style VLM trained on the scene world or the user's own
data (`--data`), on the CPU or a GPU (`--device`)."""

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


_DATA_HELP = ("Your data: a JSONL file (image, question + answer, or caption; optional type), an image folder "
              "with metadata.jsonl/.csv, or a `datasets` folder / Hugging Face id. Default: the scene world.")


def data_options(command):
    """--data, --val, --val-fraction (docs/training-data.md)."""
    command = click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
                           show_default=True, help="Images held out for validation (all their questions).")(command)
    command = click.option("--val", "val", metavar="D2", help="A held-out set of its own instead of --val-fraction.")(
        command)
    return click.option("--data", "data", metavar="D", help=_DATA_HELP)(command)


def _result(metrics: dict) -> None:
    """The run's metrics on stdout, once: in a data-parallel run (torchrun) rank 0 prints them."""
    from ..train.loop import Ranks

    if Ranks.told().main:
        print_json(metrics)


def _report(loaded) -> None:
    """What was read, the split and the bad rows (on stderr, before training starts)."""
    click.echo(loaded.summary(), err=True)


@click.group()
def train() -> None:
    """Train a VLM: a vision encoder, then a LLaVA adapter into SmolLM2 (scene world or --data)."""


@train.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--steps", type=click.IntRange(1), help="[default: 6000; 3000 with --data]")
@click.option("--scenes", "train_scenes", type=click.IntRange(64), default=20000, show_default=True,
              help="Training scenes (generated, deterministic).")
@click.option("--batch-size", type=click.IntRange(2), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--places-and-signs/--no-places-and-signs", default=True, show_default=True,
              help="Scenes: also learn where each object is (row, column words) and the printed word "
                   "(the shipped recipe; --no-places-and-signs: the earlier one).")
@data_options
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out.")
def encoder(out: Path, steps: int | None, train_scenes: int, batch_size: int, seed: int, places_and_signs: bool,
            data: str | None, val: str | None, val_fraction: float, resume: bool) -> None:
    """Pretrain the vision encoder: on scenes, a small ViT against frozen MiniLM description embeddings +
    attribute heads; on --data, the same ViT taught by your questions and answers (and captions)."""
    _check_out(out, resume, "checkpoint.pt")
    from ..train.encoder import EncoderRecipe, train_encoder, train_encoder_on_data

    if data is None:
        recipe = EncoderRecipe(seed=seed, steps=steps or 6000, train_scenes=train_scenes, batch_size=batch_size,
                               places_and_signs=places_and_signs)
        _result(train_encoder(out, recipe, resume=resume))
        return
    recipe = EncoderRecipe.for_data(seed=seed, batch_size=batch_size, **({"steps": steps} if steps else {}))
    _result(train_encoder_on_data(out, recipe, data, val=val, val_fraction=val_fraction, resume=resume,
                                  on_data=_report))


@train.command()
@click.option("--encoder", "encoder_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Folder written by `mmagent train encoder`.")
@click.option("--vision-encoder", metavar="HF_ID_OR_PATH",
              help="A pretrained CLIP, SigLIP or DINOv2 vision model instead of --encoder.")
@click.option("--unfreeze-vision-layers", type=click.IntRange(0), default=0, show_default=True, metavar="N",
              help="Also train the vision encoder's last N layers (at 1e-5).")
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
@click.option("--qa-steps", type=click.IntRange(0),
              help="Stage 2.  [default: 450; 300 with --data (conversations of --turns questions)]")
@click.option("--focus-steps", type=click.IntRange(0),
              help="Stage 3: QA with every question type equally often.  [default: 500; 0 with --data]")
@click.option("--relations-steps", type=click.IntRange(0),
              help="Stage 4 (scenes): position (said with its reasons), comparison and count questions on a fresh "
                   "LoRA.  [default: 400; 0 with --data]")
@click.option("--position-share", type=click.FloatRange(0, 1, min_open=True), metavar="F",
              help="Stage 4 with position questions as this share of its examples, the rest from every other "
                   "type (the shipped model: 0.8, then 0.5 — docs/scene-vlm.md).  [default: position x3, "
                   "comparison and count x1, 30 % others]")
@click.option("--init", "init", type=click.Path(file_okay=False, exists=True, path_type=Path), metavar="SMALL",
              help="Start from a trained model (an OUT/small folder, e.g. plugins/scene_vlm/weights): its encoder, "
                   "projector and LoRA; set the steps of the stages to run.")
@click.option("--turns", type=click.IntRange(1), metavar="N",
              help="Stage 2 asks up to N questions about an image in one conversation.  [default: 1; 4 with --data]")
@click.option("--scenes", "train_scenes", type=click.IntRange(16), default=3000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--places-and-signs/--no-places-and-signs", default=True, show_default=True,
              help="Scenes: also learn where each object is (row, column words) and the printed word "
                   "(the shipped recipe; --no-places-and-signs: the earlier one).")
@data_options
@click.option("--encoder-steps", type=click.IntRange(1), default=3000, show_default=True,
              help="With --data and no encoder given: steps of the encoder trained first (into OUT/encoder).")
@click.option("--llm", default="smollm2-135m-instruct", show_default=True, metavar="NAME_OR_PATH",
              help="The LLM the adapter feeds (a zoo name or a transformers folder); frozen, LoRA on top.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when there is one), cpu, cuda, cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="Training arithmetic: auto is bf16 autocast where the device has bf16 natively (CUDA; a CPU "
                   "with AVX512-BF16 or AMX), float32 elsewhere. The shipped scene VLM was trained in fp32.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoints in --out.")
def adapter(encoder_dir: Path | None, vision_encoder: str | None, unfreeze_vision_layers: int, out: Path,
            projector: str, num_queries: int, lora_rank: int, lora_modules: str, caption_steps: int, qa_steps: int | None,
            focus_steps: int | None, relations_steps: int | None, position_share: float | None, init: Path | None, turns: int | None,
            train_scenes: int, batch_size: int, seed: int,
            places_and_signs: bool, data: str | None, val: str | None, val_fraction: float, encoder_steps: int, llm: str,
            device: str, precision: str, resume: bool) -> None:
    """LLaVA recipe: frozen encoder + frozen SmolLM2; train the projector (and LoRA) on captions, then QA.

    \b
      mmagent train adapter --encoder enc/ --out ad/                 # the scene world
      mmagent train adapter --init ad/small --caption-steps 0 --qa-steps 0 --focus-steps 0 --out ad2/
      mmagent train adapter --data my.jsonl --out ad/                # your data: the whole recipe
      mmagent train adapter --data my.jsonl --vision-encoder openai/clip-vit-base-patch32 --out ad/
    """
    if sum(x is not None for x in (encoder_dir, vision_encoder, init)) > 1:
        raise InputError("give only one of --encoder, --vision-encoder and --init")
    if init is not None and not (init / "projector.safetensors").is_file():
        raise InputError(f"{init} is not a trained adapter's small export (expected {init}/projector.safetensors)")
    if (relations_steps or position_share is not None) and data is not None:
        flag = "--relations-steps" if relations_steps else "--position-share"
        raise InputError(f"{flag} is the scene world's stage 4 (position said with its reasons); "
                         "with --data leave it out")
    if encoder_dir is not None and not (encoder_dir / "vision" / "config.json").is_file():
        raise InputError(f"{encoder_dir} holds no trained encoder (expected {encoder_dir}/vision/config.json)")
    if encoder_dir is None and vision_encoder is None and init is None and data is None:
        raise InputError("give --encoder (a `mmagent train encoder` folder), --vision-encoder, or --data "
                         "(then the encoder is trained first)")
    _check_out(out, resume, "caption/checkpoint.pt", "qa/checkpoint.pt", "focus/checkpoint.pt",
               "relations/checkpoint.pt")
    from ..train.adapter import AdapterRecipe, resolve_device, train_adapter

    resolve_device(device)  # a bad --device fails before anything is read
    from ..zoo import get_zoo

    if llm not in get_zoo().specs:  # nor an --llm that cannot be had (before an encoder is trained)
        from ..train.vision import locate

        locate(llm, "--llm")
    whole = data is not None and encoder_dir is None and vision_encoder is None and init is None
    if whole:  # the whole recipe: the encoder first, on the same data
        from ..train.encoder import EncoderRecipe, train_encoder_on_data

        encoder_dir = out / "encoder"
        metrics = train_encoder_on_data(encoder_dir, EncoderRecipe.for_data(seed=seed, steps=encoder_steps), data, val=val,
                                        val_fraction=val_fraction, on_data=_report,
                                        resume=resume and (encoder_dir / "checkpoint.pt").is_file())
        if metrics:  # rank 0's (torchrun)
            click.echo(f"encoder: answer accuracy on held-out images {metrics.get('answer_accuracy')}", err=True)
    if qa_steps is None:
        qa_steps = 300 if data is not None else 450
    if focus_steps is None:
        focus_steps = 0 if data is not None else 500
    if relations_steps is None:
        relations_steps = 0 if data is not None else 400
    recipe = AdapterRecipe(seed=seed, projector=projector, num_queries=num_queries, lora_rank=lora_rank,
                           lora_modules=lora_modules, caption_steps=caption_steps, qa_steps=qa_steps,
                           focus_steps=focus_steps, relations_steps=relations_steps,
                           position_share=position_share, init=str(init.absolute()) if init else None, turns=turns,
                           places_and_signs=places_and_signs and data is None,
                           train_scenes=train_scenes, batch_size=batch_size,
                           vision_encoder=vision_encoder, unfreeze_vision_layers=unfreeze_vision_layers,
                           data=data, val=val, val_fraction=val_fraction, device=device, precision=precision, llm=llm)
    # the data's summary once: after the encoder step when there was one
    _result(train_adapter(encoder_dir, out, recipe, resume=resume, on_data=None if whole else _report))


COMMANDS = [train]
