"""LLM + adapter: a vision-language model reads the images itself (LLaVA, BLIP-2, Qwen-VL, or
mmagent's own scene-world VLM); audio is still transcribed first, and the answer can be rendered
as speech or an image like in the tool chain.

    START → listen → see → [render] → END

Same state and `--json` shape as the tool chain: steps, artifacts, plan, outputs.
"""

from __future__ import annotations

from typing import Any

from mmagent.backends.results import Message
from mmagent.content.parts import TextPart
from mmagent.toolbox import Toolbox

from .nodes import PipelineNodes, PipelineState, inputs_of, needs_render, output_for

SYSTEM = "Answer the question about the image(s) briefly and exactly."


def build_graph(toolbox: Toolbox, *, planner: str = "auto", checkpointer: Any = None):
    """Compile the adapter graph (`planner` is accepted for a uniform signature; there is none)."""
    from langgraph.graph import END, START, StateGraph

    nodes = _AdapterNodes(toolbox)
    graph = StateGraph(PipelineState)
    graph.add_node("listen", nodes.listen)
    graph.add_node("see", nodes.see)
    graph.add_node("render", nodes.render)
    graph.add_edge(START, "listen")
    graph.add_edge("listen", "see")
    graph.add_conditional_edges("see", needs_render, {"render": "render", END: END})
    graph.add_edge("render", END)
    return graph.compile(checkpointer=checkpointer)


class _AdapterNodes(PipelineNodes):
    def see(self, state: PipelineState) -> dict:
        """The VLM answers over the images and the question (plus any transcripts as context)."""
        question = state.get("question", "")
        intent, steps = self.intent(question)
        images = [part for _, _, part in inputs_of(state, "image")]
        context = [a for a in state.get("artifacts", []) if a["kind"] == "transcript"]
        text = question
        if state.get("prompt") and context:  # a typed question about a recording
            text = "\n".join(f"[{a['label']}] {a['text']}" for a in context) + f"\n\n{state['prompt']}"
        messages = [Message("system", SYSTEM), Message("user", [*images, TextPart(text)])]
        result, step = self._call("vlm", lambda vlm: vlm.chat(messages, max_tokens=64), required=True)
        plan = {"planner": "adapter", "intent": intent.top, "images": len(images), "output": output_for(state, intent)}
        return {"answer": result.text, "steps": [*steps, step], "plan": plan}
