"""The router (`--pipeline auto`, the default): each request goes to the route that answers it best.

    START → route → tools.begin → …        (the tool chain's own nodes)
                  → adapter.begin → …      (the adapter route's)
                  → hybrid.begin → …  /  unified.begin → …  /  any plugin's route

Every registered graph with a `brain` (`GraphSpec.brain`) is a route; the router builds each one
that can run here and copies its nodes into this graph under its name ("tools.answer"), so the
chosen route runs exactly as it does alone, with no nested graph on the way.

The `route` node classifies the request and chooses:

1. **What is asked.** The question's text, or — when the prompt is empty and audio carries the
   question — its transcript (ASR runs first; the route reuses it). Media a brain cannot take
   (a video) are expanded by a plugin's converter tool first, so the router sees the keyframes.
2. **Measured competence.** A `mmagent.routing.Competence` (`[router] competence`, else what
   `mmagent route fit --from EVAL_DIR…` wrote under MMAGENT_HOME, else the one shipped for the
   offline defaults)
   tells the question type from the MiniLM question embedding and cheap image features, and each
   route's expected accuracy and latency for that type come from eval results.
3. **Policy.** `[router] policy`: quality, latency, local-only or a latency budget
   (`mmagent.routing.policy`), among the routes that can serve (roles available, an image for a
   VLM route).
4. **Capability negotiation.** What the chosen route's brain does not take natively reaches it
   through encoders (audio → transcript, images → OCR/caption for a text LLM, video → keyframes and
   audio track); the downgrades are recorded.

The decision — route, policy, the scores that chose it, the runner-up, the question type, the
downgrades and the router's own steps — is the state's `route` field and `mmagent run --json`'s.
"""

from __future__ import annotations

import time
from typing import Any

from mmagent.config import RouterSettings
from mmagent.errors import ConfigError, InputError
from mmagent.routing import load_competence
from mmagent.graphs_registry import GraphSpec, get_graphs
from mmagent.toolbox import Toolbox
from mmagent.tools import get_tools

from .intent import question_vector
from .kit import (MMState, Nodes, emit, expanded_media, files_in_scope, label_of, last_human, message_media,
                  stored_message, text_of)

#: Images of a request the router looks at (features are averaged).
MAX_IMAGES = 4


def builder(toolbox: Toolbox | None = None, *, planner: str = "auto", **options: Any):
    """The uncompiled router graph over every route that can run here."""
    from langgraph.graph import START, StateGraph

    toolbox = toolbox or Toolbox()
    nodes = RouterNodes(toolbox)
    graph = StateGraph(MMState)
    for spec in nodes.serving:
        nodes.entries[spec.name] = inline(graph, spec.build(toolbox, planner=planner, **options), spec.name)
    # The route node jumps (Command) to the chosen route; it runs that route's `begin` itself, so
    # routing costs one node, not two plus an edge.
    graph.add_node("route", nodes.route, destinations=tuple(target for target, _ in nodes.entries.values()))
    graph.add_edge(START, "route")
    return graph


def build_graph(toolbox: Toolbox | None = None, *, checkpointer: Any = None, **options: Any):
    """The compiled router graph."""
    return builder(toolbox, **options).compile(checkpointer=checkpointer, name="auto")


def route_specs(settings: RouterSettings) -> list[GraphSpec]:
    """The registered routes (graphs with a brain), narrowed to `[router] routes` when set."""
    routes = [spec for spec in get_graphs().graphs.values() if spec.brain]
    if settings.routes:
        known = {spec.name: spec for spec in routes}
        unknown = [name for name in settings.routes if name not in known]
        if unknown:
            raise ConfigError(f"router.routes names {', '.join(unknown)}, which are not routes "
                              f"(routes: {', '.join(known) or 'none'})")
        routes = [known[name] for name in settings.routes]
    return routes


# -- copying a route's graph in ------------------------------------------------------------------------


def inline(parent, child, prefix: str) -> tuple[str, Any]:
    """Copy `child`'s nodes and edges into `parent` under `prefix` ("tools.answer"); return (the node
    to go to, the route's `begin` function or None). A route that starts with a `begin` node
    followed by one plain edge (mmagent's graph-kit convention) has `begin` handed back instead of
    copied: the router runs it in its own node. A graph this cannot copy faithfully (deferred
    joins, Command routing) is added whole as a subgraph node instead."""
    from langgraph.graph import END, START

    entries = [end for start, end in child.edges if start == START]
    copyable = (len(entries) == 1 and not child.waiting_edges
                and all(not spec.ends and not spec.defer for spec in child.nodes.values())
                and all(b.ends for branches in child.branches.values() for b in branches.values()))
    if not copyable:
        parent.add_node(prefix, child.compile(checkpointer=False))
        return prefix, None

    def name(node: str) -> str:
        return node if node in (START, END) else f"{prefix}.{node}"

    entry, begin = entries[0], None
    after = [end for start, end in child.edges if start == entry]
    func = getattr(child.nodes[entry].runnable, "func", None)
    if entry == "begin" and len(after) == 1 and entry not in child.branches and callable(func):
        begin = func
    for node, spec in child.nodes.items():
        if begin is not None and node == entry:
            continue
        parent.add_node(name(node), spec.runnable, metadata=spec.metadata, input_schema=spec.input_schema,
                        retry_policy=spec.retry_policy, cache_policy=spec.cache_policy)
    for start, end in child.edges:
        if start != START and not (begin is not None and start == entry):
            parent.add_edge(name(start), name(end))
    for source, branches in child.branches.items():
        for branch in branches.values():
            parent.add_conditional_edges(name(source), branch.path, {k: name(v) for k, v in branch.ends.items()})
    return (name(after[0]), begin) if begin is not None else (name(entry), None)


# -- the route node ---------------------------------------------------------------------------------------


class RouterNodes(Nodes):
    def __init__(self, toolbox: Toolbox | None = None):
        super().__init__(toolbox)
        self.settings = self.tools.settings.router
        self.competence = load_competence(self.tools.settings)
        self.routes = route_specs(self.settings)
        self.why_not: dict[str, str] = {}
        for spec in self.routes:
            reasons = [r for r in (self.tools.why_unavailable(role) for role in spec.roles) if r]
            if reasons:
                self.why_not[spec.name] = reasons[0]
        self.serving = [spec for spec in self.routes if spec.name not in self.why_not]
        self.local = {spec.name: self._local(spec) for spec in self.routes}
        #: route -> (the node to go to, its `begin` to run here or None); filled by `builder`
        self.entries: dict[str, tuple[str, Any]] = {}
        self._image_features: dict[str, Any] = {}
        self._embed_problem: str | None = None

    def route(self, state: MMState):
        """Classify the request, choose a route, record why; go there."""
        from langgraph.types import Command

        from mmagent.routing import RouteOption, choose

        start = time.perf_counter()
        index, message = last_human(state)
        if message is None:
            raise InputError("nothing to do: the conversation has no human message")
        out: dict[str, Any] = {}
        stored = stored_message(message)
        if stored is not None:  # inline media: stored once here, the route's begin sees references
            out["messages"] = [stored]
            message = stored
        messages = list(state.get("messages") or [])
        messages[index] = message
        view: dict[str, Any] = {**state, "messages": messages}
        media = message_media(message)
        question = text_of(message).strip()
        if not question and not media:
            raise InputError("nothing to do: give a prompt, an image or audio")
        steps: list[dict] = []

        # Media no brain reads as they are (a video) are expanded first: the router sees the frames.
        expansion = self.expand(view, media, brain=None)
        if expansion["expanded"]:
            out["expanded"] = expansion["expanded"]
            view["expanded"] = {**(view.get("expanded") or {}), **expansion["expanded"]}
        steps += expansion["steps"]
        spoken = False
        audio = [p for p in expanded_media(view, media) if p.type == "audio"]
        if not question and audio:  # the audio carries the question: transcribe it to route on it
            heard = self.observe(view, "transcribe", audio)
            steps += heard["steps"]
            out["observations"] = heard["observations"]
            question = " ".join(a["text"] for a in heard["artifacts"] if a.get("text")).strip()
            spoken = True

        images = files_in_scope(view, "image")
        kinds = {p.type for p in expanded_media(view, media)} | {p.type for p in files_in_scope(view)}
        types, method, embed_steps, domain = self._question_types(question, images, bool(audio), spoken)
        steps += embed_steps

        options = []
        for spec in self.routes:
            option = RouteOption(spec.name, local=self.local[spec.name], extends=spec.extends)
            missing = [k for k in spec.needs if k not in kinds]
            if spec.name in self.why_not:
                option.unusable = self.why_not[spec.name]
            elif missing:
                option.unusable = f"needs {' and '.join(missing)} (the request has none)"
            expected = self.competence.expected(spec.name, types) \
                if self.competence is not None and domain.get("inside", True) else None
            if expected is None:
                option.accuracy, option.measured = self.settings.unmeasured, False
            else:
                option.accuracy, option.latency = expected
                option.measured = True
            options.append(option)
        decision = choose(options, self.settings)
        chosen = next(spec for spec in self.routes if spec.name == decision.route)
        record: dict[str, Any] = {
            "route": decision.route, "runner_up": decision.runner_up, "policy": decision.policy,
            "reason": decision.reason, "scores": decision.scores, "method": method,
            "question": question, "spoken": spoken,
            "question_type": {t: round(p, 4) for t, p in sorted(types.items(), key=lambda kv: -kv[1])[:3]} if types else {},
            "downgrades": self.negotiate(chosen, view, media),
            **({"domain": domain} if domain else {}),
            "message_id": message.id,
        }
        # its own time: the calls it made (ASR, the embedding, a converter) are steps of their own
        own = time.perf_counter() - start - sum(s.get("seconds", 0) for s in steps)
        step = {"tool": "router", "name": "route", "seconds": round(max(own, 0.0), 4),
                "output": f"{decision.route} ({decision.reason})"}
        emit({"step": step})
        record["steps"] = [*steps, step]
        record["artifacts"] = expansion["artifacts"]  # what a converter made (the route's begin starts afresh)
        out["route"] = record
        target, begin = self.entries.get(decision.route, (decision.route, None))
        if begin is not None:  # the route's first node, run here: one step less on every request
            started = begin({**view, **{k: v for k, v in out.items() if k in ("expanded",)}})
            out = {**started, **out, "expanded": {**started.get("expanded", {}), **out.get("expanded", {})}}
        return Command(goto=target, update=out)

    # -- classification ---------------------------------------------------------------------------------

    def _question_types(self, question: str, images: list, has_audio: bool, spoken: bool):
        """(P(type) or None, method, steps, domain): the learned classifier when the embedder
        matches the competence file; None (each route's overall figures) otherwise. `domain` says
        whether the images are like those the routes were measured on; when they are not, no
        measurement applies (every route gets the `unmeasured` prior)."""
        if self.competence is None:
            return None, "none (no competence file: every route unmeasured)", [], {}
        features = [f for f in (self._features(p) for p in images[:MAX_IMAGES]) if f is not None]
        distance = self.competence.domain_distance(features)
        domain: dict[str, Any] = {}
        if distance is not None:
            threshold = self.competence.domain["threshold"]
            domain = {"distance": round(distance, 3), "threshold": threshold, "inside": distance <= threshold}
            if not domain["inside"]:
                return None, (f"out of the measured domain (the images are {distance:.2f} from every image the "
                              f"routes were measured on; threshold {threshold:.2f}): every route unmeasured"), [], domain
        if not question or not self.tools.has("embed"):
            why = "no question text" if not question else "no embedder here"
            return None, f"overall ({why})", [], domain
        embedder = self.tools.get("embed")
        start = time.perf_counter()
        step: dict[str, Any] = {"tool": "embed", "backend": embedder.name, "model": embedder.model_id}
        try:
            vector = question_vector(embedder, question)  # the route's intent step reuses it
        except Exception as exc:  # noqa: BLE001 - routing falls back to overall figures
            step.update(seconds=round(time.perf_counter() - start, 4), error=str(exc))
            return None, "overall (the embedder failed)", [step], domain
        problem = self.competence.accepts_embedder(embedder.name, embedder.model_id, len(vector))
        step.update(seconds=round(time.perf_counter() - start, 4), output="question embedded")
        if problem:
            return None, f"overall ({problem})", [step], domain
        x = self.competence.vector(vector, features, has_audio=has_audio, spoken=spoken)
        return self.competence.type_probabilities(x), "learned (question embedding + image features)", [step], domain

    def _features(self, part):
        from mmagent.routing import image_features

        sha = part.ref.sha256
        if sha not in self._image_features:
            try:
                self._image_features[sha] = image_features(part.read_bytes())
            except (OSError, ValueError):
                self._image_features[sha] = None
        return self._image_features[sha]

    def _local(self, spec: GraphSpec) -> bool:
        for role in spec.roles:
            try:
                backend = self.tools.get(role)
            except Exception:  # noqa: BLE001 - an unavailable role: unusable anyway
                continue
            if hasattr(backend, "is_local") and not backend.is_local():
                return False
        return True

    # -- capability negotiation -------------------------------------------------------------------------

    def negotiate(self, spec: GraphSpec, view: dict, media: list) -> list[str]:
        """What reaches the chosen route's brain other than natively, one line per medium."""
        out = []
        expanded = view.get("expanded") or {}
        for part in media:
            label = label_of(media, part)
            if part.ref.sha256 in expanded:
                kinds = [d.get("type") for d in expanded[part.ref.sha256]]
                what = " + ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
                out.append(f"{label} -> {what} (converter tool)")
                continue
            if self.takes(spec.brain, part.type):
                continue
            if part.type == "audio":
                out.append(f"{label} -> transcript ({self._who('asr')})")
            elif part.type == "image":
                readers = [t.name for t in get_tools().available(self.tools, reads="image") if t.auto]
                out.append(f"{label} -> text from tools ({', '.join(readers) or 'none available'})")
            else:
                out.append(f"{label} -> not readable by {spec.brain} and no converter tool")
        return out

    def _who(self, role: str) -> str:
        if not self.tools.has(role):
            return f"{role}: unavailable"
        backend = self.tools.get(role)
        return f"{role}/{backend.name}"
