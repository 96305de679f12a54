"""A "bring your own data" stand-in: a JSONL visual-QA dataset shaped like a real user's, made by a
generator that owes nothing to the scene world (`mmagent.scenes`).

    python -m mmagent.train.toydata --out DIR --images 4000 [--seed 0] [--size 64] [--bad-rows]

writes `DIR/images/000000.png …` and `DIR/data.jsonl`, one question a line:

    {"image": "images/000000.png", "question": "Is there a pink heart?", "answer": "yes", "type": "yes/no"}

Each image (64 px by default) holds 1-3 shapes on a tinted, noisy background. Its colours (orange,
pink, cyan, brown, white, black) and shapes (diamond, cross, hexagon, heart, ring, arrow) are none
of the scene world's colours, kinds or sign words, so a model trained on scenes knows none of the
answers. About ten questions an image: six yes/no (a colour-shape pair, a colour, a shape; one
"yes" and one "no" of each, so yes/no is balanced exactly), "What colour is the heart?" for each
shape that occurs once, "What shape is the pink object?" for each colour that occurs once, and
"How many shapes are there?". Answers are one lowercase word or a digit.

The output is a function of (seed, image index) only: the first k images of n are those of k.
Everything is written into a temporary sibling folder that replaces DIR once complete.
`bad_rows=True` appends deliberately bad rows (a missing image, an undecodable one, an empty
answer, no question, a JSON array, broken JSON, a path out of the folder) for tests of the loader.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..folders import folder_written_whole

FORMAT = "mmagent-toy-shapes"
FORMAT_VERSION = 1
MAX_IMAGES = 1_000_000

#: Exact RGB before the noise. None of these is a scene-world colour (red, green, blue, yellow, purple).
COLOURS: dict[str, tuple[int, int, int]] = {
    "orange": (245, 130, 20),
    "pink": (240, 110, 180),
    "cyan": (30, 200, 220),
    "brown": (125, 75, 35),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
}
#: None of these is a scene-world kind (circle, square, triangle) or sign word ("star" is one).
SHAPES = ("diamond", "cross", "hexagon", "heart", "ring", "arrow")
#: Mid-tone backgrounds, far from every shape colour (white and black shapes included).
BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (100, 110, 125), (150, 140, 110), (95, 125, 100), (140, 110, 130),
)
QUESTION_TYPES = ("yes/no", "colour", "shape", "count")
MAX_OBJECTS = 3
GRID = 3  # objects sit in distinct cells of a 3 x 3 grid: they never overlap

_COLOUR_WORD = ("colour", "color")
_ASK_COLOUR = ("What {c} is the {s}?", "Which {c} is the {s}?", "What is the {c} of the {s}?")
_ASK_SHAPE = ("What shape is the {k} object?", "Which shape is {k}?", "What is the shape of the {k} thing?")
_ASK_PAIR = ("Is there a {k} {s}?", "Is there a {k} {s} in the picture?", "Do you see a {k} {s}?")
_ASK_ANY_COLOUR = ("Is there anything {k}?", "Is any shape {k}?", "Is something {k} in the image?")
_ASK_ANY_SHAPE = ("Is there a {s}?", "Can you see a {s}?", "Is there a {s} in the image?")
_ASK_COUNT = ("How many shapes are there?", "How many objects are in the image?", "Count the shapes.")


@dataclass(frozen=True)
class ToyObject:
    colour: str
    shape: str
    x: int
    y: int
    radius: int


@dataclass
class ToyDataset:
    """What `write_toy_dataset` wrote."""

    path: Path  # the dataset folder
    jsonl: Path  # path / "data.jsonl"
    images: int
    questions: int  # good rows
    types: Counter = field(default_factory=Counter)
    #: line number (1-based) -> what is wrong with it, for the rows `bad_rows=True` added
    bad_lines: dict[int, str] = field(default_factory=dict)


def make_image(seed: int, index: int, size: int = 64):
    """(PIL image, objects, questions) of image `index` of `seed`; questions are dicts with
    question, answer and type."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(f"toy-shapes:{seed}:{index}")
    n = rng.randint(1, MAX_OBJECTS)
    combos = rng.sample([(c, s) for c in COLOURS for s in SHAPES], n)
    cells = rng.sample(range(GRID * GRID), n)
    cell = size / GRID
    objects = []
    for (colour, shape), where in zip(combos, cells):
        radius = max(3, round(cell * rng.uniform(0.3, 0.42)))
        slack = max(0, int(cell / 2 - radius - 1))
        x = int((where % GRID + 0.5) * cell) + rng.randint(-slack, slack)
        y = int((where // GRID + 0.5) * cell) + rng.randint(-slack, slack)
        objects.append(ToyObject(colour, shape, x, y, radius))

    image = Image.new("RGB", (size, size), rng.choice(BACKGROUNDS))
    draw = ImageDraw.Draw(image)
    for obj in objects:
        _draw(draw, obj)
    # A gentle gradient and pixel noise, so that no two backgrounds (or shapes) are exactly alike.
    noise = np.random.default_rng([seed, index, 7]).integers(-6, 7, size=(size, size, 3))
    ramp = np.linspace(-1.0, 1.0, size)
    gx, gy = rng.uniform(-12, 12), rng.uniform(-12, 12)
    tilt = (gx * ramp[None, :] + gy * ramp[:, None])[:, :, None]
    pixels = np.clip(np.asarray(image, dtype=np.int16) + noise + tilt.astype(np.int16), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), objects, make_questions(objects, rng)


def _draw(draw, obj: ToyObject) -> None:
    x, y, r, fill = obj.x, obj.y, obj.radius, COLOURS[obj.colour]
    t = max(2, r // 3)  # stroke / bar half-width
    if obj.shape == "diamond":
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill)
    elif obj.shape == "cross":
        draw.rectangle((x - r, y - t, x + r, y + t), fill=fill)
        draw.rectangle((x - t, y - r, x + t, y + r), fill=fill)
    elif obj.shape == "hexagon":
        draw.regular_polygon((x, y, r), 6, fill=fill)
    elif obj.shape == "heart":
        h = r / 2
        draw.ellipse((x - r, y - r + 1, x, y + 1), fill=fill)
        draw.ellipse((x, y - r + 1, x + r, y + 1), fill=fill)
        draw.polygon([(x - r + 1, y - h + 2), (x + r - 1, y - h + 2), (x, y + r)], fill=fill)
    elif obj.shape == "ring":
        draw.ellipse((x - r, y - r, x + r, y + r), outline=fill, width=t + 1)
    elif obj.shape == "arrow":
        draw.rectangle((x - r, y - t + 1, x, y + t - 1), fill=fill)
        draw.polygon([(x, y - r), (x + r, y), (x, y + r)], fill=fill)
    else:  # pragma: no cover - SHAPES and this function change together
        raise ValueError(obj.shape)


def make_questions(objects: list[ToyObject], rng: random.Random) -> list[dict[str, str]]:
    present = {(o.colour, o.shape) for o in objects}
    colours = Counter(o.colour for o in objects)
    shapes = Counter(o.shape for o in objects)
    out: list[dict[str, str]] = []

    def add(question: str, answer: str, kind: str) -> None:
        out.append({"question": question, "answer": answer, "type": kind})

    # yes/no, one "yes" and one "no" of each form. Half the "no" pairs share a colour or a shape with
    # an object of the image, so that a model must bind colour to shape, not just spot either.
    colour, shape = rng.choice(sorted(present))
    add(rng.choice(_ASK_PAIR).format(k=colour, s=shape), "yes", "yes/no")
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    near = [(c, s) for c, s in absent if c in colours or s in shapes]
    colour, shape = rng.choice(near if near and rng.random() < 0.5 else absent)
    add(rng.choice(_ASK_PAIR).format(k=colour, s=shape), "no", "yes/no")
    add(rng.choice(_ASK_ANY_COLOUR).format(k=rng.choice(sorted(colours))), "yes", "yes/no")
    add(rng.choice(_ASK_ANY_COLOUR).format(k=rng.choice([c for c in COLOURS if c not in colours])), "no", "yes/no")
    add(rng.choice(_ASK_ANY_SHAPE).format(s=rng.choice(sorted(shapes))), "yes", "yes/no")
    add(rng.choice(_ASK_ANY_SHAPE).format(s=rng.choice([s for s in SHAPES if s not in shapes])), "no", "yes/no")
    for obj in objects:  # attribute questions, only where the reference is unambiguous
        if shapes[obj.shape] == 1:
            add(rng.choice(_ASK_COLOUR).format(c=rng.choice(_COLOUR_WORD), s=obj.shape), obj.colour, "colour")
        if colours[obj.colour] == 1:
            add(rng.choice(_ASK_SHAPE).format(k=obj.colour), obj.shape, "shape")
    add(rng.choice(_ASK_COUNT), str(len(objects)), "count")
    rng.shuffle(out)
    return out


def write_toy_dataset(out: str | os.PathLike, n_images: int = 4000, seed: int = 0, *, size: int = 64,
                      bad_rows: bool = False, overwrite: bool = False) -> ToyDataset:
    """Write images 0..n_images-1 of `seed` and their questions into `out` (see the module doc).

    A non-empty `out` is refused unless `overwrite=True`, and even then only when it holds a toy
    dataset: nothing else is ever deleted."""
    if isinstance(n_images, bool) or not isinstance(n_images, int) or not 1 <= n_images <= MAX_IMAGES:
        raise InputError(f"n_images must be an integer from 1 to {MAX_IMAGES:,}, got {n_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not 24 <= size <= 512:
        raise InputError(f"size must be an integer from 24 to 512 pixels, got {size!r}")
    target = Path(out).expanduser().absolute()
    with folder_written_whole(target, overwrite=overwrite, ours=lambda folder: (folder / "toy.json").is_file(),
                              what="a toy dataset") as tmp:
        (tmp / "images").mkdir()
        types: Counter[str] = Counter()
        line = 0
        with open(tmp / "data.jsonl", "w", encoding="utf-8") as f:
            for index in range(n_images):
                image, _objects, questions = make_image(seed, index, size)
                name = f"images/{index:06d}.png"
                image.save(tmp / name, format="PNG", compress_level=1)
                for q in questions:
                    f.write(json.dumps({"image": name, **q}) + "\n")
                    types[q["type"]] += 1
                    line += 1
            bad = _write_bad_rows(f, tmp, line) if bad_rows else {}
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "seed": seed, "images": n_images, "size": size,
                "questions": sum(types.values()), "question_types": {t: types[t] for t in QUESTION_TYPES},
                "bad_rows": {str(k): v for k, v in bad.items()},
                "colours": list(COLOURS), "shapes": list(SHAPES)}
        (tmp / "toy.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return ToyDataset(target, target / "data.jsonl", n_images, sum(types.values()), types, bad)


def _write_bad_rows(f, folder: Path, after: int) -> dict[int, str]:
    """Append one row of each bad kind; returns {line number: kind}."""
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    rows = [
        ("missing image", json.dumps({"image": "images/missing.png", "question": "Is there a ring?", "answer": "no"})),
        ("undecodable image", json.dumps({"image": "images/broken.png", "question": "Is there a ring?",
                                          "answer": "no"})),
        ("empty answer", json.dumps({"image": "images/000000.png", "question": "What colour is it?", "answer": " "})),
        ("no question", json.dumps({"image": "images/000000.png", "answer": "yes"})),
        ("not an object", json.dumps(["images/000000.png", "Is there a ring?", "no"])),
        ("invalid JSON", '{"image": "images/000000.png", "question": "Is there'),
        ("outside the folder", json.dumps({"image": "../outside.png", "question": "Is there a ring?", "answer": "no"})),
    ]
    out = {}
    for k, (kind, text) in enumerate(rows, after + 1):
        f.write(text + "\n")
        out[k] = kind
    return out




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmagent.train.toydata",
                                     description="Write the toy shapes VQA dataset (JSONL + PNG images).")
    parser.add_argument("--out", required=True, help="dataset folder to create")
    parser.add_argument("--images", type=int, default=4000, help="number of images (about 10 questions each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--bad-rows", action="store_true", help="append deliberately bad rows (loader tests)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing toy dataset")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        made = write_toy_dataset(args.out, args.images, args.seed, size=args.size, bad_rows=args.bad_rows,
                                 overwrite=args.overwrite)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kinds = ", ".join(f"{t} {made.types[t]:,}" for t in QUESTION_TYPES)
    print(f"{made.jsonl}: {made.images:,} images, {made.questions:,} questions ({kinds})"
          + (f", {len(made.bad_lines)} bad rows" if made.bad_lines else "")
          + f" in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
