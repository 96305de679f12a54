"""Unified: one model reads the text, images and audio itself (GPT-4o-class over an OpenAI-compatible
API, or a local server such as vLLM or Ollama): nothing is transcribed, captioned or read first.

    START → begin → negotiate → answer → [render] → END

Capability negotiation: a configured model that does not take a kind natively (llava under Ollama
reads images, not audio: `options = { accepts = ["text", "image"] }`) gets that kind through the
tools instead — audio transcribed, images read (OCR) and captioned — and the plan records the
downgrade.

Same state (`mmagent.graphs.kit.MMState`) and `--json` shape as the other pipelines. The model is
the `unified` role (`[roles.unified]` in the config; the `openai` backend by default, which needs
OPENAI_API_KEY or OPENAI_BASE_URL).
"""

from __future__ import annotations

from typing import Any

from mmagent.toolbox import Toolbox

from .kit import MMState, Nodes, files_in_scope, needs_render, turn_media
from .tool_chain import resolve_output


def builder(toolbox: Toolbox | None = None, **_: Any):
    """The uncompiled unified graph (options such as `planner` are accepted and ignored)."""
    from langgraph.graph import END, START, StateGraph

    nodes = _UnifiedNodes(toolbox or Toolbox())
    graph = StateGraph(MMState)
    graph.add_node("begin", nodes.begin)
    graph.add_node("negotiate", nodes.negotiate)
    graph.add_node("answer", nodes.answer)
    graph.add_node("render", nodes.render)
    graph.add_edge(START, "begin")
    graph.add_edge("begin", "negotiate")
    graph.add_edge("negotiate", "answer")
    graph.add_conditional_edges("answer", needs_render, {"render": "render", END: END})
    graph.add_edge("render", END)
    return graph


def build_graph(toolbox: Toolbox | None = None, *, checkpointer: Any = None, **options: Any):
    """The compiled unified graph."""
    return builder(toolbox, **options).compile(checkpointer=checkpointer, name="unified")


class _UnifiedNodes(Nodes):
    brain = "unified"

    def negotiate(self, state: MMState) -> dict:
        """Encode with tools what the model does not take natively: audio -> transcript, images ->
        OCR text and a caption."""
        out: dict = {"artifacts": [], "steps": [], "observations": {}}
        encoders = []
        if turn_media(state, "audio") and not self.takes("unified", "audio"):
            encoders.append(self.transcribe)
        if files_in_scope(state, "image") and not self.takes("unified", "image"):
            encoders += [self.read_text, self.caption]
        for encode in encoders:
            got = encode(state)
            out["artifacts"] += got["artifacts"]
            out["steps"] += got["steps"]
            out["observations"].update(got["observations"])
            if got.get("question"):
                out["question"] = got["question"]
        return out

    def answer(self, state: MMState) -> dict:
        intent, steps = self.intent(state.get("question", ""))
        out = self.unified_answer(state)
        native = {k: self.takes("unified", k) for k in ("image", "audio")}
        plan = {"planner": "unified", "intent": intent.top, "images": len(files_in_scope(state, "image")),
                "audio": len(turn_media(state, "audio")), "output": resolve_output(state, intent),
                "downgrades": [f"{k} -> tools ({'transcript' if k == 'audio' else 'OCR + caption'})"
                               for k, ok in native.items() if not ok
                               and (files_in_scope(state, k) if k == "image" else turn_media(state, k))]}
        return {**out, "steps": [*steps, *out["steps"]], "plan": plan}
