"""`generate_scene`: a scene's layout, text and questions from (seed, index) alone.

Every scene draws from its own `random.Random(f"{seed}:{index}:<part>")`, so scene `i` of seed `S`
is the same whatever `n` was asked for (a dataset of 10 is a prefix of one of 100), and the layout
does not change when the question or caption code does. No PIL here: rendering is `render.py`.
"""

from __future__ import annotations

import random

from ..errors import InputError
from .language import caption_for, describe
from .model import Scene, SceneObject
from .questions import make_questions
from .vocab import BACKGROUNDS, COLOURS, KINDS, SIZES, WORDS

MIN_SIZE, MAX_SIZE = 32, 2048
MAX_OBJECTS = 8
_PLACEMENT_TRIES = 200


def check_options(size: int, max_objects: int, word_prob: float) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {size!r}")
    if isinstance(max_objects, bool) or not isinstance(max_objects, int) or not 1 <= max_objects <= MAX_OBJECTS:
        raise InputError(f"max_objects must be an integer from 1 to {MAX_OBJECTS}, got {max_objects!r}")
    if isinstance(word_prob, bool) or not isinstance(word_prob, (int, float)) or not 0.0 <= word_prob <= 1.0:
        raise InputError(f"word_prob must be a number from 0 to 1, got {word_prob!r}")


def generate_scene(seed: int | str, index: int, *, size: int = 128, max_objects: int = 4,
                   word_prob: float = 0.3) -> Scene:
    """Scene `index` of `seed`: 1..max_objects non-overlapping shapes, maybe a printed word,
    a generic caption, the full description and questions with exact answers.

    When the image is too crowded for another object after many tries, fewer are placed (at least
    one always is)."""
    check_options(size, max_objects, word_prob)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InputError(f"index must be a non-negative integer, got {index!r}")
    rng = random.Random(f"{seed}:{index}:layout")
    background = rng.choice(BACKGROUNDS)
    wanted = rng.randint(1, max_objects)
    word = rng.choice(WORDS) if rng.random() < word_prob else None
    margin = max(2, size // 32)
    band = word_band(size) if word else None
    bottom_limit = (band[1] - margin) if band else (size - 1 - margin)

    objects: list[SceneObject] = []
    for _ in range(wanted):
        kind, colour = rng.choice(KINDS), rng.choice(sorted(COLOURS))
        size_name = rng.choice(sorted(SIZES))
        r = max(2, round(SIZES[size_name] * size))
        for _try in range(_PLACEMENT_TRIES):
            x = rng.randint(margin + r, size - 1 - margin - r)
            y = rng.randint(margin + r, bottom_limit - r)
            candidate = SceneObject(kind, colour, size_name, x, y, r)
            if all(apart(candidate, other, margin) for other in objects):
                objects.append(candidate)
                break

    scene = Scene(seed=seed, index=index, size=size, background=background, objects=objects,
                  word=word, word_band=band)
    scene.caption = caption_for(scene, random.Random(f"{seed}:{index}:caption"))
    scene.description = describe(scene)
    scene.questions = make_questions(scene, random.Random(f"{seed}:{index}:questions"))
    return scene


def word_band(size: int) -> tuple[int, int, int, int]:
    """The full-width band at the bottom kept free for the sign: (left, top, right, bottom)."""
    margin = max(2, size // 32)
    height = font_size(size) + 2 * text_padding(size)
    return (0, size - margin - height, size - 1, size - 1 - margin)


def font_size(size: int) -> int:
    return max(8, round(0.14 * size))


def text_padding(size: int) -> int:
    return max(2, size // 32)


def apart(a: SceneObject, b: SceneObject, gap: int) -> bool:
    """True when the bounding boxes are separated by at least `gap` pixels on some axis."""
    return (abs(a.x - b.x) >= a.r + b.r + gap + 1) or (abs(a.y - b.y) >= a.r + b.r + gap + 1)
