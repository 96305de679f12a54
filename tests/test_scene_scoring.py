"""Scoring free-text replies against the scenes' one-word answers: the same rule for every pipeline."""

from __future__ import annotations

import pytest

from mmagent.scenes.scoring import extract, is_correct


@pytest.mark.parametrize("reply, answer, qtype, right", [
    ("Yes, there is a red circle.", "yes", "existence", True),
    ("No.", "yes", "existence", False),
    ("I cannot tell.", "no", "existence", False),  # no answer word at all is wrong, not a guess
    ("There are 3 shapes.", "3", "count", True),
    ("three", "3", "count", True),
    ("There are no squares.", "0", "count", True),
    ("Two circles and one square.", "1", "count", False),  # the first number counts
    ("The circle is purple.", "purple", "colour", True),
    ("It is a large blue object.", "red", "colour", False),
    ("Triangles.", "triangle", "shape", True),
    ("It is a square.", "circle", "shape", False),
    ("The sign says STOP.", "stop", "read", True),
    ("stopping", "stop", "read", False),
])
def test_replies_are_scored_by_their_first_answer_word(reply, answer, qtype, right):
    assert is_correct(reply, answer, qtype) is right


def test_extract_returns_empty_when_the_reply_has_no_answer_word():
    assert extract("", "count") == "" and extract("a shape", "colour") == ""
    assert extract("yes", "position") == "yes" and extract("Blue.", "colour") == "blue"
