"""The built-in eval metrics against hand-computed values."""

from __future__ import annotations

import pytest

from mmagent.errors import InputError
from mmagent.eval.core import EvalItem, Metric
from mmagent.eval.metrics import (BUILTIN_METRICS, _levenshtein, anls, bleu, chrf, contains, exact_match,
                                  field_match, first_json_object, levenshtein, normalize, scene_answer,
                                  scene_caption, vqa_accuracy, vqa_normalize, wer, wer_normalize)


def item(answer, **kwargs) -> EvalItem:
    return EvalItem(id="i1", question="q", answer=answer, **kwargs)


# --- normalization, exact_match, contains -----------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("The total is $9.75.", "total is 9.75"),
    ("1,000 apples", "1000 apples"),
    ("Three  Red, circles!", "3 red circles"),
    ("An apple's core", "apples core"),
    ("twenty-one", "20 1"),
    ("A t-shirt", "t shirt"),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("prediction, answers, score", [
    ("Three.", ["3"], 1.0),
    ("the red one", ["red one"], 1.0),
    ("$9.75", ["9.75"], 1.0),
    ("9.75", ["975"], 0.0),
    ("There are 3 shapes.", ["3"], 0.0),
    ("blue", ["red", "Blue"], 1.0),
])
def test_exact_match(prediction, answers, score):
    assert exact_match(prediction, item(answers)) == {"score": score}


@pytest.mark.parametrize("prediction, answers, score", [
    ("There are 3 shapes.", ["3"], 1.0),
    ("There are three shapes.", ["3"], 1.0),
    ("There are 33 shapes.", ["3"], 0.0),         # whole tokens only
    ("It is a red circle.", ["red circle"], 1.0),
    ("The circle is red.", ["red circle"], 0.0),  # a contiguous run, in order
    ("The total is $9.75.", ["9.75"], 1.0),
    ("The total is 9", ["9.75"], 0.0),
])
def test_contains(prediction, answers, score):
    assert contains(prediction, item(answers)) == {"score": score}


def test_answer_list_metrics_refuse_dict_or_missing_references():
    with pytest.raises(InputError, match="field_match"):
        exact_match("x", item({"a": 1}))
    with pytest.raises(InputError, match="no reference answer"):
        contains("x", item([]))


# --- VQA accuracy ------------------------------------------------------------------------------

@pytest.mark.parametrize("agree, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_with_ten_annotator_answers(agree, expected):
    # leave-one-out mean of min(1, matches/3): k=3 -> (3 * 2/3 + 7 * 1) / 10 = 0.9
    answers = ["red"] * agree + ["blue"] * (10 - agree)
    assert vqa_accuracy("Red", item(answers))["score"] == pytest.approx(expected)


def test_vqa_accuracy_normalizes_like_the_official_evaluation():
    answers = ["2"] * 4 + ["two dogs"] * 6
    assert vqa_accuracy("Two", item(answers))["score"] == 1.0
    assert vqa_normalize("Yes, it is.") == "yes it is"
    assert vqa_normalize("dont know") == "don't know" == vqa_normalize("don't know")
    assert vqa_normalize("couldnt've") == "couldn't've"
    assert vqa_normalize("9.75") == "9.75" and vqa_normalize("1,000") == "1000"
    assert vqa_normalize("the dog.") == "dog" and vqa_normalize("none") == "0"


def test_vqa_accuracy_compares_whole_answers_and_reports_relaxed_containment():
    out = vqa_accuracy("It is red.", item(["red"] * 10))
    assert out == {"score": 0.0, "relaxed": 1.0}


def test_vqa_accuracy_with_fewer_than_three_answers_means_accepted_answers():
    assert vqa_accuracy("red", item(["red"]))["score"] == 1.0
    assert vqa_accuracy("red", item(["blue", "red"]))["score"] == 1.0
    assert vqa_accuracy("green", item(["blue", "red"]))["score"] == 0.0
    # three answers are votes: one of three agreeing -> (1 * 0 + 2 * 1/3) / 3
    assert vqa_accuracy("red", item(["red", "blue", "blue"]))["score"] == pytest.approx(2 / 9)


# --- ANLS ------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, distance", [("kitten", "sitting", 3), ("", "abc", 3), ("abc", "abc", 0),
                                            ("flaw", "lawn", 2)])
def test_levenshtein(a, b, distance):
    assert _levenshtein(a, b) == distance == levenshtein(a, b) == _levenshtein(b, a)


@pytest.mark.parametrize("prediction, answers, expected", [
    ("hallo", ["hello"], 0.8),               # 1 edit / 5
    ("Hello ", ["hello"], 1.0),              # lowercased, stripped
    ("abcdef", ["abcxyz"], 0.0),             # NL = 0.5 is not below tau
    ("abcdex", ["abcdef"], 1 - 1 / 6),
    ("hallo", ["zzzzz", "hello"], 0.8),      # best accepted answer
    ("", ["abc"], 0.0),
])
def test_anls(prediction, answers, expected):
    assert anls(prediction, item(answers))["score"] == pytest.approx(expected)


# --- WER -------------------------------------------------------------------------------------

def test_wer_keeps_decimal_numbers_as_one_word():
    out = wer("the total is 9.75", item(["the total is 9.75 dollars"]))
    # 5 reference words, one deleted; were 9.75 split in two it would be 1/6
    assert out["wer"] == pytest.approx(0.2) and out["score"] == pytest.approx(0.8)
    # characters: 25 in the reference, the 8 of " dollars" deleted
    assert out["cer"] == pytest.approx(8 / 25)
    assert wer_normalize("The total is $9.75.") == "the total is 9.75"


def test_wer_ignores_case_and_punctuation_and_takes_the_best_reference():
    assert wer("The total is $9.75.", item(["the total is 9.75"])) == {"score": 1.0, "wer": 0.0, "cer": 0.0}
    out = wer("a b c", item(["x y z", "a b d"]))
    assert out["wer"] == pytest.approx(1 / 3)
    assert wer("", item(["hello world"]))["score"] == 0.0
    assert wer("a b c d e", item(["x"]))["score"] == 0.0  # WER 5: the score stops at 0


# --- field_match ------------------------------------------------------------------------------

def test_field_match_numbers_strings_and_fences():
    prediction = ('Here you go:\n```json\n{"total": "$9.75", "vendor": "ACME Inc.", "date": "2024-01-05"}\n'
                  "```\nanything else?")
    out = field_match(prediction, item({"total": 9.75, "vendor": "acme inc", "date": "2024-01-06"}))
    assert out == {"score": pytest.approx(2 / 3), "parsed": 1.0, "field:total": 1.0, "field:vendor": 1.0,
                   "field:date": 0.0}


@pytest.mark.parametrize("reference, value, hit", [
    (9.75, "9.75", True), (9.75, 9.75, True), ("9.75", "$9.75", True), ("$9.75", 9.750, True),
    (1000, "1,000", True), (9.75, "9.7", False), (3, "three", True),
    (True, "yes", True), (False, True, False), (None, "", True), (None, "x", False),
    (["a", "b"], ["B", "a"], True), (["a", "b"], ["a"], False),
    ({"city": "Paris", "zip": 75001}, {"City": "paris", "zip": "75001"}, True),
])
def test_field_match_values(reference, value, hit):
    out = field_match(f'{{"f": {__import__("json").dumps(value)}}}', item({"f": reference}))
    assert out["field:f"] == float(hit)


def test_field_match_unparsable_and_missing():
    assert field_match("no json here", item({"total": 9.75, "x": "y"})) == {
        "score": 0.0, "parsed": 0.0, "field:total": 0.0, "field:x": 0.0}
    assert field_match('{"total": 9.75}', item({"total": 9.75, "x": "y"}))["score"] == 0.5
    assert first_json_object('text {broken {"a": {"b": 1}} tail}') == {"a": {"b": 1}}
    assert first_json_object("[1, 2]") is None
    with pytest.raises(InputError, match="dict of reference fields"):
        field_match("{}", item(["9.75"]))


# --- scenes ------------------------------------------------------------------------------------

def test_scene_answer_uses_the_scene_scorer():
    assert scene_answer("There are three shapes.", item(["3"], type="count")) == {"score": 1.0}
    assert scene_answer("Two circles and one square.", item(["1"], type="count")) == {"score": 0.0}
    assert scene_answer("Yes, there is.", item(["no"], type="existence")) == {"score": 0.0}


def test_scene_caption_object_recall():
    objects = [["red", "circle"], ["blue", "square"], ["green", "triangle"], ["red", "circle"]]
    it = item(["A red circle, a blue square and a green triangle."], meta={"objects": objects})
    out = scene_caption("Two red small circles and some blue squares; a triangle.", it)
    assert out["score"] == pytest.approx(2 / 3)  # red circle (size word between), blue squares; no green
    assert 0.0 <= out["bleu"] < 1.0
    assert scene_caption("red and blue circles", item([], meta={"objects": [["red", "circle"],
                                                                           ["blue", "circle"]]})) == {"score": 0.5}
    with pytest.raises(InputError, match="meta.objects"):
        scene_caption("x", item(["x"]))


# --- captions ---------------------------------------------------------------------------------

def test_bleu_and_chrf_are_sentence_scores_in_unit_range():
    it = item(["a red circle above a blue square", "a blue square under a red circle"])
    assert bleu("a red circle above a blue square", it) == {"score": 1.0, "bleu": 1.0}
    assert chrf("a blue square under a red circle", it)["score"] == pytest.approx(1.0)
    partial = bleu("a red circle above a green triangle", it)["score"]
    assert 0.0 < partial < 1.0
    assert bleu("zzz", it)["score"] < 0.1 and chrf("zzz", it)["score"] < 0.1


# --- the registry list -------------------------------------------------------------------------

def test_builtin_metrics():
    names = [m.name for m in BUILTIN_METRICS]
    assert names == ["exact_match", "contains", "vqa_accuracy", "anls", "wer", "field_match", "scene_answer",
                     "bleu", "chrf", "scene_caption"]
    assert all(isinstance(m, Metric) for m in BUILTIN_METRICS)
    thresholds = {m.name: m.threshold for m in BUILTIN_METRICS}
    assert thresholds["anls"] == 0.5 and thresholds["wer"] == 0.9 and thresholds["exact_match"] == 1.0
    metric = {m.name: m for m in BUILTIN_METRICS}["contains"]
    assert metric("There are 3 shapes.", item(["3"])) == {"score": 1.0}
