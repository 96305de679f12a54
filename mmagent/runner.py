"""Run requests through graphs: `mmagent.run("What is the total?", images=["receipt.png"])`.

    run(...)        -> RunResult            one request through a registered pipeline
    stream(...)     -> iterator of events   ("token", text) / ("step", dict) / ("result", RunResult)
    run_graph(...)  -> RunResult            any LangGraph graph whose state has `messages`

A `thread` keeps the conversation in a SQLite checkpointer under `MMAGENT_HOME` (see
`mmagent.threads`): the next request on the same thread sees the earlier turns, their images and
what the tools observed.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from .config import Settings, load_settings
from .content.parts import MediaPart, part_from_dict
from .content.sources import Source, load_media
from .errors import InputError, PromptTooLongError
from .toolbox import Toolbox

#: The pipeline used when none is named: the router (mmagent.graphs.router).
DEFAULT_PIPELINE = "auto"
OUTPUTS = ("auto", "text", "image", "speech")


@dataclass
class RunResult:
    answer: str
    pipeline: str
    steps: list[dict]
    artifacts: list[dict]
    plan: dict
    outputs: list[MediaPart] = field(default_factory=list)
    seconds: float = 0.0
    thread: str | None = None
    #: Whether the answer's tokens were already delivered as ("token", ...) events.
    streamed: bool = False
    #: The router's decision when `auto` chose the route: route, policy, scores, runner-up, ...
    route: dict | None = None

    def to_json(self, files: Sequence[str] | None = None) -> dict[str, Any]:
        """The `mmagent run --json` object. `files`: where `outputs` were written, if they were."""
        data = {"answer": self.answer, "pipeline": self.pipeline, "plan": self.plan, "steps": self.steps,
                "artifacts": self.artifacts, "seconds": round(self.seconds, 4)}
        if self.route:
            data["route"] = self.route
        if self.thread:
            data["thread"] = self.thread
        data["outputs"] = [{**p.to_dict(), **({"path": files[i]} if files else {})}
                           for i, p in enumerate(self.outputs)]
        return data

    def save_outputs(self, folder: str | os.PathLike[str]) -> list[str]:
        """Write generated media to `folder` (atomically, named by kind and hash); return the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for part in self.outputs:
            ext = {"image/png": "png", "audio/wav": "wav", "image/jpeg": "jpg"}.get(part.mime_type, part.format)
            target = folder / f"{part.type}-{part.ref.sha256[:12]}.{ext}"
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(part.read_bytes())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            paths.append(str(target))
        return paths

    def to_ai_message(self):
        """The answer as a LangChain AIMessage: text, then generated media as base64 blocks; the
        trace in `response_metadata["mmagent"]`."""
        from langchain_core.messages import AIMessage

        from .content.convert import to_langchain

        meta = {"model_name": self.pipeline, "finish_reason": "stop",
                "mmagent": {k: v for k, v in self.to_json().items() if k != "answer"}}
        if not self.outputs:
            return AIMessage(content=self.answer, response_metadata=meta)
        return AIMessage(content=[{"type": "text", "text": self.answer}, *[to_langchain(p) for p in self.outputs]],
                         response_metadata=meta)


# -- building graphs ---------------------------------------------------------------------------------


def build_pipeline(name: str, toolbox: Toolbox, *, planner: str = "auto", checkpointer: Any = None):
    """The compiled graph of registered pipeline `name`."""
    from .graphs_registry import get_graphs

    return get_graphs().get(name).compile(toolbox, planner=planner, checkpointer=checkpointer)


def request_message(prompt: str = "", *, images: Sequence[Source] = (), audio: Sequence[Source] = (),
                    attachments: Sequence[Source] = (), settings: Settings | None = None):
    """The request as one HumanMessage: the text, then each image/audio by media-store reference
    (validated and stored first). `attachments` are sniffed: image, audio or video (a video reaches
    the models through a converter tool a plugin registers, `Tool.expands`)."""
    from .langchain import part_to_block
    from langchain_core.messages import HumanMessage

    settings = settings or load_settings()
    parts = [load_media(s, expect="image", settings=settings) for s in images]
    parts += [load_media(s, expect="audio", settings=settings) for s in audio]
    for source in attachments:
        part = load_media(source, settings=settings)
        if part.type not in ("image", "audio", "video"):
            raise InputError(f"attachment is {part.type}; mmagent run takes images, audio and video")
        parts.append(part)
    prompt = clean_text(prompt)
    check_prompt_chars(len(prompt), settings)
    if not prompt.strip() and not parts:
        raise InputError("nothing to do: give a prompt, an image or audio")
    blocks = ([{"type": "text", "text": prompt}] if prompt.strip() else []) + [part_to_block(p) for p in parts]
    return HumanMessage(content=blocks)


_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Text with lone surrogates (undecodable bytes from argv/stdin, `os.fsdecode`'s escapes, a
    caller's "\\udce9") replaced by U+FFFD, so tokenizers never see them."""
    return _SURROGATES.sub("\ufffd", text) if isinstance(text, str) else text


_clean_text = clean_text


def clean_messages(messages: Sequence[Any]) -> list[Any]:
    """LangChain messages with the text of each (string content, text blocks) cleaned by
    `clean_text`; a message that needs no change is kept as it is."""
    out = []
    for m in messages:
        content = getattr(m, "content", None)
        if isinstance(content, str):
            new: Any = clean_text(content)
        elif isinstance(content, list):
            new = [clean_text(b) if isinstance(b, str) else
                   {**b, "text": clean_text(b["text"])} if isinstance(b, dict) and isinstance(b.get("text"), str)
                   else b for b in content]
        else:
            new = content
        out.append(m if new == content else m.model_copy(update={"content": new}))
    return out


def text_chars(messages: Sequence[Any]) -> int:
    """Characters of text in LangChain messages (string content and text blocks)."""
    total = 0
    for m in messages:
        content = getattr(m, "content", None)
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(b) if isinstance(b, str) else len(b["text"]) if isinstance(b, dict)
                         and isinstance(b.get("text"), str) else 0 for b in content)
    return total


def check_prompt_chars(chars: int, settings: Settings, what: str = "the prompt") -> None:
    """PromptTooLongError when `chars` exceeds `[limits] max_prompt_chars`."""
    cap = settings.limits.max_prompt_chars
    if chars > cap:
        raise PromptTooLongError(f"{what} is {chars} characters, over the cap of {cap} "
                                 f"([limits] max_prompt_chars, MMAGENT_LIMITS_MAX_PROMPT_CHARS)")


# -- running -----------------------------------------------------------------------------------------


def run(
    prompt: str = "",
    *,
    images: Sequence[Source] = (),
    audio: Sequence[Source] = (),
    attachments: Sequence[Source] = (),
    pipeline: str = DEFAULT_PIPELINE,
    output: str = "auto",
    planner: str = "auto",
    toolbox: Toolbox | None = None,
    settings: Settings | None = None,
    system: str | None = None,
    thread: str | None = None,
    log: bool = False,
) -> RunResult:
    """Validate the inputs, run them through `pipeline`, and return the answer with every step.
    With `thread`, the conversation continues where that thread left off (and is saved); `log`
    records the run for `mmagent logs`."""
    return _result_of(stream(prompt, images=images, audio=audio, attachments=attachments, pipeline=pipeline,
                             output=output, planner=planner, toolbox=toolbox, settings=settings, system=system,
                             thread=thread, tokens=False, log=log))


def stream(
    prompt: str = "",
    *,
    images: Sequence[Source] = (),
    audio: Sequence[Source] = (),
    attachments: Sequence[Source] = (),
    pipeline: str = DEFAULT_PIPELINE,
    output: str = "auto",
    planner: str = "auto",
    toolbox: Toolbox | None = None,
    settings: Settings | None = None,
    system: str | None = None,
    thread: str | None = None,
    tokens: bool = True,
    log: bool = False,
) -> Iterator[tuple[str, Any]]:
    """Like `run`, as events while it works: ("token", text) for each piece of the answer as the
    model writes it, ("step", record) as each tool or model call ends, then ("result", RunResult)."""
    if output not in OUTPUTS:
        raise InputError(f"unknown output '{output}' (use {', '.join(OUTPUTS)})")
    settings = settings or load_settings()
    message = request_message(prompt, images=images, audio=audio, attachments=attachments, settings=settings)
    yield from stream_messages([message], pipeline=pipeline, planner=planner, toolbox=toolbox, settings=settings,
                               output=output, system=system, thread=thread, tokens=tokens,
                               log={"prompt": _clean_text(prompt)} if log else None)


def run_messages(messages: Sequence[Any], **options: Any) -> RunResult:
    """Run a LangChain message list (the last HumanMessage is the request) through a pipeline."""
    return _result_of(stream_messages(messages, tokens=False, **options))


def _result_of(events: Iterator[tuple[str, Any]]) -> RunResult:
    """Drain an event stream; its last event is ("result", RunResult)."""
    result = None
    for kind, value in events:
        if kind == "result":
            result = value
    if result is None:  # pragma: no cover - every stream ends with its result
        raise RuntimeError("the run ended without a result")
    return result


def stream_messages(
    messages: Sequence[Any],
    *,
    pipeline: str = DEFAULT_PIPELINE,
    planner: str = "auto",
    toolbox: Toolbox | None = None,
    settings: Settings | None = None,
    output: str = "auto",
    system: str | None = None,
    thread: str | None = None,
    tokens: bool = True,
    log: dict | None = None,
) -> Iterator[tuple[str, Any]]:
    """The events of one request given as LangChain messages (see `stream`)."""
    settings = settings or load_settings()
    messages = clean_messages(messages)
    system = clean_text(system) if system else system
    check_prompt_chars(text_chars(messages) + len(system or ""), settings, "the request's text")
    toolbox = toolbox or Toolbox(settings=settings)
    state_in: dict[str, Any] = {"messages": list(messages), "output": output}
    if system:
        state_in["system"] = system
    with _checkpointer(thread, settings) as saver:
        graph = build_pipeline(pipeline, toolbox, planner=planner, checkpointer=saver)
        final, streamed, seconds = yield from _run(graph, state_in, thread, tokens)
    result = _result(final, final.get("answer", ""), pipeline, seconds, thread, streamed)
    if log is not None:
        from .threads import record_run

        record_run(result, prompt=log.get("prompt", ""), media=_media_of(messages[-1]), settings=settings)
    yield "result", result


def _run(graph: Any, state_in: dict, thread: str | None, tokens: bool):
    """Run a graph once, yielding ("token", text) and ("step", record) events; returns (final
    state, whether tokens were streamed, seconds)."""
    from langchain_core.messages import AIMessageChunk

    modes = ["values", "custom", *(["messages"] if tokens else [])]
    config = {"configurable": {"thread_id": thread}} if thread else None
    # durability="exit": one checkpoint per turn, not one per step (threads stay small)
    extra = {"durability": "exit"} if getattr(graph, "checkpointer", None) else {}
    start, final, streamed = time.perf_counter(), {}, False
    # subgraphs=True: the steps and tokens of a graph nested in another (a route the router could
    # not copy in, a user's graph with subgraphs) reach the caller too; values are the outer graph's.
    for namespace, mode, chunk in graph.stream(state_in, config, stream_mode=modes, subgraphs=True, **extra):
        if mode == "values":
            if not namespace:
                final = chunk
        elif mode == "custom" and isinstance(chunk, dict) and "step" in chunk:
            yield "step", chunk["step"]
        elif mode == "messages":
            message, _meta = chunk
            if isinstance(message, AIMessageChunk) and isinstance(message.content, str) and message.content:
                streamed = True
                yield "token", message.content
    return final, streamed, time.perf_counter() - start


def _result(final: dict, answer: str, pipeline: str, seconds: float, thread: str | None, streamed: bool) -> RunResult:
    route = current_route(final)
    steps = [*(route or {}).get("steps", []), *final.get("steps", [])]  # the router's own calls first
    artifacts = [*(route or {}).get("artifacts", []), *final.get("artifacts", [])]
    return RunResult(answer=answer, pipeline=pipeline, steps=steps, artifacts=artifacts, plan=final.get("plan", {}),
                     outputs=[part_from_dict(p) for p in final.get("outputs", [])], seconds=seconds,
                     thread=thread, streamed=streamed, route=route)


def current_route(state: dict) -> dict | None:
    """The router's decision for this turn (None when no router ran for the last human message:
    the state of a thread keeps an earlier turn's)."""
    from langchain_core.messages import HumanMessage

    route = state.get("route")
    if not route:
        return None
    humans = [m for m in state.get("messages") or [] if isinstance(m, HumanMessage)]
    return route if humans and route.get("message_id") == humans[-1].id else None


@contextmanager
def _checkpointer(thread: str | None, settings: Settings):
    if not thread:
        yield None
        return
    from .threads import open_checkpointer

    with open_checkpointer(settings) as saver:
        yield saver


def _media_of(message: Any) -> list[dict]:
    content = getattr(message, "content", "")
    if isinstance(content, str):
        return []
    return [{"type": b["type"], "url": b["url"], "mime_type": b.get("mime_type")} for b in content
            if isinstance(b, dict) and b.get("type") in ("image", "audio", "video") and "url" in b]


# -- any LangGraph graph -----------------------------------------------------------------------------


def load_graph(target: str):
    """`FILE.py:ATTR` or `module:attr` -> a compiled graph. ATTR may be a compiled graph, an
    uncompiled StateGraph, or a zero-argument factory returning either."""
    import importlib.util

    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise InputError(f"--graph wants FILE.py:ATTR or module:attr, not {target!r}")
    if where.endswith(".py") or os.sep in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise InputError(f"--graph: no such file {where}")
        spec = importlib.util.spec_from_file_location(f"mmagent_user_graph_{abs(hash(str(path.resolve())))}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:
            raise InputError(f"--graph: {where} failed to import: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = import_module(where)
        except ImportError as exc:
            raise InputError(f"--graph: cannot import {where}: {exc}") from exc
    if not hasattr(module, attr):
        raise InputError(f"--graph: {where} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if callable(obj) and not hasattr(obj, "invoke") and not hasattr(obj, "compile"):
        try:
            obj = obj()
        except Exception as exc:
            raise InputError(f"--graph: {target} is not a LangGraph graph, and calling it as a factory failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    if hasattr(obj, "compile") and not hasattr(obj, "invoke"):
        obj = obj.compile()
    if not hasattr(obj, "invoke") or not hasattr(obj, "get_graph"):
        raise InputError(f"--graph: {target} is not a LangGraph graph (nor a factory of one)")
    channels = getattr(obj, "channels", {}) or {}
    if "messages" not in channels:
        raise InputError(f"--graph: {target}'s state has no 'messages' key (use MessagesState or mmagent's MMState)")
    return obj


def run_graph(target: str | Any, prompt: str = "", *, images: Sequence[Source] = (), audio: Sequence[Source] = (),
              attachments: Sequence[Source] = (), settings: Settings | None = None, thread: str | None = None,
              tokens: bool = False, log: bool = False, system: str | None = None) -> Iterator[tuple[str, Any]]:
    """Run any LangGraph graph whose state has `messages`: the request goes in as one HumanMessage
    (text, then each image/audio as a standard block holding a media reference); the answer is the
    text of the last AI message. `system` goes in as the state's `system` when the graph has one
    (mmagent's `MMState`), else as a SystemMessage before the request. Yields ("token", text) when
    `tokens`, then ("result", RunResult)."""
    from langchain_core.messages import AIMessage

    settings = settings or load_settings()
    graph = load_graph(target) if isinstance(target, str) else target
    message = request_message(prompt, images=images, audio=audio, attachments=attachments, settings=settings)
    check_prompt_chars(text_chars([message]) + len(clean_text(system or "")), settings, "the request's text")
    name = target if isinstance(target, str) else getattr(graph, "name", "graph")
    with _checkpointer(thread, settings) as saver:
        if saver is not None:
            graph = graph.copy(update={"checkpointer": saver}) if hasattr(graph, "copy") else graph
        state_in: dict[str, Any] = {"messages": [message]}
        if system:
            if "system" in (getattr(graph, "channels", {}) or {}):
                state_in["system"] = _clean_text(system)
            else:
                from langchain_core.messages import SystemMessage

                state_in["messages"] = [SystemMessage(_clean_text(system)), message]
        final, streamed, seconds = yield from _run(graph, state_in, thread, tokens)
    replies = [m for m in final.get("messages", []) if isinstance(m, AIMessage)]
    result = _result(final, replies[-1].text if replies else "", str(name), seconds, thread, streamed)
    if log:
        from .threads import record_run

        record_run(result, prompt=_clean_text(prompt), media=_media_of(message), settings=settings)
    yield "result", result
