"""Statistics over results rows (`mmagent.eval.results`): latency percentiles, POPE hallucination
rates, paired comparisons, telephone-loss attribution, and `summarize` — the `summary.json` object:

    {"suite": str | None,            # as given, else the rows' "suite" when they all agree
     "metric": str | None,           # as given
     "n_items": int,                 # distinct item_ids
     "pipelines": {NAME: {           # in order of first appearance in the rows
         "accuracy": float,          # mean score (a row without a score, e.g. an error, scores 0)
         "n": int,                   # rows
         "correct": int,             # rows with correct true
         "errors": int,              # rows with an error
         "latency_p50_s": float | None, "latency_p95_s": float | None,   # over rows without error
         "stages": {STAGE: {"p50_s": float, "p95_s": float}},          # likewise, sorted by name
         "peak_rss_mb": float | None,                                   # max over rows
         "batch_size": int | None,                                      # the largest --batch-size of its rows
         "metrics": {KEY: float},    # mean of each other numeric key of the rows' "metrics"
                                     # (wer, cer, relaxed, field:NAME...) over the rows that have it
         "by_type": {TYPE: {"accuracy": float, "n": int, "latency_p50_s": float | None}},
                                     # sorted; a row whose type is None is under "(none)"
         "pope": {...},              # pope(): only when there are existence rows (type
                                     # "existence", or every reference is yes or no)
     }},
     "comparisons": [compare(rows, A, B) for each pair A before B in pipeline order],
     "attribution": {NAME: attribution(rows of NAME)},   # pipelines whose rows have intermediates
    }

Floats are rounded to 4 places (a p-value of 0.0 means below 0.00005). The same rows give the same
summary whatever their order, and the bootstrap is seeded: a summary is deterministic.
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import combinations
from typing import Any, Iterable

from ..errors import InputError
from .metrics import contains_tokens, tokens

NONE_TYPE = "(none)"
ATTRIBUTION_CLASSES = ("perception", "reasoning", "unknown", "no_intermediates", "error")
_BOOT_CHUNK = 250


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _score(row: dict[str, Any]) -> float:
    return _number(row.get("score")) or 0.0


def _type(row: dict[str, Any]) -> str:
    kind = row.get("type")
    return NONE_TYPE if kind is None else str(kind)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _check(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = list(rows)
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "item_id" not in row or "pipeline" not in row:
            raise InputError(f"row {number} is not a results row (needs item_id and pipeline)")
    return rows


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation (numpy's default); None when empty."""
    import numpy as np

    if not 0 <= q <= 100:
        raise InputError(f"percentile q must be in [0, 100], not {q}")
    data = [v for v in (_number(x) for x in values) if v is not None]
    return float(np.percentile(data, q)) if data else None


# ---------------------------------------------------------------------------------------------
# POPE


def _yes_no(text: Any) -> str | None:
    from ..scenes.scoring import words

    return next((w for w in words(str(text or "")) if w in ("yes", "no")), None)


def _reference_yes_no(reference: Any) -> str | None:
    if isinstance(reference, str):
        reference = [reference]
    if isinstance(reference, list) and len(reference) == 1 and isinstance(reference[0], str):
        value = reference[0].strip().lower()
        return value if value in ("yes", "no") else None
    return None


def pope(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """POPE's hallucination numbers over the rows whose reference is ["yes"] or ["no"]: the answer
    is the prediction's first yes/no word; precision, recall and F1 are those of "yes" (0 when
    undefined); "unanswered" counts predictions with neither word (wrong, and not a "yes")."""
    pairs = [(ref, _yes_no(row.get("prediction"))) for row in rows
             if (ref := _reference_yes_no(row.get("reference"))) is not None]
    n = len(pairs)
    tp = sum(ref == "yes" and pred == "yes" for ref, pred in pairs)
    fp = sum(ref == "no" and pred == "yes" for ref, pred in pairs)
    fn = sum(ref == "yes" and pred != "yes" for ref, pred in pairs)
    said_yes = tp + fp
    precision = tp / said_yes if said_yes else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return _round({
        "n": n,
        "yes_ratio": said_yes / n if n else 0.0,
        "precision": precision, "recall": recall, "f1": f1,
        "accuracy": sum(ref == pred for ref, pred in pairs) / n if n else 0.0,
        "unanswered": sum(pred is None for _, pred in pairs),
    })


# ---------------------------------------------------------------------------------------------
# Paired comparison


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: binomial test of b successes in b + c trials at 1/2."""
    if b < 0 or c < 0:
        raise InputError("McNemar counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def bootstrap_ci(differences: list[float], *, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the mean of paired differences (numpy RNG, seeded)."""
    import numpy as np

    if n_boot < 1:
        raise InputError(f"n_boot must be at least 1, not {n_boot}")
    if not differences:
        return None
    data = np.asarray(differences, dtype=float)
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, n_boot, _BOOT_CHUNK):
        size = min(_BOOT_CHUNK, n_boot - start)
        means.append(data[rng.integers(0, len(data), size=(size, len(data)))].mean(axis=1))
    boot = np.concatenate(means)
    alpha = (1 - level) / 2 * 100
    return [float(np.percentile(boot, alpha)), float(np.percentile(boot, 100 - alpha))]


def _by_item(rows: list[dict[str, Any]], pipeline: str) -> dict[str, dict[str, Any]]:
    return {str(row["item_id"]): row for row in rows if str(row["pipeline"]) == pipeline}


def compare(rows: Iterable[dict[str, Any]], a: str, b: str, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Pipelines a and b on the items both answered (paired by item_id; a repeated row: the last)."""
    rows = _check(rows)
    left, right = _by_item(rows, a), _by_item(rows, b)
    for name, side in ((a, left), (b, right)):
        if not side:
            raise InputError(f"no results rows for pipeline '{name}'")
    items = sorted(left.keys() & right.keys())
    sa = [_score(left[i]) for i in items]
    sb = [_score(right[i]) for i in items]
    ca = [bool(left[i].get("correct")) for i in items]
    cb = [bool(right[i].get("correct")) for i in items]
    a_only = sum(x and not y for x, y in zip(ca, cb))
    b_only = sum(y and not x for x, y in zip(ca, cb))
    by_type: dict[str, dict[str, Any]] = {}
    for i, x, y in zip(items, sa, sb):
        kind = _type(left[i]) if left[i].get("type") is not None else _type(right[i])
        entry = by_type.setdefault(kind, {"n": 0, "a": [], "b": []})
        entry["n"] += 1
        entry["a"].append(x)
        entry["b"].append(y)
    return _round({
        "a": a, "b": b, "n": len(items),
        "accuracy_a": _mean(sa), "accuracy_b": _mean(sb),
        "diff": _mean([x - y for x, y in zip(sa, sb)]),
        "ci95": bootstrap_ci([x - y for x, y in zip(sa, sb)], n_boot=n_boot, seed=seed),
        "a_only": a_only, "b_only": b_only,
        "mcnemar_p": mcnemar_p(a_only, b_only),
        "by_type": {kind: {"n": e["n"], "accuracy_a": _mean(e["a"]), "accuracy_b": _mean(e["b"])}
                    for kind, e in sorted(by_type.items())},
    })


# ---------------------------------------------------------------------------------------------
# Telephone-loss attribution


def _facts(row: dict[str, Any]) -> list[str]:
    evidence = row.get("evidence")
    if evidence:
        source = evidence if isinstance(evidence, list) else [evidence]
    else:
        reference = row.get("reference")
        if isinstance(reference, dict):
            source = []
            for value in reference.values():
                source.extend(value if isinstance(value, list) else [value])
        elif isinstance(reference, list):
            source = reference
        else:
            source = [reference]
    return [str(fact) for fact in source if fact is not None and not isinstance(fact, (dict, list))]


def _intermediate_text(row: dict[str, Any]) -> str:
    intermediates = row.get("intermediates")
    if not isinstance(intermediates, dict):
        return ""
    return "\n".join(str(v) for v in intermediates.values() if v is not None and str(v).strip())


def classify(row: dict[str, Any]) -> str | None:
    """The loss class of a wrong row (see `attribution`), None for a correct one."""
    if row.get("correct"):
        return None
    if row.get("error"):
        return "error"
    text = _intermediate_text(row)
    if not text:
        return "no_intermediates"
    facts = [words for words in (tokens(f) for f in _facts(row)) if words and words not in (["yes"], ["no"])]
    if not facts:
        return "unknown"
    seen = tokens(text)
    # Evidence lists facts the answer needs, all of them; reference answers are alternatives.
    needed = all if row.get("evidence") else any
    return "reasoning" if needed(contains_tokens(seen, fact) for fact in facts) else "perception"


def attribution(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Why one pipeline's wrong rows are wrong:

        error             the pipeline failed (an error row), nothing to attribute
        no_intermediates  the pipeline wrote no intermediate text (an adapter route)
        unknown           the needed facts are only yes/no: they cannot be looked for
        reasoning         the needed facts occur, normalized and as whole tokens, in the
                          intermediate texts — every fact of row["evidence"] (all are needed),
                          else any reference answer (they are alternatives; a dict reference:
                          its values): the tools saw it, the LLM lost it
        perception        they do not: the tools never wrote it down

    Returns {"wrong", one count per class, "by_type": {TYPE: same counts}, "examples": {class: up
    to 5 of (item_id, question, prediction, reference)}}."""
    rows = _check(rows)
    counts: Counter[str] = Counter()
    by_type: dict[str, Counter[str]] = {}
    examples: dict[str, list[dict[str, Any]]] = {cls: [] for cls in ATTRIBUTION_CLASSES}
    for row in sorted(rows, key=lambda r: str(r["item_id"])):
        cls = classify(row)
        if cls is None:
            continue
        kind = by_type.setdefault(_type(row), Counter())
        for counter in (counts, kind):
            counter["wrong"] += 1
            counter[cls] += 1
        if len(examples[cls]) < 5:
            examples[cls].append({"item_id": row["item_id"], "question": row.get("question"),
                                  "prediction": row.get("prediction"), "reference": row.get("reference")})

    def table(counter: Counter[str]) -> dict[str, int]:
        return {"wrong": counter["wrong"], **{cls: counter[cls] for cls in ATTRIBUTION_CLASSES}}

    return {**table(counts), "by_type": {k: table(v) for k, v in sorted(by_type.items())}, "examples": examples}


# ---------------------------------------------------------------------------------------------
# summary.json


def _is_existence(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    typed = [row for row in rows if row.get("type") == "existence"]
    if typed:
        return typed
    if rows and all(_reference_yes_no(row.get("reference")) is not None for row in rows):
        return rows
    return []


def _pipeline_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [row for row in rows if not row.get("error")]
    seconds = [row.get("seconds") for row in ok]
    stages: dict[str, list[float]] = {}
    for row in ok:
        for stage, value in (row.get("stages") or {}).items():
            if _number(value) is not None:
                stages.setdefault(str(stage), []).append(float(value))
    extra: dict[str, list[float]] = {}
    for row in rows:
        for key, value in (row.get("metrics") or {}).items():
            if key != "score" and _number(value) is not None:
                extra.setdefault(str(key), []).append(float(value))
    types: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        types.setdefault(_type(row), []).append(row)
    peaks = [v for v in (_number(row.get("peak_rss_mb")) for row in rows) if v is not None]
    summary = {
        "accuracy": _mean([_score(row) for row in rows]),
        "n": len(rows),
        "correct": sum(bool(row.get("correct")) for row in rows),
        "errors": len(rows) - len(ok),
        "latency_p50_s": percentile(seconds, 50),
        "latency_p95_s": percentile(seconds, 95),
        "stages": {stage: {"p50_s": percentile(values, 50), "p95_s": percentile(values, 95)}
                   for stage, values in sorted(stages.items())},
        "peak_rss_mb": max(peaks) if peaks else None,
        "batch_size": max((int(row["batch_size"]) for row in rows if _number(row.get("batch_size"))), default=None),
        "metrics": {key: _mean(values) for key, values in sorted(extra.items())},
        "by_type": {kind: {"accuracy": _mean([_score(r) for r in group]), "n": len(group),
                           "latency_p50_s": percentile([r.get("seconds") for r in group if not r.get("error")], 50)}
                    for kind, group in sorted(types.items())},
    }
    existence = _is_existence(rows)
    if existence:
        summary["pope"] = pope(existence)
    return summary


def summarize(rows: Iterable[dict[str, Any]], *, suite: str | None = None, metric: str | None = None,
              n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The `summary.json` object of a run's rows (see the module docstring)."""
    rows = _check(rows)
    pipelines: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        pipelines.setdefault(str(row["pipeline"]), []).append(row)
    if suite is None:
        suites = {row.get("suite") for row in rows}
        suite = suites.pop() if len(suites) == 1 else None
    with_text = [name for name, group in pipelines.items() if any(_intermediate_text(r) for r in group)]
    return _round({
        "suite": suite,
        "metric": metric,
        "n_items": len({str(row["item_id"]) for row in rows}),
        "pipelines": {name: _pipeline_summary(group) for name, group in pipelines.items()},
        "comparisons": [compare(rows, a, b, n_boot=n_boot, seed=seed) for a, b in combinations(pipelines, 2)],
        "attribution": {name: attribution(pipelines[name]) for name in with_text},
    })
