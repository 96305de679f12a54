"""LLM + tools: encode every input with a tool (ASR, OCR, captioner, detector), let a text LLM
answer over what the tools observed, and render the answer as an image or speech when asked.

    START → listen → plan → look → answer → [render] → END          (rule planner)
    START → listen → agent ⇄ act → [render] → END                   (LLM tool-calling planner)

The state holds parts by reference (`part.to_dict()`), every intermediate as an artifact, and
one step record per tool call with its backend and wall time.
"""

from __future__ import annotations

from typing import Any

from mmagent.backends.results import Message, ToolCall, ToolSpec
from mmagent.content.parts import part_from_dict
from mmagent.errors import InputError
from mmagent.toolbox import Toolbox

from .nodes import PipelineNodes, PipelineState, inputs_of, needs_render, output_for

SYSTEM = ("You answer the user's question using the observations that tools made of the user's files. "
          "Be brief and exact; quote numbers and names as observed.")
MAX_AGENT_TURNS = 6


def build_graph(toolbox: Toolbox, *, planner: str = "auto", checkpointer: Any = None):
    """Compile the tool-chain graph. `planner`: "rules", "llm" (tool calling) or "auto"."""
    from langgraph.graph import END, START, StateGraph

    if planner not in ("auto", "rules", "llm"):
        raise InputError(f"unknown planner '{planner}' (use auto, rules or llm)")
    if planner == "auto":
        planner = "llm" if toolbox.has("llm") and getattr(toolbox.get("llm"), "supports_tools", False) else "rules"
    nodes = _Nodes(toolbox)
    graph = StateGraph(PipelineState)
    graph.add_node("listen", nodes.listen)
    graph.add_node("render", nodes.render)
    graph.add_edge(START, "listen")
    after_answer = {"render": "render", END: END}
    if planner == "rules":
        graph.add_node("plan", nodes.plan)
        graph.add_node("look", nodes.look)
        graph.add_node("answer", nodes.answer)
        graph.add_edge("listen", "plan")
        graph.add_edge("plan", "look")
        graph.add_edge("look", "answer")
        graph.add_conditional_edges("answer", needs_render, after_answer)
    else:
        graph.add_node("agent", nodes.agent)
        graph.add_node("act", nodes.act)
        graph.add_edge("listen", "agent")
        graph.add_conditional_edges("agent", _agent_next, {"act": "act", **after_answer})
        graph.add_edge("act", "agent")
    graph.add_edge("render", END)
    return graph.compile(checkpointer=checkpointer)


def _agent_next(state: PipelineState) -> str:
    if state["messages"][-1].get("tool_calls"):
        return "act"
    return needs_render(state)


class _Nodes(PipelineNodes):
    # -- rule planner ---------------------------------------------------------------------------------

    def plan(self, state: PipelineState) -> dict:
        intent, steps = self.intent(state.get("question", ""))
        has_images = any(True for _ in inputs_of(state, "image"))
        image_tools, skipped = [], {}
        if has_images:
            wanted = ["ocr", "caption"]
            if intent.top == "read":
                wanted = ["ocr"]
            elif intent.top == "describe":
                wanted = ["caption", "ocr"]
            if intent.wants("detect"):
                wanted.append("detect")
            for role in wanted:
                reason = self.tools.why_unavailable(role)
                (skipped.__setitem__(role, reason) if reason else image_tools.append(role))
        output = output_for(state, intent)
        plan = {"planner": "rules", "intent": intent.top, "intent_scores": _round(intent.scores),
                "intent_method": intent.method, "image_tools": image_tools, "skipped": skipped, "output": output}
        return {"plan": plan, "steps": steps}

    def look(self, state: PipelineState) -> dict:
        artifacts, steps = [], []
        methods = {"ocr": "read", "caption": "caption", "detect": "detect"}
        for index, n, part in inputs_of(state, "image"):
            for role in state["plan"]["image_tools"]:
                result, step = self._call(role, lambda b, m=methods[role]: getattr(b, m)(part), index=index)
                steps.append(step)
                if result is not None:
                    artifacts.append(_image_artifact(role, result, index, n))
        return {"artifacts": artifacts, "steps": steps}

    def answer(self, state: PipelineState) -> dict:
        plan, artifacts = state["plan"], state.get("artifacts", [])
        transcripts = [a["text"] for a in artifacts if a["kind"] == "transcript"]
        if plan.get("intent") == "transcribe" and transcripts and not plan["image_tools"]:
            return {"answer": "\n".join(transcripts)}
        if plan["output"] == "image" and plan.get("intent") == "image":
            return {"answer": f"An image of: {state['question']}"}
        observations = "\n".join(f"[{a['label']}]\n{a['text']}" for a in artifacts if a.get("text"))
        question = state["question"]
        if state.get("prompt") and transcripts:  # the audio is material, not the question
            question = state["prompt"]
        user = f"Observations:\n{observations}\n\nQuestion: {question}" if observations else question
        messages = [Message("system", SYSTEM), Message("user", user)]
        result, step = self._call("llm", lambda llm: llm.chat(messages, max_tokens=128), required=True)
        return {"answer": result.text, "steps": [step]}

    # -- LLM tool-calling planner ---------------------------------------------------------------------

    def agent(self, state: PipelineState) -> dict:
        messages = state.get("messages")
        out: dict = {}
        if messages is None:
            inventory = "\n".join(f"- input {i}: {p['type']}" for i, p in enumerate(state.get("inputs", [])))
            first = state.get("prompt", "").strip() or state.get("question", "")
            transcripts = "\n".join(f"[{a['label']}] {a['text']}" for a in state.get("artifacts", []))
            text = "\n\n".join(s for s in (f"Files:\n{inventory}" if inventory else "",
                                          f"Already transcribed:\n{transcripts}" if transcripts else "",
                                          first) if s)
            messages = [{"role": "system", "content": SYSTEM + " Call tools to inspect the files."},
                        {"role": "user", "content": text}]
            output = state["plan"]["output"]
            out["plan"] = {"planner": "llm", "output": "text" if output == "auto" else output}
        turns = sum(1 for m in messages if m["role"] == "assistant")
        specs = self._agent_tools() if turns < MAX_AGENT_TURNS else None
        history = [_to_message(m) for m in messages]
        result, step = self._call("llm", lambda llm: llm.chat(history, tools=specs, max_tokens=256), required=True)
        reply = {"role": "assistant", "content": result.text,
                 "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in result.tool_calls]}
        out.update({"messages": [*messages, reply], "steps": [step]})
        if not result.tool_calls:
            out["answer"] = result.text
        return out

    def act(self, state: PipelineState) -> dict:
        messages = list(state["messages"])
        artifacts, steps, plan = [], [], dict(state["plan"])
        for call in messages[-1]["tool_calls"]:
            text, artifact, step = self._agent_tool(state, call, plan)
            steps.extend([step] if step else [])
            artifacts.extend([artifact] if artifact else [])
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": text})
        return {"messages": messages, "artifacts": artifacts, "steps": steps, "plan": plan}

    def _agent_tools(self) -> list[ToolSpec]:
        specs = []
        for tool, (role, _method, description) in AGENT_TOOLS.items():
            if self.tools.has(role):
                params = {"type": "object", "properties": {"input": {"type": "integer",
                          "description": "index of the file"}}, "required": ["input"]}
                if tool == "detect_objects":
                    params["properties"]["labels"] = {"type": "array", "items": {"type": "string"}}
                if tool in ("generate_image", "speak"):
                    params = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
                specs.append(ToolSpec(tool, description, params))
        return specs

    def _agent_tool(self, state: PipelineState, call: dict, plan: dict) -> tuple[str, dict | None, dict | None]:
        spec = AGENT_TOOLS.get(call["name"])
        if spec is None:
            return f"error: no tool named {call['name']}", None, None
        role, method, _ = spec
        args = call.get("arguments") or {}
        if call["name"] in ("generate_image", "speak"):
            plan["output"] = "image" if call["name"] == "generate_image" else "speech"
            return "ok: the output will be generated after your answer", None, None
        inputs = state.get("inputs", [])
        index = args.get("input")
        if not isinstance(index, int) or not 0 <= index < len(inputs):
            return f"error: input must be an index from 0 to {len(inputs) - 1}", None, None
        part = part_from_dict(inputs[index])
        kwargs = {"labels": args["labels"]} if call["name"] == "detect_objects" and args.get("labels") else {}
        result, step = self._call(role, lambda b: getattr(b, method)(part, **kwargs), index=index)
        if result is None:
            return f"error: {step['error']}", None, step
        n = 1 + sum(1 for p in inputs[:index] if p["type"] == part.type)
        artifact = (_image_artifact(role, result, index, n) if role != "asr" else
                    {"kind": "transcript", "input": index, "label": f"transcript of audio {n}", "text": result.text})
        return artifact["text"], artifact, step

#: Tools offered to a tool-calling LLM: name -> (role, method, description).
AGENT_TOOLS: dict[str, tuple[str, str, str]] = {
    "transcribe_audio": ("asr", "transcribe", "Transcribe the speech in an audio file."),
    "read_text": ("ocr", "read", "Read the printed text in an image (OCR)."),
    "caption_image": ("caption", "caption", "Describe what an image shows."),
    "detect_objects": ("detect", "detect", "Find objects in an image, with boxes."),
    "generate_image": ("image_gen", "generate", "Answer with a generated image of the given text."),
    "speak": ("tts", "synthesize", "Answer with speech instead of text."),
}


def _image_artifact(role: str, result: Any, index: int, n: int) -> dict:
    if role == "ocr":
        return {"kind": "ocr", "input": index, "label": f"text read from image {n}", "text": result.text,
                "lines": [{"text": l.text, "box": list(l.box), "confidence": l.confidence} for l in result.lines]}
    if role == "caption":
        return {"kind": "caption", "input": index, "label": f"caption of image {n}", "text": result}
    detections = [{"label": d.label, "score": round(d.score, 3), "box": [round(v, 1) for v in d.box]}
                  for d in result]
    text = "; ".join(f"{d['label']} ({d['score']:.2f}) at {d['box']}" for d in detections) or "no objects found"
    return {"kind": "detections", "input": index, "label": f"objects in image {n}", "text": text,
            "detections": detections}


def _to_message(data: dict) -> Message:
    calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in data.get("tool_calls") or ())
    return Message(data["role"], data.get("content") or "", tool_calls=calls, tool_call_id=data.get("tool_call_id"))


def _round(scores: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in scores.items()}

