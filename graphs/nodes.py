"""Nodes and helpers every pipeline graph shares: the state, timed tool calls, listening to audio
and rendering the answer as speech or an image."""

from __future__ import annotations

import operator
import time
from typing import Annotated, Any, Callable, TypedDict

from mmagent.content.parts import part_from_dict
from mmagent.errors import BackendError, InputError
from mmagent.toolbox import Toolbox

from .intent import Intent, score_intents


class PipelineState(TypedDict, total=False):
    """What flows through a pipeline graph; JSON-shaped, media by reference."""

    prompt: str
    inputs: list[dict]  # parts as dicts (media by reference)
    output: str  # auto | text | image | speech
    question: str
    plan: dict
    messages: list[dict]  # the agent's conversation (LLM planner)
    artifacts: Annotated[list[dict], operator.add]
    steps: Annotated[list[dict], operator.add]
    answer: str
    outputs: Annotated[list[dict], operator.add]  # generated parts as dicts


class PipelineNodes:
    """Nodes bound to a toolbox. Pipelines subclass it and add their own."""

    def __init__(self, toolbox: Toolbox):
        self.tools = toolbox

    def listen(self, state: PipelineState) -> dict:
        """Transcribe every audio input; a spoken question becomes the question."""
        artifacts, steps = [], []
        for index, n, part in inputs_of(state, "audio"):
            transcript, step = self._call("asr", lambda asr: asr.transcribe(part), index=index)
            steps.append(step)
            if transcript is not None:
                artifacts.append({"kind": "transcript", "input": index, "label": f"transcript of audio {n}",
                                  "text": transcript.text, "language": transcript.language})
        prompt = state.get("prompt", "").strip()
        question = prompt or " ".join(a["text"] for a in artifacts).strip()
        if not question and not state.get("inputs"):
            raise InputError("nothing to do: give a prompt, an image or audio")
        return {"artifacts": artifacts, "steps": steps, "question": question,
                "plan": {"output": state.get("output", "auto")}}

    def render(self, state: PipelineState) -> dict:
        """Turn the answer into the requested modality (image via text-to-image, speech via TTS)."""
        kind = state["plan"]["output"]
        if kind == "image":
            part, step = self._call("image_gen", lambda gen: gen.generate(state["question"]))
        else:
            part, step = self._call("tts", lambda tts: tts.synthesize(state["answer"]))
        out: dict = {"steps": [step]}
        if part is not None:
            out["outputs"] = [part.to_dict()]
            out["artifacts"] = [{"kind": kind, "label": f"generated {kind}", "part": part.to_dict()}]
        return out

    def intent(self, question: str) -> tuple[Intent, list[dict]]:
        """Score the question's intents, with the embedder when one is available (a recorded step)."""
        if self.tools.has("embed") and question.strip():
            intent, step = self._call("embed", lambda embedder: score_intents(question, embedder))
            if intent is not None:
                return intent, [step]
            return score_intents(question, None), [step]
        return score_intents(question, None), []

    def _call(self, role: str, use: Callable[[Any], Any], *, index: int | None = None,
              required: bool = False) -> tuple[Any, dict]:
        """Run `use(backend of role)`, timing it. A failing optional tool is recorded, not raised."""
        step: dict = {"tool": role}
        if index is not None:
            step["input"] = index
        start = time.perf_counter()
        try:
            reason = None if required else self.tools.why_unavailable(role)
            if reason:
                raise BackendError(reason)
            backend = self.tools.get(role)
            step.update(backend=backend.name, model=backend.model_id)
            result = use(backend)
        except BackendError as exc:
            if required:
                raise
            step.update(seconds=round(time.perf_counter() - start, 4), error=str(exc))
            return None, step
        step["seconds"] = round(time.perf_counter() - start, 4)
        step.update(summarize(result))
        return result, step


def inputs_of(state: PipelineState, kind: str):
    """(index among all inputs, 1-based number among this kind, part) for each input of `kind`."""
    n = 0
    for index, data in enumerate(state.get("inputs", [])):
        if data["type"] == kind:
            n += 1
            yield index, n, part_from_dict(data)


def summarize(result: Any) -> dict:
    """What a step record shows of a tool's result: its text, or the stored file it produced."""
    if hasattr(result, "scores"):  # intent scoring
        return {"output": f"intent: {result.top or 'none'}"}
    if hasattr(result, "ref"):  # a generated part
        return {"output": {"type": result.type, "sha256": result.ref.sha256}}
    text = getattr(result, "text", result)
    if isinstance(text, str):
        return {"output": text}
    if isinstance(result, list):
        return {"output": f"{len(result)} detections"}
    return {}


def needs_render(state: PipelineState) -> str:
    from langgraph.graph import END

    return "render" if state["plan"]["output"] != "text" else END


def output_for(state: PipelineState, intent: Intent) -> str:
    """The answer's modality: as requested, else what the question asks for."""
    output = state["plan"]["output"]
    if output != "auto":
        return output
    return "image" if intent.top == "image" else "speech" if intent.wants("speech") else "text"
