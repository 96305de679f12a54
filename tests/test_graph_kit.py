"""The graph kit: user graphs (MessagesState and MMState), threads, streaming, tools and graphs
from plugins, `mmagent run --graph`, langgraph.json."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmagent.runner import run, run_graph, stream
from mmagent.testing import ScriptedASR, ScriptedCaptioner, ScriptedLLM, ScriptedOCR, scripted_toolbox, silent_wav

ROOT = Path(__file__).resolve().parents[1]
MM = str(Path(sys.executable).with_name("mmagent"))

USER_GRAPH = '''
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph


def reply(state: MessagesState):
    last = state["messages"][-1]
    media = [b for b in last.content if isinstance(b, dict) and b["type"] != "text"]
    kinds = ", ".join(b["type"] for b in media)
    refs = all(b["url"].startswith("mmagent-media:sha256:") for b in media)
    return {"messages": [AIMessage(f"{last.text} | {len(state['messages'])} message(s) | {kinds or 'no files'} | refs={refs}")]}


builder = StateGraph(MessagesState)
builder.add_node("reply", reply)
builder.add_edge(START, "reply")
builder.add_edge("reply", END)
graph = builder.compile()


def make_graph():
    return builder.compile()
'''


@pytest.fixture
def image(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "receipt.png"
    Image.new("RGB", (64, 48), "white").save(path)
    return path


@pytest.fixture
def user_graph(tmp_path) -> Path:
    path = tmp_path / "my_graph.py"
    path.write_text(USER_GRAPH)
    return path


def _cli(*args, env=None):
    return subprocess.run([MM, *args], capture_output=True, text=True, env=env, timeout=300)


# -- mmagent run --graph ------------------------------------------------------------------------------


def test_cli_runs_a_users_messages_state_graph(user_graph, image):
    proc = _cli("run", "--graph", f"{user_graph}:graph", "--image", str(image), "what is this?")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "what is this? | 1 message(s) | image | refs=True"


@pytest.mark.parametrize("attr", ["builder", "make_graph"])
def test_cli_graph_accepts_uncompiled_builders_and_factories(user_graph, attr):
    proc = _cli("run", "--graph", f"{user_graph}:{attr}", "hi")
    assert proc.returncode == 0 and proc.stdout.strip() == "hi | 1 message(s) | no files | refs=True"


def test_cli_graph_takes_system_and_model_choices(tmp_path):
    path = tmp_path / "g.py"
    path.write_text('''
from langchain_core.messages import AIMessage, SystemMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from mmagent.config import load_settings


def reply(state: MessagesState):
    system = [m.text for m in state["messages"] if isinstance(m, SystemMessage)]
    return {"messages": [AIMessage(f"system={system} llm={load_settings().role('llm').model}")]}


b = StateGraph(MessagesState)
b.add_node("reply", reply)
b.add_edge(START, "reply")
b.add_edge("reply", END)
graph = b.compile()
''')
    folder = tmp_path / "my-model"
    folder.mkdir()
    proc = _cli("run", "--graph", f"{path}:graph", "-s", "Be terse.", "-m", f"llm={folder}", "hi")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"system=['Be terse.'] llm={folder}"


def test_cli_graph_continues_a_thread(user_graph):
    first = _cli("run", "--graph", f"{user_graph}:graph", "--thread", "t-user", "one")
    second = _cli("run", "--graph", f"{user_graph}:graph", "-c", "two")
    assert first.returncode == second.returncode == 0
    assert second.stdout.strip() == "two | 3 message(s) | no files | refs=True"  # one, its answer, two


@pytest.mark.parametrize("target, message", [
    ("nofile.py:graph", "no such file"),
    ("{g}:missing", "has no attribute 'missing'"),
    ("{g}", "FILE.py:ATTR"),
    ("{g}:USER_GRAPH_TEXT", "not a LangGraph graph"),
    ("json:dumps", "not a LangGraph graph"),
])
def test_cli_graph_bad_targets_are_one_line_errors(user_graph, target, message):
    user_graph.write_text(USER_GRAPH + "\nUSER_GRAPH_TEXT = 'x'\n")
    proc = _cli("run", "--graph", target.format(g=user_graph), "hi")
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_graph_without_messages_is_refused(tmp_path):
    path = tmp_path / "g.py"
    path.write_text("from typing import TypedDict\nfrom langgraph.graph import StateGraph, START, END\n"
                    "class S(TypedDict):\n    x: int\n"
                    "b = StateGraph(S)\nb.add_node('n', lambda s: {'x': 1})\nb.add_edge(START, 'n')\nb.add_edge('n', END)\n"
                    "graph = b.compile()\n")
    from mmagent.errors import InputError

    with pytest.raises(InputError, match="no 'messages' key"):
        list(run_graph(f"{path}:graph", "hi"))


# -- the kit in a user's own graph --------------------------------------------------------------------


def test_kit_nodes_in_a_users_state_graph(image):
    from langgraph.graph import END, START, StateGraph

    from mmagent.graphs.kit import MMState, Nodes, human_message

    llm = ScriptedLLM("9.75")
    nodes = Nodes(scripted_toolbox(ocr=ScriptedOCR(["TOTAL 9.75"]), caption=ScriptedCaptioner("a receipt"), llm=llm))
    g = StateGraph(MMState)
    g.add_node("begin", nodes.begin)
    g.add_node("read_text", nodes.read_text)
    g.add_node("caption", nodes.caption)
    g.add_node("answer", nodes.llm_answer)
    g.add_edge(START, "begin")
    g.add_edge("begin", "read_text")
    g.add_edge("read_text", "caption")
    g.add_edge("caption", "answer")
    g.add_edge("answer", END)
    state = g.compile().invoke({"messages": [human_message("What is the total?", [image])]})
    assert state["answer"] == "9.75" and state["messages"][-1].text == "9.75"
    assert [a["label"] for a in state["artifacts"]] == ["text read from image 1", "caption of image 1"]
    prompt = llm.calls[0]["messages"][-1].text
    assert "[text read from image 1]\nTOTAL 9.75" in prompt and "[caption of image 1]\na receipt" in prompt


# -- conversation threads -----------------------------------------------------------------------------


def test_second_turn_answers_from_the_first_turns_image(image):
    llm = ScriptedLLM("ok")
    ocr = ScriptedOCR(["Bakery Sol", "TOTAL 9.75"])
    box = scripted_toolbox(ocr=ocr, llm=llm)
    first = run("What is the total?", images=[image], toolbox=box, pipeline="tools", planner="rules", thread="t1")
    second = run("And which shop is it?", toolbox=box, pipeline="tools", planner="rules", thread="t1")
    assert first.thread == second.thread == "t1"
    prompt = llm.calls[1]["messages"]
    assert [m.role for m in prompt] == ["system", "user", "assistant", "user"]  # the first turn is history
    assert "Bakery Sol" in prompt[-1].text and "Question: And which shop is it?" in prompt[-1].text
    assert second.steps[0]["tool"] == "llm"  # the OCR of turn 1 was reused, not run again
    assert second.artifacts[0]["cached"] is True
    third = run("Thanks", toolbox=box, pipeline="tools", planner="rules", thread="other")  # another thread knows nothing
    assert third.artifacts == [] and "Bakery" not in llm.calls[2]["messages"][-1].text


def test_per_turn_fields_reset_and_no_spurious_speech(image):
    from mmagent.testing import ScriptedTTS

    box = scripted_toolbox(ocr=ScriptedOCR(), llm=ScriptedLLM("x"), tts=ScriptedTTS())
    spoken = run("Read the total and say it out loud", images=[image], toolbox=box, pipeline="tools", planner="rules", thread="t")
    plain = run("And in words?", toolbox=box, pipeline="tools", planner="rules", thread="t")
    assert [o.type for o in spoken.outputs] == ["audio"]
    assert plain.outputs == [] and plain.plan["output"] == "text"
    assert [s["tool"] for s in plain.steps] == ["llm"]


def test_second_prompt_reaches_the_tool_calling_llm(image):
    from mmagent.backends.results import ChatResult
    from mmagent.testing import tool_call

    llm = ScriptedLLM(replies=[tool_call("read_text", file="image 1"), ChatResult("9.75"), ChatResult("Bakery")],
                      supports_tools=True)
    box = scripted_toolbox(ocr=ScriptedOCR(["Bakery", "TOTAL 9.75"]), llm=llm)
    assert run("What is the total?", images=[image], toolbox=box, pipeline="tools", thread="agent").answer == "9.75"
    second = run("Which shop?", toolbox=box, pipeline="tools", thread="agent")
    assert second.answer == "Bakery"
    last = llm.calls[-1]["messages"]
    assert last[-1].role == "user" and last[-1].text == "Which shop?"
    assert any(m.role == "tool" and "TOTAL 9.75" in m.text for m in last)  # turn 1's observation stays in context
    assert [s["tool"] for s in second.steps] == ["llm"] and second.outputs == []


def test_ten_turns_with_images_keep_the_checkpoint_small(tmp_path, home):
    from PIL import Image

    from mmagent.threads import checkpoint_bytes

    box = scripted_toolbox(ocr=ScriptedOCR(["TOTAL 9.75"]), llm=ScriptedLLM("The total is 9.75."))
    sizes, raw = [], []
    for turn in range(10):
        path = tmp_path / f"img{turn}.png"
        Image.effect_noise((256, 256), 64 + turn).convert("RGB").save(path)  # ~190 KB of noise each
        raw.append(path.read_bytes())
        run(f"What is on image {turn}?", images=[path], toolbox=box, planner="rules", thread="ten")
        sizes.append(checkpoint_bytes("ten"))
    per_turn = [b - a for a, b in zip([0, *sizes], sizes)]
    assert max(per_turn) < 40_000, per_turn  # each image is ~190 KB: only references are kept
    db = (home / "threads.db").read_bytes()
    for data in raw:
        assert base64.b64encode(data[:3000])[:200] not in db and data[1000:1200] not in db


def test_images_a_tool_makes_reach_a_model_that_reads_images_as_user_content(image):
    from mmagent.backends.results import ChatResult
    from mmagent.testing import ScriptedImageGen, tool_call

    llm = ScriptedLLM(replies=[tool_call("generate_image", prompt="a red bicycle"), ChatResult("Here it is.")],
                      supports_tools=True)
    llm.accepts = ("text", "image")  # a unified model
    result = run("Draw a red bicycle like this one", images=[image],
                 toolbox=scripted_toolbox(llm=llm, image_gen=ScriptedImageGen()))
    assert [p.type for p in result.outputs] == ["image"] and result.plan["output"] == "image"
    second = llm.calls[1]["messages"]
    assert second[-2].role == "tool" and second[-2].content.startswith("generated an image (mmagent-media:")
    injected = second[-1]
    assert injected.role == "user" and [p.type for p in injected.content] == ["text", "image"]
    assert injected.content[1].ref.sha256 == result.outputs[0].ref.sha256
    first_user = llm.calls[0]["messages"][1]
    assert [p.type for p in first_user.content] == ["text", "image"]  # the user's image, seen directly
    assert [s["tool"] for s in result.steps] == ["llm", "image_gen", "llm"]  # no second render


def test_a_text_model_gets_file_references_not_images(image):
    llm = ScriptedLLM("ok", supports_tools=True)
    run("What is on it?", images=[image], toolbox=scripted_toolbox(llm=llm, ocr=ScriptedOCR()))
    user = llm.calls[0]["messages"][1]
    assert isinstance(user.content, str) and "image 1: mmagent-media:sha256:" in user.content


def test_cli_logs_lists_runs_and_threads_with_media_references(user_graph, image):
    assert _cli("run", "--graph", f"{user_graph}:graph", "--thread", "logged", "-a", str(image), "first").returncode == 0
    assert _cli("run", "--graph", f"{user_graph}:graph", "-c", "second").returncode == 0
    assert _cli("run", "--graph", f"{user_graph}:graph", "--no-log", "unlogged").returncode == 0
    runs = json.loads(_cli("logs", "--json").stdout)
    assert [r["prompt"] for r in runs] == ["second", "first"] and {r["thread"] for r in runs} == {"logged"}
    assert runs[1]["media"][0]["url"].startswith("mmagent-media:sha256:") and runs[1]["media"][0]["type"] == "image"
    text = _cli("logs").stdout
    assert "> first" in text and "> [image] mmagent-media:sha256:" in text
    assert _cli("logs", "--threads").stdout.startswith("logged  2 run(s)")
    assert "no earlier thread" not in _cli("run", "--graph", f"{user_graph}:graph", "-c", "x").stderr


def test_continue_without_any_thread_is_a_clear_error(user_graph):
    proc = _cli("run", "--graph", f"{user_graph}:graph", "-c", "hi")
    assert proc.returncode == 2 and "no earlier thread to continue" in proc.stderr


# -- streaming -------------------------------------------------------------------------------------------


def test_stream_yields_tokens_before_the_result(image):
    box = scripted_toolbox(ocr=ScriptedOCR(), llm=ScriptedLLM("The total is 9.75 euros."))
    events = list(stream("What is the total?", images=[image], toolbox=box, pipeline="tools", planner="rules"))
    kinds = [k for k, _ in events]
    tokens = [v for k, v in events if k == "token"]
    assert len(tokens) == 5 and "".join(tokens) == "The total is 9.75 euros."
    assert kinds.index("token") < kinds.index("result") and kinds[-1] == "result"
    steps = [v for k, v in events if k == "step"]
    assert [s["tool"] for s in steps] == ["ocr", "llm"]
    assert events[-1][1].streamed is True


def test_graph_stream_modes_messages_and_custom(image):
    from mmagent.runner import build_pipeline, request_message

    graph = build_pipeline("tools", scripted_toolbox(ocr=ScriptedOCR(), llm=ScriptedLLM("a b c")), planner="rules")
    request = {"messages": [request_message("total?", images=[image])]}
    tokens = [m.content for m, meta in graph.stream(request, stream_mode="messages")
              if type(m).__name__ == "AIMessageChunk" and m.content]
    assert tokens == ["a ", "b ", "c"]
    custom = list(graph.stream(request, stream_mode="custom"))
    assert [c["step"]["tool"] for c in custom] == ["ocr", "llm"]


STREAMING_GRAPH = '''
import sys
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph

model = GenericFakeChatModel(messages=iter([AIMessage("one two three")]))


def talk(state: MessagesState):
    return {"messages": [model.invoke(state["messages"])]}


builder = StateGraph(MessagesState)
builder.add_node("talk", talk)
builder.add_edge(START, "talk")
builder.add_edge("talk", END)
graph = builder.compile()
'''


def test_cli_stream_prints_a_user_graphs_tokens(tmp_path):
    path = tmp_path / "streaming.py"
    path.write_text(STREAMING_GRAPH)
    proc = _cli("run", "--graph", f"{path}:graph", "--stream", "count")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "one two three\n"
    events = list(run_graph(f"{path}:graph", "count", tokens=True))
    assert [v for k, v in events if k == "token"] == ["one", " ", "two", " ", "three"]


# -- plugins add tools and graphs ----------------------------------------------------------------------


def test_hook_register_tools(image):
    """A plugin adds a tool for images: the rule planner runs it and the LLM planner is offered it,
    with no edit of mmagent's graphs."""
    import mmagent
    from mmagent.plugin_manager import get_plugins
    from mmagent.tools import Tool, ToolOutput, get_tools

    def size(_backend, args):
        part = args["file"]
        return ToolOutput(f"{part.width}x{part.height} pixels")

    class Plugin:
        @mmagent.hookimpl
        def register_tools(self, register):
            register(Tool("image_size", "Say how big an image is.",
                          {"type": "object", "properties": {"file": {"type": "string"}}, "required": ["file"]},
                          None, size, artifact="size", file_kind="image", auto=True, label="size of {file}"))
            register(Tool("broken name!", "x", {"type": "object"}, None, size))

    info = get_plugins().add(Plugin(), "sizes")
    assert get_tools().get("image_size").file_kind == "image"  # registered on first use
    assert "tool image_size" in info.provides and any("broken name!" in e for e in info.errors)
    llm = ScriptedLLM("64 by 48")
    result = run("How big is it?", images=[image], toolbox=scripted_toolbox(llm=llm), planner="rules")
    assert "image_size" in result.plan["tools"]
    assert "[size of image 1]\n64x48 pixels" in llm.calls[0]["messages"][-1].text
    agent_llm = ScriptedLLM("ok", supports_tools=True)
    run("How big is it?", images=[image], toolbox=scripted_toolbox(llm=agent_llm))
    assert "image_size" in {t.name for t in agent_llm.calls[0]["tools"]}


def test_hook_register_graphs(image):
    import mmagent
    from mmagent.graphs_registry import GraphSpec, get_graphs
    from mmagent.plugin_manager import get_plugins

    def echo_builder(toolbox, **options):
        from langchain_core.messages import AIMessage
        from langgraph.graph import END, START, StateGraph

        from mmagent.graphs.kit import MMState, Nodes

        nodes = Nodes(toolbox)

        def answer(state):
            return {"answer": f"echo: {state['question']}", "messages": [AIMessage(f"echo: {state['question']}")]}

        g = StateGraph(MMState)
        g.add_node("begin", nodes.begin)
        g.add_node("answer", answer)
        g.add_edge(START, "begin")
        g.add_edge("begin", "answer")
        g.add_edge("answer", END)
        return g

    class Plugin:
        @mmagent.hookimpl
        def register_graphs(self, register):
            register(GraphSpec("echo", "Says the question back", echo_builder))
            register(GraphSpec("tools", "a hijack", echo_builder))

    info = get_plugins().add(Plugin(), "echo-graphs")
    assert get_graphs().owners["tools"] == "graphs"  # a plugin cannot replace a built-in graph
    assert "graph echo" in info.provides and any("already registered" in e for e in info.errors)
    assert run("hello", pipeline="echo", toolbox=scripted_toolbox()).answer == "echo: hello"


def test_tool_call_validates_arguments_and_files(image):
    from mmagent.errors import InputError
    from mmagent.tools import ToolError, call_tool

    box = scripted_toolbox(ocr=ScriptedOCR(["HELLO"]), asr=ScriptedASR("hi"))
    assert call_tool("read_text", {"file": str(image)}, box).text == "HELLO"
    data_url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
    out = call_tool("read_text", {"file": data_url}, box)
    assert out.artifact["file"].startswith("mmagent-media:sha256:")
    assert call_tool("read_text", {"file": out.artifact["file"]}, box).text == "HELLO"  # by reference
    with pytest.raises(ToolError, match="missing argument"):
        call_tool("read_text", {}, box)
    with pytest.raises(InputError, match="expected an image"):
        call_tool("read_text", {"file": "data:audio/wav;base64," + base64.b64encode(silent_wav()).decode()}, box)
    with pytest.raises(ToolError, match="no tool named"):
        call_tool("nope", {}, box)
    with pytest.raises(ToolError, match="no caption backend"):
        call_tool("caption_image", {"file": str(image)}, box)


# -- LangGraph Studio ------------------------------------------------------------------------------------


def test_langgraph_json_paths_load():
    from mmagent.runner import load_graph

    config = json.loads((ROOT / "langgraph.json").read_text())
    assert set(config["graphs"]) >= {"tools", "adapter"}
    for name, path in config["graphs"].items():
        file, attr = path.split(":")
        graph = load_graph(f"{ROOT / file}:{attr}")
        assert "messages" in graph.channels and graph.name == name
