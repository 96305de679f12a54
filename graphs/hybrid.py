"""Hybrid: the adapter route with the tools' observations as context. OCR reads the images first
and the vision-language model answers from the pixels *and* the text read from them — for questions
that need both the shapes and a printed word, which neither route answers alone.

    START → begin → transcribe → read_text → see → [render] → END

Whether it helps is measured, not assumed: `mmagent eval --pipelines adapter,hybrid` per question
type, and the router (`--pipeline auto`) sends a request here only where its fitted competence says
hybrid beats the other routes (docs/router.md).
"""

from __future__ import annotations

from typing import Any

from mmagent.toolbox import Toolbox

from .kit import MMState, Nodes, files_in_scope, needs_render
from .tool_chain import resolve_output


def builder(toolbox: Toolbox | None = None, **_: Any):
    """The uncompiled hybrid graph (options such as `planner` are accepted and ignored)."""
    from langgraph.graph import END, START, StateGraph

    nodes = _HybridNodes(toolbox or Toolbox())
    graph = StateGraph(MMState)
    graph.add_node("begin", nodes.begin)
    graph.add_node("transcribe", nodes.transcribe)
    graph.add_node("read_text", nodes.read_text)
    graph.add_node("see", nodes.see)
    graph.add_node("render", nodes.render)
    graph.add_edge(START, "begin")
    graph.add_edge("begin", "transcribe")
    graph.add_edge("transcribe", "read_text")
    graph.add_edge("read_text", "see")
    graph.add_conditional_edges("see", needs_render, {"render": "render", END: END})
    graph.add_edge("render", END)
    return graph


def build_graph(toolbox: Toolbox | None = None, *, checkpointer: Any = None, **options: Any):
    """The compiled hybrid graph."""
    return builder(toolbox, **options).compile(checkpointer=checkpointer, name="hybrid")


class _HybridNodes(Nodes):
    brain = "vlm"

    def see(self, state: MMState) -> dict:
        """The VLM answers over the images, with the text OCR read from them before the question."""
        intent, steps = self.intent(state.get("question", ""))
        read = [a for a in state.get("artifacts", []) if a.get("kind") == "ocr" and a.get("text")
                and a["text"] != "(no text found)"]
        context = "\n".join(f"Text in {a['label'].removeprefix('text read from ')}: {a['text']}" for a in read)
        transcripts = self.said_and_shown(state, intent)
        if transcripts:  # "what is said and what is shown": the transcript, then what the VLM sees
            seen = self.vlm_answer(state, context=context, question=self.DESCRIBE, transcripts=False)
            out = self.compose(transcripts, seen["answer"] + "".join(f" {line}." for line in context.splitlines()),
                               seen["steps"])
        else:
            out = self.vlm_answer(state, context=context)
        plan = {"planner": "hybrid", "intent": intent.top, "images": len(files_in_scope(state, "image")),
                "context": [a["label"] for a in read], "output": resolve_output(state, intent),
                **({"answer": "said + shown"} if transcripts else {})}
        return {**out, "steps": [*steps, *out["steps"]], "plan": plan}
