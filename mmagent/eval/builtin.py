"""mmagent's own suites and metrics, registered through the same hooks a plugin uses."""

from __future__ import annotations

from ..hookspecs import hookimpl


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
