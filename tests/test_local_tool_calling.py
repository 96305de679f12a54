"""Tool calling for local transformers chat models (opt-in, grammar-constrained), tool_choice, and
the create_react_agent example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmagent.backends.results import Message, ToolSpec
from mmagent.errors import BackendError, InputError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
READ = ToolSpec("read_text", "Read the text in an image.",
                {"type": "object", "properties": {"file": {"type": "string"}}, "required": ["file"]})
ADD = ToolSpec("add", "Add two integers.", {"type": "object", "properties": {"a": {"type": "integer"},
                                                                             "b": {"type": "integer"}},
                                           "required": ["a", "b"]})


def test_reply_schema_follows_tool_choice():
    from mmagent.plugins.transformers_llm import tool_reply_schema

    auto = tool_reply_schema([READ, ADD])
    assert [a["properties"].get("tool", {}).get("const") for a in auto["anyOf"]] == ["read_text", "add", None]
    assert len(tool_reply_schema([READ, ADD], "required")["anyOf"]) == 2
    assert [a["properties"]["tool"]["const"] for a in tool_reply_schema([READ, ADD], "add")["anyOf"]] == ["add"]
    assert tool_reply_schema([READ], "none")["required"] == ["answer"]
    with pytest.raises(InputError, match="names no offered tool"):
        tool_reply_schema([READ], "nope")


def test_parse_tool_reply():
    from mmagent.plugins.transformers_llm import parse_tool_reply

    call = parse_tool_reply('{"tool":"add","arguments":{"a":1,"b":2}}')
    assert call.finish_reason == "tool_calls" and call.tool_calls[0].name == "add"
    assert call.tool_calls[0].arguments == {"a": 1, "b": 2}
    assert parse_tool_reply('{"answer":"It is 3. Done"}', stop=[". Done"]).text == "It is 3"
    assert parse_tool_reply('{"answer":"It is th', cut=True).text == "It is th"
    with pytest.raises(BackendError):
        parse_tool_reply("not json")


def test_tool_prompt_renders_calls_and_results_as_plain_turns():
    from mmagent.backends.results import ToolCall
    from mmagent.plugins.transformers_llm import tool_prompt

    chat = tool_prompt([Message("system", "Be brief."), Message("user", "1+2?"),
                        Message("assistant", "", tool_calls=(ToolCall("c1", "add", {"a": 1, "b": 2}),)),
                        Message("tool", "3", tool_call_id="c1")], [ADD])
    assert [m.role for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[0].text.startswith("Be brief.") and "- add: Add two integers." in chat[0].text
    assert json.loads(chat[2].text) == {"tool": "add", "arguments": {"a": 1, "b": 2}}
    assert chat[3].text == "Result of add:\n3"


def test_tool_calling_is_opt_in():
    from mmagent.plugins.transformers_llm import TransformersChat

    assert TransformersChat(model="x").supports_tools is False
    if TransformersChat.supports_schema:
        assert TransformersChat(model="x", tool_calling=True).supports_tools is True
        assert TransformersChat(model="x", tool_calling="false").supports_tools is False


def test_tool_calling_without_xgrammar_fails_clearly(monkeypatch):
    from mmagent.plugins.transformers_llm import TransformersChat

    monkeypatch.setattr(TransformersChat, "supports_schema", False)
    with pytest.raises(BackendError, match="needs xgrammar"):
        TransformersChat(model="x", tool_calling=True)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_random_model_replies_are_always_valid_calls_or_answers(tiny_llama, temperature):
    pytest.importorskip("xgrammar")
    from mmagent.plugins.transformers_llm import TransformersChat

    llm = TransformersChat(model=str(tiny_llama), device="cpu", tool_calling=True)
    for choice in (None, "required"):
        result = llm.chat([Message("user", "What is 1 + 2?")], tools=[READ, ADD], max_tokens=60,
                          temperature=temperature, tool_choice=choice)
        if result.tool_calls:
            call = result.tool_calls[0]
            assert call.name in ("read_text", "add")
            required = READ.parameters["required"] if call.name == "read_text" else ADD.parameters["required"]
            assert set(required) <= set(call.arguments)
        else:
            # only an answer, or a call cut at max_tokens by random weights
            assert choice is None or (result.finish_reason == "length" and result.text == "")


def test_a_tool_call_is_not_cut_by_a_small_answer_budget(tiny_llama):
    pytest.importorskip("xgrammar")
    from mmagent.plugins.transformers_llm import TransformersChat

    path = "/tmp/tmp.dqN3wJdscH/examples/media/receipt.png"  # a long path: ~25 tokens as JSON
    read = ToolSpec("read_text", "Read the text.", {"type": "object", "properties": {
        "file": {"type": "string", "enum": [path]}}, "required": ["file"]})
    llm = TransformersChat(model=str(tiny_llama), device="cpu", tool_calling=True)
    result = llm.chat([Message("user", "Read it.")], tools=[read], max_tokens=5, tool_choice="required")
    assert result.tool_calls and result.tool_calls[0].arguments == {"file": path}


def test_as_tools_files_enum_and_errors_go_back_to_the_model(tmp_path):
    from langchain_core.messages import ToolMessage
    from PIL import Image

    from mmagent.langchain import as_tools
    from mmagent.testing import ScriptedOCR, scripted_toolbox

    path = tmp_path / "x.png"
    Image.new("RGB", (20, 20), "white").save(path)
    [read] = as_tools(scripted_toolbox(ocr=ScriptedOCR(["HI"])), files=[str(path)])
    assert read.args["file"]["enum"] == [str(path)]
    bad = read.invoke({"type": "tool_call", "id": "1", "name": "read_text", "args": {"file": str(tmp_path / "no.png")}})
    assert isinstance(bad, ToolMessage) and bad.status == "error" and "no such file" in bad.content


@pytest.mark.slow
def test_react_agent_example_runs_offline(offline_home, tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "react_agent.py")], capture_output=True, text=True,
                          timeout=900, env={**os.environ}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("[tool call] read_text(") and "receipt.png" in lines[0]
    assert lines[1].startswith("[read_text]") and "TOTAL 9.75" in lines[1]
    assert lines[-1].startswith("[answer]") and "9.75" in lines[-1]
