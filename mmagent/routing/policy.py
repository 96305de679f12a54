"""Choosing among the routes that can serve a request (`[router] policy` in mmagent.toml):

    quality      the highest expected accuracy (ties: the faster)
    latency      the fastest route whose expected accuracy is within `margin` of the best
    local-only   quality, among routes whose models run on this machine (no API calls)
    budget       quality, among routes expected to answer within `latency_budget` seconds

A `latency_budget` above 0 also narrows the other policies. A route that extends another (hybrid:
adapter + OCR) is taken only where its expected accuracy beats that route's by `margin`. Routes
that cannot serve (a role not available here, no image for a VLM route) are never chosen; each
says why in the decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..config import ROUTER_POLICIES, RouterSettings
from ..errors import BackendError, ConfigError


@dataclass
class RouteOption:
    name: str
    #: Expected accuracy in [0, 1] (measured, or the `unmeasured` prior).
    accuracy: float = 0.0
    #: Expected seconds per request (None: not measured).
    latency: float | None = None
    measured: bool = False
    local: bool = True
    #: Why this route cannot serve the request (None: it can).
    unusable: str | None = None
    #: The route it adds work to (hybrid extends adapter): chosen only where it beats that by `margin`.
    extends: str | None = None

    def score(self) -> dict[str, Any]:
        out: dict[str, Any] = {"accuracy": round(self.accuracy, 4),
                               "latency_s": None if self.latency is None else round(self.latency, 4),
                               "measured": self.measured, "local": self.local}
        if self.unusable:
            out["unusable"] = self.unusable
        return out


@dataclass
class Decision:
    route: str
    runner_up: str | None
    reason: str
    policy: str
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)


def _speed(o: RouteOption) -> float:
    return math.inf if o.latency is None else o.latency


def choose(options: Sequence[RouteOption], settings: RouterSettings) -> Decision:
    """The route for a request; BackendError (one line) when no route can serve it."""
    policy = settings.policy
    if policy not in ROUTER_POLICIES:
        raise ConfigError(f"router.policy must be one of {', '.join(ROUTER_POLICIES)}, got {policy!r}")
    scores = {o.name: o.score() for o in options}
    by_name = {o.name: o for o in options}
    for o in options:  # a route that adds work to another is kept only where it measurably helps
        base = by_name.get(o.extends) if o.extends else None
        if o.unusable is None and base is not None and base.unusable is None \
                and o.accuracy < base.accuracy + settings.margin:
            o.unusable = (f"adds work to {base.name} for no measured gain here "
                          f"({o.accuracy:.2f} vs {base.accuracy:.2f}, margin {settings.margin:g})")
            scores[o.name]["unusable"] = o.unusable
    usable = [o for o in options if o.unusable is None]
    if not usable:
        why = "; ".join(f"{o.name}: {o.unusable}" for o in options) or "no routes are registered"
        raise BackendError(f"no route can answer this request ({why})")
    if policy == "local-only":
        local = [o for o in usable if o.local]
        for o in usable:
            if not o.local:
                scores[o.name]["unusable"] = "not local (policy local-only)"
        if not local:
            raise BackendError("policy local-only: every route that could answer sends data off this machine ("
                               + ", ".join(o.name for o in usable) + ")")
        usable = local
    note = ""
    budget = settings.latency_budget
    if budget > 0 or policy == "budget":
        if budget <= 0:
            raise ConfigError("router.policy budget needs router.latency_budget (seconds) above 0")
        within = [o for o in usable if o.latency is None or o.latency <= budget]
        for o in usable:
            if o not in within:
                scores[o.name]["unusable"] = f"expected {o.latency:.2f} s, over the {budget:g} s budget"
        if within:
            usable = within
        else:
            usable = [min(usable, key=_speed)]
            note = f"; no route is expected within {budget:g} s, so the fastest"
    ranked = sorted(usable, key=lambda o: (-o.accuracy, _speed(o)))
    if policy == "latency" and len(ranked) > 1:
        best = ranked[0].accuracy
        near = [o for o in ranked if o.accuracy >= best - settings.margin]
        fastest = min(near, key=_speed)
        ranked = [fastest, *[o for o in ranked if o is not fastest]]
        reason = (f"fastest within {settings.margin:g} of the best expected accuracy" if fastest is not near[0]
                  else "highest expected accuracy, and no faster route within the margin")
    else:
        reason = "highest expected accuracy" if len(ranked) > 1 else "the only route that can serve"
    chosen = ranked[0]
    if not chosen.measured:
        reason += f" (unmeasured: prior {chosen.accuracy:g})"
    return Decision(route=chosen.name, runner_up=ranked[1].name if len(ranked) > 1 else None,
                    reason=reason + note, policy=policy, scores=scores)
