"""Eval statistics: percentiles, POPE, paired comparison, telephone-loss attribution, summary.json."""

from __future__ import annotations

import json
import random

import pytest

from mmagent.errors import InputError
from mmagent.eval.stats import (classify, attribution, bootstrap_ci, compare, mcnemar_p, percentile, pope,
                                summarize)


def row(item_id, pipeline, *, score=None, correct=None, type=None, prediction="", reference=("x",),
        seconds=1.0, **extra):
    correct = bool(score) if correct is None else correct
    score = float(correct) if score is None else score
    return {"item_id": item_id, "pipeline": pipeline, "type": type, "question": f"q {item_id}",
            "prediction": prediction, "reference": list(reference), "score": score, "correct": correct,
            "metrics": {"score": score}, "seconds": seconds, "stages": {}, "intermediates": {},
            "evidence": [], "error": None, "peak_rss_mb": None, **extra}


# --- percentile ---------------------------------------------------------------------------------

def test_percentile_interpolates_linearly():
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)  # 1 + 0.95 * 3
    assert percentile([7], 95) == 7.0
    assert percentile([], 50) is None and percentile([None, 2.0], 50) == 2.0
    with pytest.raises(InputError):
        percentile([1], 101)


# --- POPE -----------------------------------------------------------------------------------------

def test_pope_on_a_constructed_set():
    rows = [
        row("1", "p", prediction="Yes, there is.", reference=["yes"]),        # TP
        row("2", "p", prediction="No.", reference=["yes"]),                   # FN
        row("3", "p", prediction="I cannot tell.", reference=["yes"]),        # FN, unanswered
        row("4", "p", prediction="Yes", reference=["no"]),                    # FP
        row("5", "p", prediction="No, there isn't.", reference=["no"]),       # TN
        row("6", "p", prediction="There is no red circle.", reference=["No"]),  # TN
        row("7", "p", prediction="yes", reference=["3"]),                     # not an existence row
    ]
    out = pope(rows)
    # precision 1/2, recall 1/3, F1 = 2 * 1/2 * 1/3 / (1/2 + 1/3) = 0.4
    assert out == {"n": 6, "yes_ratio": 0.3333, "precision": 0.5, "recall": 0.3333, "f1": 0.4,
                   "accuracy": 0.5, "unanswered": 1}


def test_pope_without_any_yes_does_not_divide_by_zero():
    out = pope([row("1", "p", prediction="no", reference=["yes"]), row("2", "p", prediction="no", reference=["no"])])
    assert out["precision"] == 0.0 and out["recall"] == 0.0 and out["f1"] == 0.0 and out["yes_ratio"] == 0.0
    assert out["accuracy"] == 0.5
    assert pope([])["n"] == 0


# --- McNemar, bootstrap, compare -------------------------------------------------------------

def test_mcnemar_exact_p():
    # 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096
    assert mcnemar_p(10, 2) == pytest.approx(0.03857, abs=1e-5)
    assert mcnemar_p(2, 10) == mcnemar_p(10, 2)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(6, 0) == pytest.approx(2 / 64)


def test_bootstrap_ci_is_seeded_and_contains_the_mean():
    rng = random.Random(1)
    diffs = [rng.choice([-1.0, 0.0, 0.0, 1.0, 1.0]) for _ in range(60)]
    mean = sum(diffs) / len(diffs)
    lo, hi = bootstrap_ci(diffs, n_boot=1000, seed=3)
    assert lo < mean < hi and hi - lo < 0.6
    assert bootstrap_ci(diffs, n_boot=1000, seed=3) == [lo, hi]
    assert bootstrap_ci(diffs, n_boot=1000, seed=4) != [lo, hi]
    assert bootstrap_ci([0.5, 0.5], n_boot=10) == [0.5, 0.5]
    assert bootstrap_ci([]) is None


def _paired_rows():
    rows = []
    # 10 items only a gets right, 2 only b, 8 both, 4 neither; item "extra" only a has
    outcomes = [(1, 0)] * 10 + [(0, 1)] * 2 + [(1, 1)] * 8 + [(0, 0)] * 4
    for i, (x, y) in enumerate(outcomes):
        kind = "count" if i % 2 else "colour"
        rows.append(row(f"i{i:02d}", "a", correct=bool(x), type=kind))
        rows.append(row(f"i{i:02d}", "b", correct=bool(y), type=kind))
    rows.append(row("extra", "a", correct=True))
    return rows, outcomes


def test_compare_pairs_items_and_tests_the_difference():
    rows, outcomes = _paired_rows()
    out = compare(rows, "a", "b", n_boot=500, seed=0)
    assert out["a"] == "a" and out["b"] == "b" and out["n"] == 24
    assert out["accuracy_a"] == round(18 / 24, 4) and out["accuracy_b"] == round(10 / 24, 4)
    assert out["diff"] == round(8 / 24, 4)
    assert out["a_only"] == 10 and out["b_only"] == 2
    assert out["mcnemar_p"] == 0.0386
    lo, hi = out["ci95"]
    assert lo < out["diff"] < hi
    assert compare(rows, "a", "b", n_boot=500, seed=0) == out
    random.Random(5).shuffle(rows)
    assert compare(rows, "a", "b", n_boot=500, seed=0) == out  # row order does not matter
    count = [o for i, o in enumerate(outcomes) if i % 2]
    assert out["by_type"]["count"] == {"n": 12, "accuracy_a": round(sum(x for x, _ in count) / 12, 4),
                                       "accuracy_b": round(sum(y for _, y in count) / 12, 4)}
    swapped = compare(rows, "b", "a", n_boot=500, seed=0)
    assert swapped["diff"] == -out["diff"] and swapped["mcnemar_p"] == out["mcnemar_p"]
    assert swapped["a_only"] == 2 and swapped["b_only"] == 10
    with pytest.raises(InputError, match="'c'"):
        compare(rows, "a", "c")


# --- attribution -------------------------------------------------------------------------------

def test_attribution_classes():
    rows = [
        row("ok", "tools", correct=True, intermediates={"caption": "whatever"}),
        row("r1", "tools", type="read", reference=["stop"], intermediates={"ocr": "The sign says STOP."}),
        row("r2", "tools", type="count", reference=["3"], intermediates={"caption": "There are three shapes."}),
        row("r3", "tools", type="count", reference=["2"], evidence=["two red circles"],
            intermediates={"caption": "I see two red circles", "ocr": ""}),
        row("d1", "tools", type="extract", reference={"total": 9.75, "note": None},
            intermediates={"ocr": "TOTAL: $9.75"}),
        row("p1", "tools", type="count", reference=["3"],
            intermediates={"caption": "A few shapes on a plain background."}),
        row("p2", "tools", type="read", reference=["cat"], intermediates={"ocr": "concatenate"}),  # whole tokens
        row("u1", "tools", type="existence", reference=["no"], intermediates={"caption": "no shapes"}),
        row("n1", "tools", type="count", reference=["3"], intermediates={}),
        row("n2", "tools", type="count", reference=["3"], intermediates={"caption": "  ", "ocr": None}),
        row("e1", "tools", type="count", reference=["3"], error="BackendError: boom",
            intermediates={"caption": "3 shapes"}),
    ]
    out = attribution(rows)
    assert {k: out[k] for k in ("wrong", "perception", "reasoning", "unknown", "no_intermediates", "error")} == {
        "wrong": 10, "perception": 2, "reasoning": 4, "unknown": 1, "no_intermediates": 2, "error": 1}
    assert out["by_type"]["count"] == {"wrong": 6, "perception": 1, "reasoning": 2, "unknown": 0,
                                       "no_intermediates": 2, "error": 1}
    assert out["by_type"]["read"]["reasoning"] == 1 and out["by_type"]["read"]["perception"] == 1
    assert [e["item_id"] for e in out["examples"]["reasoning"]] == ["d1", "r1", "r2", "r3"]
    assert out["examples"]["unknown"] == [{"item_id": "u1", "question": "q u1", "prediction": "",
                                           "reference": ["no"]}]


def test_evidence_facts_are_all_needed_reference_answers_are_alternatives():
    # Counting three shapes needs all three written down; one of them is not enough.
    partial = row("c1", "tools", type="count", reference=["3"],
                  evidence=["red circle", "blue square", "green triangle"], intermediates={"caption": "a red circle"})
    whole = row("c2", "tools", type="count", reference=["3"], evidence=["red circle", "blue square"],
                intermediates={"caption": "a red circle and a blue square"})
    either = row("a1", "tools", type="read", reference=["stop", "halt"], intermediates={"ocr": "HALT"})
    assert [classify(r) for r in (partial, whole, either)] == ["perception", "reasoning", "reasoning"]


def test_attribution_keeps_five_examples_per_class():
    rows = [row(f"i{i}", "tools", reference=["3"], intermediates={"caption": "shapes"}) for i in range(8)]
    out = attribution(rows)
    assert out["perception"] == 8 and len(out["examples"]["perception"]) == 5


# --- summarize ---------------------------------------------------------------------------------

def _fixture():
    return [
        row("q1", "tools", type="count", correct=False, seconds=9.0, prediction="Two.", reference=["3"],
            stages={"caption": 2.0, "llm": 7.0}, intermediates={"caption": "three shapes"},
            metrics={"score": 0.0, "relaxed": 1.0}, peak_rss_mb=900.0, suite="scenes-vqa"),
        row("q1", "adapter", type="count", correct=True, seconds=0.3, prediction="3", reference=["3"],
            stages={"vlm": 0.3}, metrics={"score": 1.0, "relaxed": 1.0}, peak_rss_mb=500.0, suite="scenes-vqa"),
        row("q2", "tools", type="existence", correct=True, seconds=8.0, prediction="Yes.", reference=["yes"],
            stages={"caption": 3.0, "llm": 5.0}, intermediates={"caption": "a red circle"},
            metrics={"score": 1.0, "relaxed": 0.0}, peak_rss_mb=950.0, suite="scenes-vqa"),
        row("q2", "adapter", type="existence", correct=True, seconds=0.2, prediction="yes", reference=["yes"],
            stages={"vlm": 0.2}, metrics={"score": 1.0}, suite="scenes-vqa"),
        row("q3", "tools", type=None, correct=False, score=0.0, seconds=0.01, prediction="", reference=["stop"],
            metrics={}, error="BackendError: out of memory", suite="scenes-vqa"),
        row("q3", "adapter", type=None, correct=False, seconds=0.4, prediction="go", reference=["stop"],
            stages={"vlm": 0.4}, metrics={"score": 0.0}, suite="scenes-vqa"),
    ]


def test_summarize_structure_and_values():
    summary = summarize(_fixture(), metric="scene_answer", n_boot=200, seed=1)
    assert list(summary) == ["suite", "metric", "n_items", "pipelines", "comparisons", "attribution"]
    assert summary["suite"] == "scenes-vqa" and summary["metric"] == "scene_answer" and summary["n_items"] == 3
    assert list(summary["pipelines"]) == ["tools", "adapter"]
    tools = summary["pipelines"]["tools"]
    assert set(tools) == {"accuracy", "n", "correct", "errors", "latency_p50_s", "latency_p95_s", "stages",
                          "peak_rss_mb", "batch_size", "metrics", "by_type", "pope"}
    assert tools["accuracy"] == 0.3333 and tools["n"] == 3 and tools["correct"] == 1 and tools["errors"] == 1
    # latency over the rows without error: 9.0 and 8.0
    assert tools["latency_p50_s"] == 8.5 and tools["latency_p95_s"] == 8.95
    assert tools["stages"] == {"caption": {"p50_s": 2.5, "p95_s": 2.95}, "llm": {"p50_s": 6.0, "p95_s": 6.9}}
    assert tools["peak_rss_mb"] == 950.0 and tools["metrics"] == {"relaxed": 0.5}
    assert tools["by_type"] == {
        "(none)": {"accuracy": 0.0, "n": 1, "latency_p50_s": None},
        "count": {"accuracy": 0.0, "n": 1, "latency_p50_s": 9.0},
        "existence": {"accuracy": 1.0, "n": 1, "latency_p50_s": 8.0},
    }
    assert tools["pope"] == {"n": 1, "yes_ratio": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0,
                             "accuracy": 1.0, "unanswered": 0}
    adapter = summary["pipelines"]["adapter"]
    assert adapter["accuracy"] == 0.6667 and adapter["errors"] == 0 and adapter["latency_p50_s"] == 0.3
    assert adapter["peak_rss_mb"] == 500.0 and adapter["metrics"] == {"relaxed": 1.0}
    assert adapter["stages"] == {"vlm": {"p50_s": 0.3, "p95_s": 0.39}}

    [comparison] = summary["comparisons"]
    assert comparison["a"] == "tools" and comparison["b"] == "adapter" and comparison["n"] == 3
    assert comparison["diff"] == -0.3333 and comparison["a_only"] == 0 and comparison["b_only"] == 1
    assert comparison["mcnemar_p"] == 1.0 and len(comparison["ci95"]) == 2

    assert list(summary["attribution"]) == ["tools"]  # the adapter wrote no intermediate text
    attr = summary["attribution"]["tools"]
    assert attr["wrong"] == 2 and attr["reasoning"] == 1 and attr["error"] == 1  # "three shapes" holds "3"
    assert json.loads(json.dumps(summary)) == summary
    assert summarize(_fixture(), metric="scene_answer", n_boot=200, seed=1) == summary


def test_summarize_pairs_every_two_pipelines_in_order_of_appearance():
    rows = [row(str(i), name, correct=(i + k) % 2 == 0) for k, name in enumerate(["c", "a", "b"]) for i in range(4)]
    summary = summarize(rows, n_boot=50)
    assert [(c["a"], c["b"]) for c in summary["comparisons"]] == [("c", "a"), ("c", "b"), ("a", "b")]
    assert summary["suite"] is None and summary["attribution"] == {}
    assert all("pope" not in p for p in summary["pipelines"].values())
    assert summary["pipelines"]["c"]["peak_rss_mb"] is None


def test_summarize_reports_pope_when_every_reference_is_yes_or_no():
    rows = [row("1", "p", prediction="yes", reference=["yes"], correct=True),
            row("2", "p", prediction="yes", reference=["no"], correct=False)]
    assert summarize(rows)["pipelines"]["p"]["pope"]["precision"] == 0.5


def test_summarize_rejects_rows_that_are_not_results():
    with pytest.raises(InputError, match="row 2"):
        summarize([row("1", "p"), {"prediction": "x"}])
