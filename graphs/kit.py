"""The graph kit: a state and nodes for your own LangGraph graphs.

    from langgraph.graph import START, END, StateGraph
    from mmagent.graphs.kit import MMState, Nodes

    nodes = Nodes()                                   # backends from the configuration
    g = StateGraph(MMState)
    g.add_node("begin", nodes.begin)                  # starts a turn: question, per-turn fields
    g.add_node("read_text", nodes.read_text)          # OCR every image in scope
    g.add_node("answer", nodes.llm_answer)            # the chat LLM answers over the observations
    g.add_edge(START, "begin"); g.add_edge("begin", "read_text")
    g.add_edge("read_text", "answer"); g.add_edge("answer", END)
    graph = g.compile()
    graph.invoke({"messages": [human_message("What is the total?", ["receipt.png"])]})

The state follows LangGraph's `messages` convention (`add_messages`). Media live in messages as
LangChain standard content blocks holding media-store references
(`{"type": "image", "url": "mmagent-media:sha256:…", "mime_type": …, "extras": {…}}`), never
base64: `begin` stores any inline media it finds and replaces it by reference, so checkpoints stay
small. Per-turn fields (`steps`, `artifacts`, `outputs`, `answer`, `plan`) start empty each turn;
`messages` and `observations` (tool results by file, reused across turns) persist on a thread.

Every node records one step per tool call (tool, backend, model, seconds, output or error) and
writes it to the graph's custom stream; the answer nodes stream tokens in `stream_mode="messages"`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.graph.message import add_messages

from mmagent.content.parts import Part, part_from_dict
from mmagent.errors import BackendError, InputError
from mmagent.langchain import ChatMMAgent, block_to_part, is_inline_media, part_to_block
from mmagent.scenes.prompts import CAPTION_PROMPT, QA_SYSTEM
from mmagent.toolbox import Toolbox
from mmagent.tools import Tool, ToolError, get_tools, timed

from .intent import Intent, score_intents

TURN = "__turn__"


def per_turn(left: list | None, right: list | dict | None) -> list:
    """Reducer: lists add up within a turn; `fresh(...)` starts the list over (a new turn)."""
    if isinstance(right, dict) and TURN in right:
        return list(right[TURN])
    return [*(left or []), *(right or [])]


def fresh(items: Sequence = ()) -> dict:
    """An update that replaces a per-turn list instead of extending it."""
    return {TURN: list(items)}


def merge(left: dict | None, right: dict | None) -> dict:
    return {**(left or {}), **(right or {})}


class MMState(TypedDict, total=False):
    """mmagent's graph state. Input: `messages` (the new turn is the last HumanMessage) and,
    optionally, `output` (auto | text | image | speech) and `system` (a system prompt)."""

    messages: Annotated[list[AnyMessage], add_messages]
    output: str
    system: str
    #: This turn's question: the last human message's text, else what its audio said.
    question: str
    #: What the planner decided (planner, intent, tools, skipped tools and why, resolved output).
    plan: dict
    #: Tool results of this turn, each with kind, label, text and the file it read.
    artifacts: Annotated[list[dict], per_turn]
    #: One record per backend call of this turn.
    steps: Annotated[list[dict], per_turn]
    #: Generated media of this turn (part dicts).
    outputs: Annotated[list[dict], per_turn]
    #: Tool results by "tool:sha256", kept across turns (a second question reuses the OCR).
    observations: Annotated[dict, merge]
    #: Media a converter tool expanded, by "sha256" of the original (a video -> its keyframes and
    #: audio track, as part dicts), kept across turns. They stand in for the original everywhere.
    expanded: Annotated[dict, merge]
    #: What the router decided for this turn (`mmagent.graphs.router`): route, scores, runner-up.
    route: dict
    answer: str


# -- messages and media --------------------------------------------------------------------------


def human_message(text: str = "", media: Sequence[Part | str] = (), **kwargs: Any) -> HumanMessage:
    """A HumanMessage with standard content blocks: the text, then each medium by reference
    (parts, or paths / data URLs / URLs, validated and stored first)."""
    from mmagent.content.sources import load_media

    blocks: list[dict] = [{"type": "text", "text": text}] if text else []
    for item in media:
        part = item if hasattr(item, "ref") else load_media(item)
        blocks.append(part_to_block(part))
    return HumanMessage(content=blocks, **kwargs)


def message_media(message: BaseMessage) -> list[Part]:
    """The media parts a message holds by reference (other blocks are skipped)."""
    if isinstance(message.content, str):
        return []
    return [block_to_part(b) for b in message.content
            if isinstance(b, dict) and b.get("type") in ("image", "audio", "video") and "url" in b]


def text_of(message: BaseMessage) -> str:
    return message.text if isinstance(message.text, str) else str(message.text)


def last_human(state: MMState) -> tuple[int, HumanMessage | None]:
    messages = state.get("messages") or []
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return i, messages[i]
    return -1, None


def expanded_media(state: MMState, parts: Sequence[Part]) -> list[Part]:
    """`parts` with each expanded medium (a video) replaced by what it expanded into."""
    expanded = state.get("expanded") or {}
    if not expanded:
        return list(parts)
    out: list[Part] = []
    for part in parts:
        derived = expanded.get(part.ref.sha256)
        out.extend(part_from_dict(d) for d in derived) if derived else out.append(part)
    return out


def files_in_scope(state: MMState, kind: str | None = None) -> list[Part]:
    """The media this turn is about: the last human message's, else (a follow-up question) those of
    the most recent earlier message that had media. Expanded media (a video) count as what they
    expanded into (its keyframes and audio track)."""
    messages = state.get("messages") or []
    index, _ = last_human(state)
    for i in range(index, -1, -1):
        if isinstance(messages[i], HumanMessage):
            media = message_media(messages[i])
            if media:
                return [p for p in expanded_media(state, media) if kind is None or p.type == kind]
    return []


def turn_media(state: MMState, kind: str | None = None) -> list[Part]:
    """Only the media of the last human message (expanded media as what they expanded into)."""
    _, message = last_human(state)
    media = expanded_media(state, message_media(message)) if message else []
    return [p for p in media if kind is None or p.type == kind]


def label_of(parts: Sequence[Part], part: Part) -> str:
    """"image 2": the part's number among the parts of its kind."""
    same = [p for p in parts if p.type == part.type]
    n = next((i for i, p in enumerate(same, 1) if p.ref.sha256 == part.ref.sha256), 1)
    return f"{part.type} {n}"


def stored_message(message: HumanMessage) -> HumanMessage | None:
    """The message with inline media (base64, data URLs) stored and replaced by references, or
    None when it holds none."""
    if isinstance(message.content, str) or not any(is_inline_media(b) for b in message.content):
        return None
    blocks = [part_to_block(block_to_part(b)) if is_inline_media(b) else b for b in message.content]
    return HumanMessage(content=blocks, id=message.id, additional_kwargs=message.additional_kwargs)


def emit(event: dict) -> None:
    """Write an event to the graph's custom stream (a no-op outside a streaming run)."""
    try:
        from langgraph.config import get_stream_writer

        get_stream_writer()(event)
    except Exception:  # noqa: BLE001 - not inside a graph run, or nobody listens
        pass


# -- nodes ---------------------------------------------------------------------------------------


class Nodes:
    """Nodes bound to a toolbox; each method is a LangGraph node over `MMState`."""

    #: The role whose model answers in this graph ("llm", "vlm", "unified"); media of a kind it does
    #: not take natively are expanded by a converter tool when one is registered (a video).
    brain: str | None = None

    ANSWER_SYSTEM = ("You answer the user's question using the observations that tools made of the user's "
                     "files. Be brief and exact; quote numbers and names as observed.")
    VLM_SYSTEM = QA_SYSTEM  # the prompt the scene VLM is trained with

    def __init__(self, toolbox: Toolbox | None = None):
        self.tools = toolbox or Toolbox()
        self._chat_models: dict[tuple[int, int], ChatMMAgent] = {}

    def chat_model(self, role: str, max_tokens: int = 128) -> ChatMMAgent:
        """The backend of `role` as a LangChain chat model (made once: LangChain serialises a model
        on every first call, which is not free)."""
        backend = self.tools.get(role)
        key = (id(backend), max_tokens)
        if key not in self._chat_models:
            self._chat_models[key] = ChatMMAgent(backend=backend, max_tokens=max_tokens)
        return self._chat_models[key]

    # -- turn start ----------------------------------------------------------------------------

    def begin(self, state: MMState) -> dict:
        """Start a turn: store inline media by reference, reset per-turn fields, set the question."""
        index, message = last_human(state)
        if message is None:
            raise InputError("nothing to do: the conversation has no human message")
        out: dict[str, Any] = {"steps": fresh(), "artifacts": fresh(), "outputs": fresh(), "answer": ""}
        stored = stored_message(message)
        if stored is not None:
            out["messages"] = [stored]
            message = stored
        question = text_of(message).strip()
        if not question and not message_media(message):
            raise InputError("nothing to do: give a prompt, an image or audio")
        out["question"] = question
        out["plan"] = {"output": state.get("output") or "auto"}
        expansion = self.expand(state, message_media(message))
        if expansion["expanded"]:
            out["expanded"] = expansion["expanded"]
        out["steps"] = fresh(expansion["steps"])
        out["artifacts"] = fresh(expansion["artifacts"])
        return out

    def expand(self, state: MMState, media: Sequence[Part], brain: str | None = None) -> dict:
        """Run converter tools (`Tool.expands`) on the media of kinds the brain does not take
        natively (a video: keyframes and audio track); what they made stands in for the original.
        Media expanded on an earlier turn are not expanded again."""
        brain = brain or self.brain
        done = state.get("expanded") or {}
        out: dict[str, Any] = {"expanded": {}, "steps": [], "artifacts": []}
        for part in media:
            if part.type in ("text", "image", "audio") or part.ref.sha256 in done or self.takes(brain, part.type):
                continue
            converters = [t for t in get_tools().available(self.tools, reads=part.type) if t.expands]
            if not converters:
                continue
            tool = converters[0]
            output, step = self._timed(tool, {"file": part})
            step["file"] = label_of(media, part)
            out["steps"].append(step)
            if output is not None and output.parts:
                out["expanded"][part.ref.sha256] = [p.to_dict() for p in output.parts]
                out["artifacts"].append({**output.artifact, "label": tool.label.format(
                    tool=tool.name, file=label_of(media, part))})
        return out

    def takes(self, role: str | None, kind: str) -> bool:
        """Whether the backend of `role` reads `kind` natively (False when there is no such backend)."""
        if role is None or not self.tools.has(role):
            return False
        return self.tools.get(role).takes(kind)  # every backend is a Backend (the toolbox checks it)

    # -- observing the media -------------------------------------------------------------------

    def observe(self, state: MMState, tool_name: str, files: Sequence[Part], **arguments: Any) -> dict:
        """Run tool `tool_name` on each file (reusing a result from an earlier turn)."""
        tool = get_tools().get(tool_name)
        everything = all_files(state) or list(files)
        seen = dict(state.get("observations") or {})
        artifacts, steps, new = [], [], {}
        for part in files:
            key = f"{tool.name}:{part.ref.sha256}" + (f":{json.dumps(arguments, sort_keys=True)}" if arguments else "")
            label = tool.label.format(tool=tool.name, file=label_of(everything, part))
            if key in seen:
                artifacts.append({**seen[key], "label": label, "cached": True})
                continue
            output, step = self._timed(tool, {"file": part, **arguments})
            step["input"] = next((i for i, p in enumerate(everything) if p.ref.sha256 == part.ref.sha256), 0)
            step["file"] = label_of(everything, part)
            steps.append(step)
            if output is not None:
                artifact = {**output.artifact, "label": label}
                artifacts.append(artifact)
                new[key] = artifact
        return {"artifacts": artifacts, "steps": steps, "observations": new}

    def transcribe(self, state: MMState) -> dict:
        """Transcribe this turn's audio; when the turn has no text, what was said is the question."""
        out = self.observe(state, "transcribe", turn_media(state, "audio"))
        if not state.get("question"):
            said = " ".join(a["text"] for a in out["artifacts"] if a.get("text")).strip()
            if said:
                out["question"] = said
        return out

    def read_text(self, state: MMState) -> dict:
        return self.observe(state, "read_text", files_in_scope(state, "image"))

    def caption(self, state: MMState) -> dict:
        return self.observe(state, "caption_image", files_in_scope(state, "image"))

    def detect(self, state: MMState) -> dict:
        return self.observe(state, "detect_objects", files_in_scope(state, "image"))

    def run_planned_tools(self, state: MMState) -> dict:
        """Run the tools the plan chose (`plan["tools"]`) on the files they read."""
        out: dict[str, Any] = {"artifacts": [], "steps": [], "observations": {}}
        for name in state.get("plan", {}).get("tools", []):
            tool = get_tools().get(name)
            files = turn_media(state, tool.file_kind) if tool.file_kind == "audio" else \
                files_in_scope(state, tool.file_kind)
            got = self.observe(state, name, files)
            for key in out:
                out[key] = merge(out[key], got[key]) if key == "observations" else [*out[key], *got[key]]
        return out

    # -- answering -----------------------------------------------------------------------------

    def llm_answer(self, state: MMState) -> dict:
        """The chat LLM answers over this turn's observations and the conversation so far."""
        question = state.get("question", "")
        typed = _typed(state)  # else the transcript is the question itself, not an observation
        observations = "\n".join(f"[{a['label']}]\n{a['text']}" for a in state.get("artifacts", [])
                                 if a.get("text") and (typed or a.get("kind") != "transcript"))
        failed = failed_tools(state)
        if failed:  # the model is told what could not be observed, rather than left to guess
            observations = "\n".join([observations, *(f"[{f}]" for f in failed)]).strip()
        user = f"Observations:\n{observations}\n\nQuestion: {question}" if observations else question
        messages = [SystemMessage(state.get("system") or self.ANSWER_SYSTEM), *history(state),
                    HumanMessage(user)]
        return self._answer("llm", messages)

    def vlm_answer(self, state: MMState, context: str = "", question: str | None = None,
                   transcripts: bool = True) -> dict:
        """The vision-language model answers over the images in scope (and any transcripts, unless
        `transcripts` is False); `context` (what tools observed) goes before the question
        (`question`: another one)."""
        question = state.get("question", "") if question is None else question
        if context:
            question = f"{context}\n\n{question}"
        images = files_in_scope(state, "image")
        heard = [a for a in state.get("artifacts", []) if a.get("kind") == "transcript"] if transcripts else []
        if heard and _typed(state):  # a typed question about a recording
            question = "\n".join(f"[{a['label']}] {a['text']}" for a in heard) + f"\n\n{question}"
        content = [part_to_block(p) for p in images] + [{"type": "text", "text": question}]
        messages = [SystemMessage(state.get("system") or self.VLM_SYSTEM), *history(state), HumanMessage(content)]
        return self._answer("vlm", messages)

    # -- questions about what is said and what is shown ------------------------------------------

    #: What the VLM is asked for "what is shown" (the caption prompt the scene VLM is trained on).
    DESCRIBE = CAPTION_PROMPT

    def said_and_shown(self, state: MMState, intent: Intent) -> list[dict]:
        """The transcripts when the question asks both what a recording says and what the images
        show ("What is said and what is shown?"), else []. Such a question is answered in two parts
        — the transcript as heard, then what the route sees — rather than by one model that reads
        only one of the two (or, being small, neither)."""
        if intent.top != "transcribe" or not intent.wants("describe") or not files_in_scope(state, "image"):
            return []
        return [a for a in state.get("artifacts", []) if a.get("kind") == "transcript" and a.get("text")]

    def compose(self, transcripts: list[dict], shown: str, steps: list[dict] = ()) -> dict:
        """The two-part answer: "Said: …" then "Shown: …"."""
        said = " ".join(a["text"].strip() for a in transcripts)
        answer = f"Said: {said}\nShown: {shown.strip()}"
        return {"answer": answer, "messages": [AIMessage(answer)], "steps": list(steps)}

    UNIFIED_SYSTEM = ("You answer questions about the user's images and recordings. Be brief and exact; quote "
                      "numbers and names as you see or hear them.")

    def unified_answer(self, state: MMState) -> dict:
        """The unified model answers over the images in scope and this turn's audio, as they are;
        kinds it does not take natively arrive as what the tools observed of them."""
        media = [p for p in files_in_scope(state, "image") + turn_media(state, "audio") if self.takes("unified", p.type)]
        question = state.get("question", "")
        typed = _typed(state)
        observed = "\n".join(f"[{a['label']}]\n{a['text']}" for a in state.get("artifacts", [])
                             if a.get("text") and (typed or a.get("kind") != "transcript"))
        if observed:
            question = f"Observations:\n{observed}\n\nQuestion: {question}"
        content = [part_to_block(p) for p in media] + ([{"type": "text", "text": question}] if question else [])
        messages = [SystemMessage(state.get("system") or self.UNIFIED_SYSTEM), *history(state), HumanMessage(content)]
        return self._answer("unified", messages)

    def _answer(self, role: str, messages: list[BaseMessage], max_tokens: int = 128) -> dict:
        backend = self.tools.get(role)
        step: dict[str, Any] = {"tool": role, "backend": backend.name, "model": backend.model_id}
        start = time.perf_counter()
        reply = self.chat_model(role, max_tokens).invoke(messages)
        step.update(seconds=round(time.perf_counter() - start, 4), output=text_of(reply))
        emit({"step": step})
        answer = text_of(reply).strip()
        message = AIMessage(content=answer, id=reply.id, response_metadata=reply.response_metadata)
        return {"answer": answer, "messages": [message], "steps": [step]}

    # -- rendering -----------------------------------------------------------------------------

    def generate_image(self, state: MMState) -> dict:
        """An image of the question (an image request) or of the answer."""
        intent = state.get("plan", {}).get("intent")
        prompt = state.get("question", "") if intent == "image" or not state.get("answer") else state["answer"]
        return self._render("generate_image", {"prompt": prompt})

    def speak(self, state: MMState) -> dict:
        """The answer as speech."""
        return self._render("speak", {"text": state.get("answer") or state.get("question", "")})

    def render(self, state: MMState) -> dict:
        """The answer in the modality the plan resolved (image or speech)."""
        return self.generate_image(state) if state["plan"]["output"] == "image" else self.speak(state)

    def _render(self, tool_name: str, arguments: dict) -> dict:
        tool = get_tools().get(tool_name)
        output, step = self._timed(tool, arguments)
        out: dict[str, Any] = {"steps": [step]}
        if output is not None:
            out["outputs"] = [p.to_dict() for p in output.parts]
            out["artifacts"] = [{**output.artifact, "label": tool.label}]
        return out

    # -- tool calling (the LLM plans) ------------------------------------------------------------

    MAX_TOOL_ROUNDS = 6

    def agent(self, state: MMState, max_turns: int | None = None) -> dict:
        """The chat LLM reads the conversation and either calls tools or answers."""
        from mmagent.langchain import to_mmagent_messages

        backend = self.tools.get("llm")
        tools = self.agent_tools()
        index, _ = last_human(state)
        this_turn = state["messages"][index + 1:]
        calls_so_far = sum(1 for m in this_turn if isinstance(m, AIMessage) and m.tool_calls)
        offer = tools if calls_so_far < (max_turns or self.MAX_TOOL_ROUNDS) else []
        system = (state.get("system") or self.ANSWER_SYSTEM) + (
            " Call tools to inspect the user's files; pass a file as its reference." if offer else "")
        messages = [SystemMessage(system), *conversation_for_model(state, getattr(backend, "accepts", ("text",)))]
        step: dict[str, Any] = {"tool": "llm", "backend": backend.name, "model": backend.model_id}
        start = time.perf_counter()
        result = backend.chat(to_mmagent_messages(messages), tools=[t.spec() for t in offer] or None,
                              max_tokens=256)
        step.update(seconds=round(time.perf_counter() - start, 4), output=result.text)
        if result.tool_calls:
            step["tool_calls"] = [c.name for c in result.tool_calls]
        emit({"step": step})
        reply = AIMessage(content=result.text, tool_calls=[
            {"id": c.id, "name": c.name, "args": c.arguments, "type": "tool_call"} for c in result.tool_calls])
        out: dict[str, Any] = {"messages": [reply], "steps": [step]}
        if not result.tool_calls:
            out["answer"] = result.text.strip()
        return out

    def act(self, state: MMState) -> dict:
        """Run the tool calls of the last AI message; results go back as ToolMessages. Images a tool
        makes are re-injected as user content for a model that reads images."""
        call_message = state["messages"][-1]
        files = all_files(state)
        messages, artifacts, steps, outputs = [], [], [], []
        registry = get_tools()
        for call in call_message.tool_calls:
            try:
                tool = registry.get(call["name"])
                arguments = dict(call.get("args") or {})
                if tool.file_kind is not None and "file" in arguments:
                    arguments["file"] = resolve_alias(arguments["file"], files)
            except Exception as exc:  # noqa: BLE001 - the model asked for something unusable: tell it
                messages.append(ToolMessage(f"error: {exc}", tool_call_id=call["id"], name=call["name"],
                                            status="error"))
                continue
            output, step = self._timed(tool, arguments)
            steps.append(step)
            if output is None:
                messages.append(ToolMessage(f"error: {step['error']}", tool_call_id=call["id"], name=tool.name,
                                            status="error"))
                continue
            file = arguments.get("file")
            label = tool.label.format(tool=tool.name, file=label_of(files, file) if hasattr(file, "ref") else "file")
            artifacts.append({**output.artifact, "label": label})
            outputs.extend(p.to_dict() for p in output.parts)
            messages.append(ToolMessage(output.text, tool_call_id=call["id"], name=tool.name,
                                        artifact={"media": [part_to_block(p) for p in output.parts]}))
            images = [p for p in output.parts if p.type == "image"]
            if images and "image" in getattr(self.tools.get("llm"), "accepts", ()):
                messages.append(HumanMessage([{"type": "text", "text": f"The image {tool.name} made:"},
                                              *[part_to_block(p) for p in images]]))
        return {"messages": messages, "artifacts": artifacts, "steps": steps, "outputs": outputs}

    def agent_tools(self) -> list[Tool]:
        """The tools the LLM is offered: every registered tool whose backend is available."""
        return get_tools().available(self.tools)

    # -- helpers -------------------------------------------------------------------------------

    def intent(self, question: str) -> tuple[Intent, list[dict]]:
        """Score the question's intents with the embedder when one is available (a recorded step)."""
        if not question.strip() or not self.tools.has("embed"):
            return score_intents(question, None), []
        start = time.perf_counter()
        step: dict[str, Any] = {"tool": "embed"}
        try:
            embedder = self.tools.get("embed")
            step.update(backend=embedder.name, model=embedder.model_id)
            intent = score_intents(question, embedder)
        except BackendError as exc:
            step.update(seconds=round(time.perf_counter() - start, 4), error=str(exc))
            return score_intents(question, None), [step]
        step.update(seconds=round(time.perf_counter() - start, 4), output=f"intent: {intent.top or 'none'}")
        return intent, [step]

    def _timed(self, tool: Tool, arguments: dict) -> tuple[Any, dict]:
        output, step = timed(tool, arguments, self.tools)
        emit({"step": step})
        return output, step


# -- conversation views ----------------------------------------------------------------------------


def _typed(state: MMState) -> bool:
    """Whether this turn has a typed question (then audio is material, not the question)."""
    _, message = last_human(state)
    return bool(message is not None and text_of(message).strip())


def history(state: MMState) -> list[BaseMessage]:
    """Earlier turns as plain text: each question (with its files named) and each final answer."""
    messages = state.get("messages") or []
    index, _ = last_human(state)
    out: list[BaseMessage] = []
    for m in messages[:max(index, 0)]:
        if isinstance(m, HumanMessage):
            media = message_media(m)
            names = ", ".join(p.type for p in media)
            out.append(HumanMessage(text_of(m) + (f" [attached: {names}]" if names else "")))
        elif isinstance(m, AIMessage) and not m.tool_calls and text_of(m).strip():
            out.append(AIMessage(text_of(m)))
    return out


def all_files(state: MMState) -> list[Part]:
    """Every medium in the conversation, in order, once (expanded media as what they expanded into)."""
    seen: dict[str, Part] = {}
    for m in state.get("messages") or []:
        if isinstance(m, HumanMessage):
            for p in expanded_media(state, message_media(m)):
                seen.setdefault(p.ref.sha256, p)
    return list(seen.values())


def conversation_for_model(state: MMState, accepts: Sequence[str] = ("text",)) -> list[BaseMessage]:
    """The conversation for a model that reads `accepts`: each file is named with its reference
    (which tools accept), and media of the kinds the model reads are kept as blocks beside it."""
    files = all_files(state)
    out: list[BaseMessage] = []
    for m in state.get("messages") or []:
        if isinstance(m, HumanMessage):
            media = message_media(m)
            lines = [f"- {label_of(files, p)}: {p.ref.uri}" for p in media]
            text = text_of(m)
            if lines:
                text = "Files:\n" + "\n".join(lines) + (f"\n\n{text}" if text else "")
            seen = [part_to_block(p) for p in media if p.type in accepts]
            out.append(HumanMessage([{"type": "text", "text": text}, *seen] if seen else text))
        elif isinstance(m, (AIMessage, ToolMessage, SystemMessage)):
            out.append(m)
    return out



def resolve_alias(value: Any, files: Sequence[Part]) -> Any:
    """What a model passed as `file`: a reference, "image 1", an index, a sha256 prefix -> the part;
    anything else (a path, a data URL) is returned for the tool to load and check."""
    if isinstance(value, int) and 0 <= value < len(files):
        return files[value]
    if isinstance(value, dict) and "type" in value:
        return part_from_dict(value)
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    for part in files:
        if text in (part.ref.uri, part.ref.sha256, label_of(files, part)) or \
                (len(text) >= 8 and part.ref.sha256.startswith(text.split(":")[-1])):
            return part
    if text.isdigit() and int(text) < len(files):
        return files[int(text)]
    words = text.split()
    if len(words) == 2 and words[0] in ("image", "audio", "video") and words[1].isdigit():
        names = ", ".join(label_of(files, p) for p in files) or "none"
        raise ToolError(f"there is no {text} in this conversation (files: {names})")
    return value


def failed_tools(state: MMState) -> list[str]:
    """This turn's failed tool calls, one line each: "read_text of image 1 failed: <why>"."""
    out = []
    for step in state.get("steps") or []:
        if step.get("error") and step.get("name") and step.get("tool") not in ("embed", "router"):
            where = f" of {step['file']}" if step.get("file") else ""
            out.append(f"{step['name']}{where} failed: {' '.join(str(step['error']).split())}")
    return out


def needs_render(state: MMState) -> str:
    """Route: "render" when the plan asks for an image or speech, else END."""
    from langgraph.graph import END

    output = state.get("plan", {}).get("output")
    if output not in ("image", "speech"):
        return END
    kind = "image" if output == "image" else "audio"
    if any(p.get("type") == kind for p in state.get("outputs") or []):
        return END  # a tool already made it (the LLM planner called generate_image / speak)
    return "render"

