"""The LangChain bridge: ChatMMAgent (a BaseChatModel over pipelines and backends) and as_tools,
with langchain-tests' standard suites."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from mmagent.backends.results import ChatResult
from mmagent.errors import MMAgentError
from mmagent.langchain import ChatMMAgent, as_tools, parse_model
from mmagent.testing import ScriptedLLM, ScriptedOCR, scripted_toolbox, tool_call

MEDIA = Path(__file__).resolve().parent.parent / "examples" / "media"


@pytest.fixture
def receipt_b64() -> str:
    return base64.b64encode((MEDIA / "receipt.png").read_bytes()).decode()


# -- langchain-tests ----------------------------------------------------------------------------------


class TestChatMMAgentUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self):
        return ChatMMAgent

    @property
    def chat_model_params(self) -> dict:
        return {"model": "llm"}

    @property
    def has_tool_calling(self) -> bool:
        return False  # the offline default chat model does not call tools


class TestChatMMAgentUnitToolCalling(ChatModelUnitTests):
    """The same over the OpenAI-compatible backend, which calls tools (nothing is sent here)."""

    @pytest.fixture(autouse=True)
    def _key(self, monkeypatch):
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    @property
    def chat_model_class(self):
        return ChatMMAgent

    @property
    def chat_model_params(self) -> dict:
        return {"model": "llm/openai"}


@pytest.mark.slow
class TestChatMMAgentIntegration(ChatModelIntegrationTests):
    """The standard integration suite on the offline default chat model (SmolLM2-135M). Tool
    calling, structured output and image URLs are off: the tests for those need a model that calls
    tools, or the network."""

    @pytest.fixture(autouse=True)
    def _offline_model(self, zoo_model):
        type(self).model_path = str(zoo_model("smollm2-135m-instruct"))

    @property
    def chat_model_class(self):
        return ChatMMAgent

    @property
    def chat_model_params(self) -> dict:
        return {"model": f"llm={self.model_path}", "max_tokens": 12}

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False  # the suite downloads its test image

    @property
    def returns_usage_metadata(self) -> bool:
        return False


# -- ChatMMAgent over a backend ------------------------------------------------------------------------


def test_direct_backend_chat_and_streaming():
    llm = ScriptedLLM("The answer is 42")
    chat = ChatMMAgent(backend=llm)
    reply = chat.invoke([SystemMessage("be brief"), HumanMessage("question?")])
    assert isinstance(reply, AIMessage) and reply.text == "The answer is 42"
    assert [m.role for m in llm.calls[0]["messages"]] == ["system", "user"]
    chunks = list(chat.stream("question?"))
    assert [c.text for c in chunks if c.text] == ["The ", "answer ", "is ", "42"]


def test_bind_tools_returns_tool_calls_and_takes_tool_messages():
    llm = ScriptedLLM(replies=[tool_call("add", a=1, b=2), ChatResult("3")], supports_tools=True)

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    chat = ChatMMAgent(backend=llm).bind_tools([add])
    first = chat.invoke("what is 1 + 2?")
    assert first.tool_calls == [{"name": "add", "args": {"a": 1, "b": 2}, "id": "call_add", "type": "tool_call"}]
    assert llm.calls[0]["tools"][0].name == "add" and "a" in llm.calls[0]["tools"][0].parameters["properties"]
    second = chat.invoke([HumanMessage("what is 1 + 2?"), first, ToolMessage("3", tool_call_id="call_add")])
    assert second.text == "3" and llm.calls[1]["messages"][-1].role == "tool"


def test_bind_tools_refuses_a_model_that_cannot_call_tools():
    with pytest.raises(MMAgentError, match="cannot call tools"):
        ChatMMAgent(backend=ScriptedLLM()).bind_tools([lambda x: x])
    with pytest.raises(MMAgentError, match="a pipeline calls its own tools"):
        ChatMMAgent(pipeline="tools").bind_tools([])


@pytest.mark.parametrize("spec, parsed", [
    ("llm", ("llm", None, None)), ("vlm/transformers", ("vlm", "transformers", None)),
    ("llm=org/model-1", ("llm", None, "org/model-1")),
])
def test_model_specs(spec, parsed):
    assert parse_model(spec) == parsed


def test_backend_options_reach_the_backend(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    chat = ChatMMAgent(model="llm/openai", backend_options={"base_url": "http://127.0.0.1:9/v1"})
    backend = chat.get_backend()
    assert backend.name == "openai" and backend.options.get("base_url") == "http://127.0.0.1:9/v1"


def test_bad_model_spec_is_an_input_error():
    from mmagent.errors import InputError

    with pytest.raises(InputError, match="llm or vlm"):
        parse_model("ocr")


# -- ChatMMAgent over a pipeline --------------------------------------------------------------------------


def test_pipeline_answers_about_an_image_given_as_a_standard_block(receipt_b64):
    llm = ScriptedLLM("The total is 9.75.")
    chat = ChatMMAgent(pipeline="tools", planner="rules",
                       toolbox=scripted_toolbox(ocr=ScriptedOCR(["CAFE", "TOTAL 9.75"]), llm=llm))
    message = HumanMessage([{"type": "text", "text": "What is the total?"},
                            {"type": "image", "base64": receipt_b64, "mime_type": "image/png"}])
    reply = chat.invoke([message])
    assert reply.text == "The total is 9.75."
    trace = reply.response_metadata["mmagent"]
    assert trace["pipeline"] == "tools" and [s["tool"] for s in trace["steps"]] == ["ocr", "llm"]
    assert "TOTAL 9.75" in llm.calls[0]["messages"][-1].text
    # OpenAI-style parts work the same
    openai_style = HumanMessage([{"type": "text", "text": "What is the total?"},
                                 {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{receipt_b64}"}}])
    assert chat.invoke([openai_style]).text == "The total is 9.75."


def test_pipeline_streams_tokens(receipt_b64):
    chat = ChatMMAgent(pipeline="tools", planner="rules",
                       toolbox=scripted_toolbox(ocr=ScriptedOCR(), llm=ScriptedLLM("nine seventy five")))
    message = HumanMessage([{"type": "text", "text": "total?"},
                            {"type": "image", "base64": receipt_b64, "mime_type": "image/png"}])
    chunks = list(chat.stream([message]))
    assert [c.text for c in chunks if c.text] == ["nine ", "seventy ", "five"]
    assert chunks[-1].response_metadata["mmagent"]["pipeline"] == "tools"


def test_pipeline_rejects_hostile_media_as_an_input_error():
    from mmagent.errors import InputError

    bomb = (Path(__file__).parent / "hostile" / "corpus" / "bomb_9000x9000_1bit.png").read_bytes()
    chat = ChatMMAgent(pipeline="tools", toolbox=scripted_toolbox(llm=ScriptedLLM()))
    with pytest.raises(InputError):
        chat.invoke([HumanMessage([{"type": "image", "base64": base64.b64encode(bomb).decode(),
                                    "mime_type": "image/png"}])])


# -- as_tools and a LangGraph prebuilt agent -----------------------------------------------------------


def test_as_tools_are_langchain_tools_with_a_file_argument(tmp_path):
    from langchain_core.tools import BaseTool
    from PIL import Image

    box = scripted_toolbox(ocr=ScriptedOCR(["HELLO"]), llm=ScriptedLLM())
    tools = as_tools(box)
    assert all(isinstance(t, BaseTool) for t in tools)
    assert [t.name for t in tools] == ["read_text"]  # only tools whose backend this toolbox has
    read = tools[0]
    assert read.args["file"]["type"] == "string"
    path = tmp_path / "x.png"
    Image.new("RGB", (20, 20), "white").save(path)
    assert read.invoke({"file": str(path)}) == "HELLO"
    message = read.invoke({"type": "tool_call", "id": "1", "name": "read_text", "args": {"file": str(path)}})
    assert isinstance(message, ToolMessage) and message.content == "HELLO"
    assert message.artifact["artifact"]["kind"] == "ocr"


def test_create_react_agent_with_mmagent_tools(tmp_path):
    from langgraph.prebuilt import ToolNode, create_react_agent
    from PIL import Image

    path = tmp_path / "receipt.png"
    Image.new("RGB", (20, 20), "white").save(path)
    llm = ScriptedLLM(replies=[tool_call("read_text", file=str(path)), ChatResult("The total is 9.75.")],
                      supports_tools=True)
    box = scripted_toolbox(ocr=ScriptedOCR(["TOTAL 9.75"]), llm=llm)
    agent = create_react_agent(ChatMMAgent(backend=llm), as_tools(box))
    state = agent.invoke({"messages": [HumanMessage(f"What is the total on {path}?")]})
    assert state["messages"][-1].text == "The total is 9.75."
    tool_message = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert tool_message.content == "TOTAL 9.75" and tool_message.name == "read_text"
    assert isinstance(ToolNode(as_tools(box)), ToolNode)


# -- real weights ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_chat_model_reads_a_receipt_from_a_standard_block(offline_home, receipt_b64):
    reply = ChatMMAgent().invoke([HumanMessage([
        {"type": "text", "text": "What is the total on the receipt?"},
        {"type": "image", "base64": receipt_b64, "mime_type": "image/png"}])])
    assert "9.75" in reply.text
    trace = reply.response_metadata["mmagent"]
    steps = [s["tool"] for s in trace["steps"]]
    assert trace["pipeline"] == "auto" and trace["route"]["route"] == "tools"  # the router chose OCR + LLM
    assert "router" in steps and steps[-2:] == ["ocr", "llm"]


@pytest.mark.slow
def test_default_chat_model_streams_real_tokens(offline_home, receipt_b64):
    chunks = [c.text for c in ChatMMAgent(model="llm", max_tokens=24).stream("Name three colours.") if c.text]
    assert len(chunks) > 3 and len("".join(chunks)) > 10
