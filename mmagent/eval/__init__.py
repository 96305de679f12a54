"""`mmagent eval`: the same items through several pipelines, scored, compared and reported.

    from mmagent.eval import run_eval
    run_eval(suite="scenes-vqa", pipelines=["tools", "adapter"], out="runs/scenes", limit=40)

See docs/eval.md. Importing this package loads nothing heavy. It is also the built-in plugin
("eval") that registers mmagent's own suites and metrics, through the hooks any plugin uses.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from .core import EvalItem, Metric, Suite, get_metrics, get_suites

__all__ = ["EvalItem", "Metric", "Suite", "get_metrics", "get_suites", "run_eval"]


def run_eval(*args, **kwargs):
    """See `mmagent.eval.runner.run_eval`."""
    from .runner import run_eval as _run_eval

    return _run_eval(*args, **kwargs)


@hookimpl
def register_metrics(register):
    from .metrics import BUILTIN_METRICS

    for metric in BUILTIN_METRICS:
        register(metric)


@hookimpl
def register_suites(register):
    from .suites import builtin_suites

    for suite in builtin_suites():
        register(suite)
