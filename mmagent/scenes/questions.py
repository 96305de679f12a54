"""Questions with exact answers, computed from a scene's objects (never from its pixels).

Types: existence, colour, shape, count, position, comparison, read. Answers are one lowercase
word ("yes", "no", "red", "circle", "stop") or digits, so scoring is exact match. Each scene gets
two existence questions (one present combination, one absent: yes/no exactly balanced), a colour
and a shape question when some kind / colour is unique, two counts, a position question when two
uniquely named objects are clearly apart, one comparison and, with a word, one read question.
"""

from __future__ import annotations

import random
from collections import Counter

from .language import explain_position
from .model import Question, Scene, SceneObject
from .vocab import COLOURS, KINDS, PLURAL

QUESTION_TYPES = ("existence", "colour", "shape", "count", "position", "comparison", "read")


def make_questions(scene: Scene, rng: random.Random) -> list[Question]:
    objects = scene.objects
    questions: list[Question] = []
    questions += _existence(objects, rng)
    questions += _colour(objects, rng)
    questions += _shape(objects, rng)
    questions += _count(objects, rng)
    questions += _position(objects, rng, scene.size)
    questions += _comparison(objects, rng)
    if scene.word:
        questions.append(Question("read", "What word is written in the image?", scene.word.lower()))
    return questions


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _existence(objects: list[SceneObject], rng: random.Random) -> list[Question]:
    present = sorted({(o.colour, o.kind) for o in objects})
    absent = [(c, k) for c in sorted(COLOURS) for k in KINDS if (c, k) not in present]
    # Half the negatives are near misses (a present colour on another kind, or the reverse):
    # they separate a model that binds colour to shape from one that only lists what it saw.
    near = [(c, k) for c, k in absent if any(c == pc or k == pk for pc, pk in present)]
    pools = {"yes": present, "no": near if near and rng.random() < 0.5 else absent}
    asked = []
    for answer in rng.sample(["yes", "no"], 2):
        colour, kind = rng.choice(pools[answer])
        asked.append(Question("existence", f"Is there a {colour} {kind}?", answer))
    return asked


def _colour(objects: list[SceneObject], rng: random.Random) -> list[Question]:
    kinds = Counter(o.kind for o in objects)
    unique = [o for o in objects if kinds[o.kind] == 1]
    if not unique:
        return []
    obj = rng.choice(unique)
    return [Question("colour", f"What colour is the {obj.kind}?", obj.colour)]


def _shape(objects: list[SceneObject], rng: random.Random) -> list[Question]:
    colours = Counter(o.colour for o in objects)
    unique = [o for o in objects if colours[o.colour] == 1]
    if not unique:
        return []
    obj = rng.choice(unique)
    return [Question("shape", f"What shape is the {obj.colour} object?", obj.kind)]


def _count(objects: list[SceneObject], rng: random.Random) -> list[Question]:
    asked = [Question("count", "How many shapes are there?", str(len(objects)))]
    if rng.random() < 0.5:
        kind = rng.choice(KINDS)
        asked.append(Question("count", f"How many {PLURAL[kind]} are there?",
                              str(sum(o.kind == kind for o in objects))))
    else:
        colour = rng.choice(sorted(COLOURS))
        asked.append(Question("count", f"How many {colour} shapes are there?",
                              str(sum(o.colour == colour for o in objects))))
    return asked


def referring_name(obj: SceneObject, objects: list[SceneObject]) -> str | None:
    """"the red circle" when that names one object, else "the large red circle", else None."""
    if sum((o.colour, o.kind) == (obj.colour, obj.kind) for o in objects) == 1:
        return f"the {obj.colour} {obj.kind}"
    if sum((o.colour, o.kind, o.size) == (obj.colour, obj.kind, obj.size) for o in objects) == 1:
        return f"the {obj.size} {obj.colour} {obj.kind}"
    return None


def _position(objects: list[SceneObject], rng: random.Random, size: int) -> list[Question]:
    """Left/right or above/below between two uniquely named objects whose boxes do not overlap on
    that axis (so the answer is clear to the eye, not a matter of a pixel); `explained` says each
    object's column (or row) first."""
    candidates = []
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            name_a, name_b = referring_name(a, objects), referring_name(b, objects)
            if name_a is None or name_b is None:
                continue
            if abs(a.x - b.x) > a.r + b.r:
                candidates.append((a, b, name_a, name_b, "x"))
            if abs(a.y - b.y) > a.r + b.r:
                candidates.append((a, b, name_a, name_b, "y"))
    if not candidates:
        return []
    a, b, name_a, name_b, axis = rng.choice(candidates)
    if rng.random() < 0.5:
        a, b, name_a, name_b = b, a, name_b, name_a
    if axis == "x":
        relation, truth = rng.choice([("to the left of", a.x < b.x), ("to the right of", a.x > b.x)])
    else:
        relation, truth = rng.choice([("above", a.y < b.y), ("below", a.y > b.y)])
    reasons = explain_position(a, name_a, b, name_b, axis == "x", yes_no(truth), size)
    return [Question("position", f"Is {name_a} {relation} {name_b}?", yes_no(truth), reasons)]


def _comparison(objects: list[SceneObject], rng: random.Random) -> list[Question]:
    """"Are there more circles than squares?" (or colours), the answer drawn yes or no first so
    that the two are balanced (ties and 0-vs-0 would otherwise make most answers "no")."""
    kinds = Counter(o.kind for o in objects)
    colours = Counter(o.colour for o in objects)
    pairs = [(PLURAL[a], PLURAL[b], kinds[a], kinds[b]) for a in KINDS for b in KINDS if a != b]
    pairs += [(f"{a} shapes", f"{b} shapes", colours[a], colours[b])
              for a in sorted(COLOURS) for b in sorted(COLOURS) if a != b]
    want_yes = rng.random() < 0.5
    chosen = [p for p in pairs if (p[2] > p[3]) == want_yes] or pairs
    a, b, count_a, count_b = rng.choice(chosen)
    return [Question("comparison", f"Are there more {a} than {b}?", yes_no(count_a > count_b))]
