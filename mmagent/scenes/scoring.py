"""Score a free-text reply against a scene question's one-word answer.

Pipelines answer in their own words ("Yes, there is a blue circle.", "There are 3 shapes."), so
the scorer pulls out the first word of the answer's own vocabulary — yes/no, a number (digits or
words), a colour, a kind — and compares it with the exact answer. The same rule scores every
pipeline, so the comparison stays fair.
"""

from __future__ import annotations

import re

from .vocab import COLOURS, KINDS, PLURAL

NUMBERS = {"zero": "0", "no": "0", "none": "0", "one": "1", "single": "1", "two": "2", "three": "3",
           "four": "4", "five": "5", "six": "6"}
SINGULAR = {plural: kind for kind, plural in PLURAL.items()}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def extract(reply: str, qtype: str) -> str:
    """The reply's answer in the form the question type uses, or "" when it gives none."""
    tokens = words(reply)
    if qtype in ("existence", "position", "comparison"):
        return next((t for t in tokens if t in ("yes", "no")), "")
    if qtype == "count":
        return next((t if t.isdigit() else NUMBERS[t] for t in tokens if t.isdigit() or t in NUMBERS), "")
    if qtype == "colour":
        return next((t for t in tokens if t in COLOURS), "")
    if qtype == "shape":
        return next((SINGULAR.get(t, t) for t in tokens if t in KINDS or t in SINGULAR), "")
    return tokens[0] if tokens else ""  # read: the word itself


def is_correct(reply: str, answer: str, qtype: str) -> bool:
    """Exact match of the extracted answer; a read answer may stand anywhere in the reply."""
    if qtype == "read":
        return answer.lower() in words(reply)
    return extract(reply, qtype) == answer.lower()
