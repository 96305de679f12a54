"""The "telephone" loss: the same held-out scene questions through the adapter route (the scene
VLM sees the pixels) and through the tool chain (the scene captioner writes a caption, OCR reads,
SmolLM2 answers from that text), with the same encoder, the same LLM and the same images.

Two tool chains: the scene captioner's short caption (what a typical captioner writes), and an
oracle captioner that hands over the generator's true full description (the best any captioner
could do: what is left is the text LLM's own loss). Every question goes through `mmagent.run`, as
a user's would; the tool chains' caption and OCR of an image are computed once and reused for its other questions
(greedy decoding: the same text either way, minutes saved). Prints accuracy per question type,
the adapter − tools gap, paired wins/losses and the median time per question.

    .venv/bin/python benchmarks/scene_telephone.py [--scenes 20] [--seed telephone-1]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import mmagent
from mmagent.backends import Captioner, get_backend
from mmagent.content import load_media
from mmagent.scenes import generate_scene, render
from mmagent.scenes.scoring import is_correct
from mmagent.toolbox import Toolbox

TYPES = ("existence", "colour", "shape", "count", "position", "comparison")


def per_image(backend):
    """`backend` (a caption or OCR backend, still of its contract class, as a Toolbox requires) whose
    result for an image is computed once (keyed by its sha256)."""
    cache: dict = {}
    for method in ("caption", "read"):
        if hasattr(backend, method):
            def once(image, _method=method, _call=getattr(backend, method), **kwargs):
                key = (_method, image.ref.sha256, tuple(sorted(kwargs.items())))
                if key not in cache:
                    cache[key] = _call(image, **kwargs)
                return cache[key]

            setattr(backend, method, once)
    return backend


class OracleCaptioner(Captioner):
    """The true full description of each scene, looked up by the image's sha256."""

    name, default_model = "oracle", "scene-truth"

    def __init__(self, descriptions: dict[str, str]):
        super().__init__()
        self.descriptions = descriptions

    def caption(self, image, **kwargs) -> str:
        return self.descriptions[image.ref.sha256]


def pipelines(descriptions: dict[str, str]) -> dict[str, tuple[str, Toolbox]]:
    ocr = per_image(get_backend("ocr"))
    return {
        "adapter": ("adapter", Toolbox()),
        "tools (short caption)": ("tools", Toolbox({"caption": per_image(get_backend("caption", "scene")),
                                                    "ocr": ocr})),
        "tools (true description)": ("tools", Toolbox({"caption": OracleCaptioner(descriptions), "ocr": ocr})),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--seed", default="telephone-1", help="never used in training")
    parser.add_argument("--json", type=Path, help="also write every answer here")
    args = parser.parse_args()
    scenes = [generate_scene(args.seed, i, size=128) for i in range(args.scenes)]
    results: dict[str, list[dict]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        descriptions = {}
        for i, scene in enumerate(scenes):
            render(scene).save(Path(tmp) / f"{i}.png")
            descriptions[load_media(Path(tmp) / f"{i}.png", expect="image").ref.sha256] = scene.description
        for name, (pipeline, toolbox) in pipelines(descriptions).items():
            for i, scene in enumerate(scenes):
                image = Path(tmp) / f"{i}.png"
                for q in (q for q in scene.questions if q.type in TYPES):
                    start = time.perf_counter()
                    answer = mmagent.run(q.question, images=[image], pipeline=pipeline, toolbox=toolbox).answer
                    results[name].append({"scene": i, "type": q.type, "question": q.question, "truth": q.answer,
                                          "reply": answer, "correct": is_correct(answer, q.answer, q.type),
                                          "seconds": time.perf_counter() - start})
            print(f"{name}: {len(results[name])} questions done", flush=True)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar test on the discordant pairs: P(as lopsided | a fair coin)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def report(results: dict[str, list[dict]]) -> None:
    names = list(results)
    print("\n| type | n | " + " | ".join(names) + " | adapter − short caption |")
    print("|---|---|" + "---|" * (len(names) + 1))
    for qtype in (*TYPES, "all"):
        acc = {}
        for name in names:
            rows = [r for r in results[name] if qtype in ("all", r["type"])]
            acc[name] = sum(r["correct"] for r in rows) / len(rows) if rows else float("nan")
        n = sum(1 for r in results[names[0]] if qtype in ("all", r["type"]))
        gap = acc["adapter"] - acc[names[1]]
        print(f"| {qtype} | {n} | " + " | ".join(f"{acc[x]:.1%}" for x in names) + f" | {gap:+.1%} |")
    base = results["adapter"]
    for name in names[1:]:
        wins = sum(a["correct"] and not b["correct"] for a, b in zip(base, results[name]))
        losses = sum(b["correct"] and not a["correct"] for a, b in zip(base, results[name]))
        print(f"\nadapter vs {name}: adapter alone right {wins}, {name} alone right {losses} "
              f"(paired, same questions; exact McNemar p = {mcnemar_p(wins, losses):.2g})")
    for name in names:
        print(f"{name}: median {statistics.median(r['seconds'] for r in results[name]):.3f} s per question")


if __name__ == "__main__":
    main()
