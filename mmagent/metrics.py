"""Text metrics used by tests and benchmarks; the evaluation's metrics are in `mmagent.eval.metrics`."""

from __future__ import annotations


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate (jiwer) after the evaluation's normaliser: case and punctuation ignored,
    numbers such as 9.75 kept whole. An empty reference: 0 for an empty hypothesis, else 1."""
    from .eval.metrics import _needs, wer_normalize

    jiwer = _needs("jiwer", "wer")
    ref, hyp = wer_normalize(reference), wer_normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp)) if hyp else 1.0
