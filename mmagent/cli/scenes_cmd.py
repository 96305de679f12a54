"""`mmagent scenes`: write a CLEVR-like scene dataset (images, captions, descriptions, questions)."""

from __future__ import annotations

import json
import time

import click

from .output import print_json, print_table


@click.command()
@click.option("--n", "n", type=int, required=True, help="Number of scenes.")
@click.option("--seed", type=int, default=0, show_default=True, help="Scene i of seed S is always the same.")
@click.option("--out", "out", type=click.Path(), required=True, help="Dataset directory to create.")
@click.option("--size", type=int, default=128, show_default=True, help="Image side in pixels (>= 32).")
@click.option("--max-objects", type=int, default=4, show_default=True, help="At most this many shapes.")
@click.option("--word-prob", type=float, default=0.3, show_default=True, help="Chance of a printed word.")
@click.option("--overwrite", is_flag=True, help="Replace an existing scenes dataset at --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def scenes(n: int, seed: int, out: str, size: int, max_objects: int, word_prob: float, overwrite: bool,
           as_json: bool) -> None:
    """Generate N scenes with exact-answer questions into OUT (atomically)."""
    from ..scenes import write_dataset

    started = time.perf_counter()
    path = write_dataset(out, n, seed, size=size, max_objects=max_objects, word_prob=word_prob,
                         overwrite=overwrite)
    seconds = time.perf_counter() - started
    meta = json.loads((path / "dataset.json").read_text(encoding="utf-8"))
    summary = {"out": str(path), "scenes": meta["n"], "seed": meta["seed"], "size": meta["size"],
               "scenes_with_word": meta["scenes_with_word"], "questions": meta["questions"],
               "question_types": meta["question_types"], "seconds": round(seconds, 3),
               "scenes_per_second": round(meta["n"] / seconds, 1) if seconds > 0 else None}
    if as_json:
        print_json(summary)
        return
    rows = [(kind, count) for kind, count in meta["question_types"].items()]
    rows.append(("total", meta["questions"]))
    click.echo(f"Wrote {meta['n']} scenes ({meta['size']} px, seed {meta['seed']}, "
               f"{meta['scenes_with_word']} with a word) to {path} in {seconds:.2f} s")
    print_table(("question type", "count"), rows)


COMMANDS = [scenes]
