"""LLM + adapter: a vision-language model reads the images itself (LLaVA, BLIP-2, Qwen-VL, or
mmagent's own scene-world VLM); audio is still transcribed first, and the answer can be rendered
as speech or an image like in the tool chain.

    START → begin → transcribe → see → [render] → END

Same state (`mmagent.graphs.kit.MMState`) and `--json` shape as the tool chain.
"""

from __future__ import annotations

from typing import Any

from mmagent.toolbox import Toolbox

from .kit import MMState, Nodes, files_in_scope, needs_render
from .tool_chain import resolve_output

SYSTEM = Nodes.VLM_SYSTEM


def builder(toolbox: Toolbox | None = None, **_: Any):
    """The uncompiled adapter graph (options such as `planner` are accepted and ignored)."""
    from langgraph.graph import END, START, StateGraph

    nodes = _AdapterNodes(toolbox or Toolbox())
    graph = StateGraph(MMState)
    graph.add_node("begin", nodes.begin)
    graph.add_node("transcribe", nodes.transcribe)
    graph.add_node("see", nodes.see)
    graph.add_node("render", nodes.render)
    graph.add_edge(START, "begin")
    graph.add_edge("begin", "transcribe")
    graph.add_edge("transcribe", "see")
    graph.add_conditional_edges("see", needs_render, {"render": "render", END: END})
    graph.add_edge("render", END)
    return graph


def build_graph(toolbox: Toolbox | None = None, *, checkpointer: Any = None, **options: Any):
    """The compiled adapter graph."""
    return builder(toolbox, **options).compile(checkpointer=checkpointer, name="adapter")


class _AdapterNodes(Nodes):
    brain = "vlm"

    def see(self, state: MMState) -> dict:
        """The VLM answers over the images in scope and the question."""
        intent, steps = self.intent(state.get("question", ""))
        transcripts = self.said_and_shown(state, intent)
        if transcripts:  # "what is said and what is shown": the transcript, then what the VLM sees
            seen = self.vlm_answer(state, question=self.DESCRIBE, transcripts=False)  # what it sees, only
            out = self.compose(transcripts, seen["answer"], seen["steps"])
        else:
            out = self.vlm_answer(state)
        plan = {"planner": "adapter", "intent": intent.top, "images": len(files_in_scope(state, "image")),
                "output": resolve_output(state, intent), **({"answer": "said + shown"} if transcripts else {})}
        return {**out, "steps": [*steps, *out["steps"]], "plan": plan}
