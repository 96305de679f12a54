"""Unified: one model reads the text, images and audio itself (GPT-4o-class over an OpenAI-compatible
API, or a local server such as vLLM or Ollama): nothing is transcribed, captioned or read first.

    START → begin → answer → [render] → END

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
    graph.add_node("answer", nodes.answer)
    graph.add_node("render", nodes.render)
    graph.add_edge(START, "begin")
    graph.add_edge("begin", "answer")
    graph.add_conditional_edges("answer", needs_render, {"render": "render", END: END})
    graph.add_edge("render", END)
    return graph


def build_graph(toolbox: Toolbox | None = None, *, checkpointer: Any = None, **options: Any):
    """The compiled unified graph."""
    return builder(toolbox, **options).compile(checkpointer=checkpointer, name="unified")


class _UnifiedNodes(Nodes):
    def answer(self, state: MMState) -> dict:
        intent, steps = self.intent(state.get("question", ""))
        out = self.unified_answer(state)
        plan = {"planner": "unified", "intent": intent.top, "images": len(files_in_scope(state, "image")),
                "audio": len(turn_media(state, "audio")), "output": resolve_output(state, intent)}
        return {**out, "steps": [*steps, *out["steps"]], "plan": plan}
