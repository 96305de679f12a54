"""LLM + tools: encode every input with a tool (ASR, OCR, captioner, detector, or any tool a plugin
registers), let a text LLM answer over what the tools observed, and render the answer as an image
or speech when asked.

    START → begin → transcribe → plan → observe → answer → [render] → END     (rule planner)
    START → begin → transcribe → agent ⇄ act → [render] → END                 (LLM tool-calling planner)

The rule planner picks tools from the tool registry by the media present and the question's
intent; the LLM planner is offered every available tool. Nothing here names a particular tool
beyond the transcription of spoken questions, so a plugin's tool needs no edit of this graph.
"""

from __future__ import annotations

from typing import Any

from mmagent.errors import InputError
from mmagent.toolbox import Toolbox
from mmagent.tools import get_tools

from .kit import MMState, Nodes, failed_tools, files_in_scope, needs_render

PLANNERS = ("auto", "rules", "llm")
#: Rounds of tool calls the LLM planner may make in one turn before it must answer.
MAX_AGENT_TURNS = Nodes.MAX_TOOL_ROUNDS


def builder(toolbox: Toolbox | None = None, *, planner: str = "auto", **_: Any):
    """The uncompiled tool-chain graph. `planner`: "rules", "llm" (tool calling) or "auto"."""
    from langgraph.graph import END, START, StateGraph

    toolbox = toolbox or Toolbox()
    if planner not in PLANNERS:
        raise InputError(f"unknown planner '{planner}' (use auto, rules or llm)")
    llm_calls_tools = toolbox.has("llm") and getattr(toolbox.get("llm"), "supports_tools", False)
    if planner == "llm" and not llm_calls_tools:
        what = describe(toolbox, "llm")
        raise InputError(f"--planner llm needs a chat model that calls tools; {what} does not "
                         "(use --planner rules, or an llm backend with tool calling such as openai)")
    if planner == "auto":
        planner = "llm" if llm_calls_tools else "rules"
    nodes = _ToolChainNodes(toolbox)
    graph = StateGraph(MMState)
    graph.add_node("begin", nodes.begin)
    graph.add_node("transcribe", nodes.transcribe)
    graph.add_node("render", nodes.render)
    graph.add_edge(START, "begin")
    graph.add_edge("begin", "transcribe")
    if planner == "rules":
        graph.add_node("plan", nodes.plan)
        graph.add_node("observe", nodes.run_planned_tools)
        graph.add_node("answer", nodes.answer)
        graph.add_edge("transcribe", "plan")
        graph.add_edge("plan", "observe")
        graph.add_edge("observe", "answer")
        graph.add_conditional_edges("answer", needs_render, {"render": "render", END: END})
    else:
        graph.add_node("agent", nodes.agent_turn)
        graph.add_node("act", nodes.act)
        graph.add_edge("transcribe", "agent")
        graph.add_conditional_edges("agent", _after_agent, {"act": "act", "render": "render", END: END})
        graph.add_edge("act", "agent")
    graph.add_edge("render", END)
    return graph


def build_graph(toolbox: Toolbox | None = None, *, planner: str = "auto", checkpointer: Any = None, **options: Any):
    """The compiled tool-chain graph (with `checkpointer` for conversation threads)."""
    return builder(toolbox, planner=planner, **options).compile(checkpointer=checkpointer, name="tools")


def describe(toolbox: Toolbox, role: str) -> str:
    backend = toolbox.get(role)
    return f"{role}/{backend.name} ({backend.model_id})"


def _after_agent(state: MMState) -> str:
    if state["messages"][-1].tool_calls:
        return "act"
    return needs_render(state)


class _ToolChainNodes(Nodes):
    brain = "llm"

    def plan(self, state: MMState) -> dict:
        """Choose the tools for the media in scope from the registry, by the question's intent."""
        intent, steps = self.intent(state.get("question", ""))
        chosen, skipped = [], {}
        kinds = {p.type for p in files_in_scope(state)} - {"audio"}  # audio was transcribed already
        for kind in sorted(kinds):
            candidates = [t for t in get_tools().list() if t.file_kind == kind]
            reasons = {t.name: self.tools.why_unavailable(t.role) if t.role else None for t in candidates}
            focused = [t for t in candidates if intent.top in t.intents and intent.top != "describe"]
            general = [t for t in candidates if t.auto or any(intent.wants(i) for i in t.intents)]
            # The tools focused on the intent when one can run; else the general ones (a count
            # question with no detector here is still answered from the caption and OCR).
            usable = [t for t in focused if not reasons[t.name]] or [t for t in general if not reasons[t.name]]
            chosen += [t.name for t in usable]
            skipped.update({t.name: reasons[t.name] for t in [*focused, *general] if reasons[t.name]})
        output = resolve_output(state, intent)
        plan = {"planner": "rules", "intent": intent.top, "intent_scores": {k: round(v, 3) for k, v in intent.scores.items()},
                "intent_method": intent.method, "tools": chosen, "skipped": skipped, "output": output}
        return {"plan": plan, "steps": steps}

    def answer(self, state: MMState) -> dict:
        plan = state["plan"]
        transcripts = [a["text"] for a in state.get("artifacts", []) if a.get("kind") == "transcript"]
        if plan.get("intent") == "transcribe" and transcripts and not plan["tools"]:
            return self._say("\n".join(transcripts))
        if plan.get("intent") == "verbatim":  # "what word is written?": the text OCR read, as read
            read = [a for a in state.get("artifacts", []) if a.get("kind") == "ocr" and a.get("text")
                    and a["text"] != "(no text found)"]
            if read:
                text = read[0]["text"] if len(read) == 1 else "\n".join(f"{a['label']}: {a['text']}" for a in read)
                return {**self._say(text), "plan": {**plan, "answer": "verbatim (OCR)"}}
        if plan["output"] == "image" and plan.get("intent") == "image":
            return self._say(f"An image of: {state['question']}")
        said = self.said_and_shown(state, self.intent(state.get("question", ""))[0]) if transcripts else []
        seen = [f"{a['label']}: {a['text'].strip()}" for a in state.get("artifacts", [])
                if a.get("kind") in ("caption", "ocr", "detections") and a.get("text")
                and a["text"] != "(no text found)"]
        if said and seen:  # "what is said and what is shown": the transcript, then what the tools saw
            return {**self.compose(said, "; ".join(seen)), "plan": {**plan, "answer": "said + shown"}}
        failed = failed_tools(state)
        observed = [a for a in state.get("artifacts", []) if a.get("text") and a.get("kind") != "transcript"]
        if failed and plan["tools"] and not observed:
            # every tool on the files failed: say so instead of letting the LLM answer blind
            return {**self._say("I could not look at the files: " + "; ".join(failed) + "."),
                    "plan": {**plan, "answer": "tools failed"}}
        return self.llm_answer(state)

    def agent_turn(self, state: MMState) -> dict:
        out = self.agent(state)
        if "answer" in out:
            intent, _ = self.intent(state.get("question", ""))
            out["plan"] = {**state.get("plan", {}), "planner": "llm", "intent": intent.top,
                           "output": resolve_output(state, intent)}
        elif not state.get("plan", {}).get("planner"):
            out["plan"] = {**state.get("plan", {}), "planner": "llm"}
        return out

    def _say(self, text: str) -> dict:
        from langchain_core.messages import AIMessage

        return {"answer": text, "messages": [AIMessage(text)]}


def resolve_output(state: MMState, intent) -> str:
    """The answer's modality: as requested, else what the question asks for; a tool that already
    made it (the LLM planner called `speak`) counts as the answer in that modality."""
    output = state.get("plan", {}).get("output") or state.get("output") or "auto"
    if output == "auto":
        made = {p.get("type") for p in state.get("outputs") or []}
        # "What is said in the clip" is near "say it" but asks for a transcript, not a spoken answer:
        # speech is asked for when it outscores transcription.
        spoken = intent.wants("speech") and intent.scores.get("speech", 0) > intent.scores.get("transcribe", 0)
        output = "image" if intent.top == "image" or "image" in made else \
            "speech" if spoken or "audio" in made else "text"
    return output
