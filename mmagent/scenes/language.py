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


def explain_position(a: SceneObject, name_a: str, b: SceneObject, name_b: str, horizontal: bool, answer: str,
                     image_size: int) -> str:
    """A position answer with its reasons: each object's column (or row) in the description's
    words, then the answer — "The green triangle is at the left and the red circle is at the
    centre, so yes." A small LLM reads an object's place off its image token in one step, as it
    reads a colour, but does not compare two places in one; said first, the comparison is one of
    two words in the text. The place word follows a fixed "at the", so saying it is copying it."""
    said = (lambda o: o.column(image_size)) if horizontal else (lambda o: o.row(image_size))
    return f"{name_a[0].upper()}{name_a[1:]} is at the {said(a)} and {name_b} is at the {said(b)}, so {answer}."


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
