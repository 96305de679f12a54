"""The two texts of a scene: a generic caption (what a typical captioner says, details lost) and
the full description (everything the questions can ask about)."""

from __future__ import annotations

import random

from .model import Scene, SceneObject
from .vocab import CAPTIONS, ROWS


def caption_for(scene: Scene, rng: random.Random) -> str:
    """A generic caption: never a colour, a size or a count beyond "single"."""
    return rng.choice(CAPTIONS[(len(scene.objects) > 1, scene.word is not None)])


def where(obj: SceneObject, image_size: int) -> str:
    """Rough position: "at the top left", "in the centre", "at the bottom centre"..."""
    row, column = obj.row(image_size), obj.column(image_size)
    if (row, column) == ("middle", "centre"):
        return "in the centre"
    return f"at the {row} {column}"


#: where an object is along one axis, in the words the description (and the encoder) use
ROW_SAID = {"top": "at the top", "middle": "in the middle", "bottom": "at the bottom"}
COLUMN_SAID = {"left": "on the left", "centre": "in the centre", "right": "on the right"}


def explain_position(a: SceneObject, name_a: str, b: SceneObject, name_b: str, horizontal: bool, answer: str,
                     image_size: int) -> str:
    """A position answer with its reasons: each object's column (or row) in words, then the answer —
    "The green triangle is on the left and the red circle is in the centre, so yes." A small LLM
    reads each object's place from the image in one step, as it reads a colour, but does not compare
    two places in one; said first, the comparison is one of two words in the text."""
    said = ((lambda o: COLUMN_SAID[o.column(image_size)]) if horizontal
            else (lambda o: ROW_SAID[o.row(image_size)]))
    return f"{name_a[0].upper()}{name_a[1:]} is {said(a)} and {name_b} is {said(b)}, so {answer}."


def phrase(obj: SceneObject, image_size: int) -> str:
    return f"a {obj.size} {obj.colour} {obj.kind} {where(obj, image_size)}"


def describe(scene: Scene) -> str:
    """Every object (size, colour, kind, rough position) in reading order, then the word if any:
    "A large red circle at the top left, a small blue square at the bottom right. The word STOP
    is written at the bottom." """
    ordered = sorted(scene.objects, key=lambda o: (ROWS.index(o.row(scene.size)), o.x))
    text = ", ".join(phrase(o, scene.size) for o in ordered)
    text = text[0].upper() + text[1:] + "."
    if scene.word:
        text += f" The word {scene.word} is written at the bottom."
    return text
