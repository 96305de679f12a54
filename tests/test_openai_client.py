"""The OpenAI-compatible client backend against a fake server on 127.0.0.1.

The fake records every request and answers from a script: JSON completions, SSE streams
(`data: {...}` ... `data: [DONE]`) or HTTP errors. Nothing here leaves the loopback interface.
"""

from __future__ import annotations

import base64
import io
import json
import math
import socket
import subprocess
import sys
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openai")

from mmagent.backends import (  # noqa: E402
    ChatResult,
    Message,
    ToolCall,
    ToolSpec,
    get_backend,
)
from mmagent.content import TextPart, load_media  # noqa: E402
from mmagent.errors import BackendError, ConfigError, InputError  # noqa: E402
from mmagent.plugins import openai_client  # noqa: E402
from mmagent.plugins.openai_client import OpenAIChat, OpenAIVision  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


# -- the fake server --------------------------------------------------------------------------------


def completion(text: str | None = "ok", *, tool_calls: list | None = None, finish: str = "stop",
               usage: dict | None = None) -> dict:
    message: dict = {"role": "assistant", "content": text}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "fake",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


def chunk(content: str | None = None, *, role: str | None = None, finish: str | None = None) -> dict:
    delta = {k: v for k, v in (("role", role), ("content", content)) if v is not None}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class FakeOpenAI:
    """A threaded HTTP server speaking just enough of POST /v1/chat/completions."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold a handler thread for long

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                      "body": json.loads(raw or b"null")})
                reply = fake.script.pop(0) if fake.script else {"json": completion()}
                if "sse" in reply:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for event in reply["sse"]:
                        data = event if isinstance(event, str) else json.dumps(event)
                        self.wfile.write(f"data: {data}\n\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                payload = reply.get("json")
                body = reply.get("text", "").encode() if payload is None else json.dumps(payload).encode()
                self.send_response(reply.get("status", 200))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in reply.get("headers", {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def reply(self, **reply) -> None:
        self.script.append(reply)

    @property
    def body(self) -> dict:
        """The JSON body of the last request."""
        return self.requests[-1]["body"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def openai_env(monkeypatch):
    """No stray OpenAI settings or proxies from the developer's shell; the plugin registered."""
    import os

    for var in list(os.environ):
        if var.startswith("OPENAI_") or var.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    from mmagent.runtime import get_runtime
    from mmagent.plugin_manager import get_plugins

    plugins = get_plugins()
    if "openai_client" not in plugins.infos:  # until it is listed in BUILTIN_PLUGINS
        plugins.add(openai_client, "openai_client", source="builtin")
    get_runtime().refresh()


@pytest.fixture
def server():
    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture
def llm(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return get_backend("llm", "openai", model="fake-model", base_url=server.url, max_retries=0, timeout=10)


def png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 90)).save(buf, "PNG")
    return buf.getvalue()


def wav_bytes(seconds: float = 0.25, rate: int = 16000) -> bytes:
    samples = (0.3 * 32767 * np.sin(2 * math.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


# -- registration and configuration -----------------------------------------------------------------


def test_registered_for_llm_and_vlm_with_tools_and_streaming(server):
    llm = get_backend("llm", "openai", base_url=server.url)
    vlm = get_backend("vlm", "openai", base_url=server.url)
    assert type(llm) is OpenAIChat and type(vlm) is OpenAIVision
    for backend in (llm, vlm):
        assert backend.supports_tools and backend.supports_streaming
        assert backend.model_id == "gpt-4o-mini" and backend.requires == ("openai",)
        assert {"text", "image", "audio"} <= set(backend.accepts)
    assert OpenAIChat.chat is OpenAIVision.chat  # one implementation
    assert server.requests == []  # building the client makes no request
    llm.model
    assert server.requests == []


def test_text_chat_round_trip(llm, server):
    server.reply(json=completion("Paris.", usage={"prompt_tokens": 20, "completion_tokens": 2,
                                                   "total_tokens": 22}))
    result = llm.chat([Message("system", "Be brief."), Message("user", "Capital of France?")],
                      max_tokens=50, temperature=0.3, stop=["END", "\n\n"])
    assert result == ChatResult(text="Paris.", finish_reason="stop",
                                usage={"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22})
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-test"
    assert request["body"] == {
        "model": "fake-model",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Capital of France?"}],
        "max_tokens": 50, "temperature": 0.3, "stop": ["END", "\n\n"],
    }


def test_missing_content_and_usage_are_tolerated(llm, server):
    body = completion(None)
    del body["usage"]
    server.reply(json=body)
    assert llm.chat([Message("user", "hi")]) == ChatResult(text="", usage={})
    assert "stop" not in server.body and "tools" not in server.body


def test_images_and_audio_go_out_as_data_urls_with_the_exact_bytes(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    vlm = get_backend("vlm", "openai", model="gpt-4o", base_url=server.url, max_retries=0)
    png, wav = png_bytes(), wav_bytes()
    image, audio = load_media(png), load_media(wav)
    server.reply(json=completion("A red rectangle and a beep."))
    result = vlm.chat([Message("user", [TextPart("Describe both."), image, audio])])
    assert result.text == "A red rectangle and a beep."
    text_block, image_block, audio_block = server.body["messages"][0]["content"]
    assert text_block == {"type": "text", "text": "Describe both."}
    assert image_block["type"] == "image_url"
    prefix, data = image_block["image_url"]["url"].split(",", 1)
    assert prefix == "data:image/png;base64"
    assert base64.b64decode(data) == png == image.read_bytes()
    assert audio_block["type"] == "input_audio"
    assert audio_block["input_audio"]["format"] == "wav"
    assert base64.b64decode(audio_block["input_audio"]["data"]) == wav == audio.read_bytes()


def test_tools_go_out_as_functions_and_calls_come_back_with_dict_arguments(llm, server):
    server.reply(json=completion(None, finish="tool_calls", tool_calls=[
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"type": "function", "function": {"name": "get_weather", "arguments": ""}},  # no id: one is made up
    ]))
    result = llm.chat([Message("user", "Weather in Paris?")], tools=[WEATHER])
    assert server.body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER.parameters}}]
    assert result.text == "" and result.finish_reason == "tool_calls"
    assert result.tool_calls == (ToolCall("call_1", "get_weather", {"city": "Paris"}),
                                 ToolCall("mmagent_call_1", "get_weather", {}))


def test_multi_turn_tool_conversation_serializes(llm, server):
    call = ToolCall("call_1", "get_weather", {"city": "Zürich", "units": ["C"]})
    llm.chat([
        Message("user", "Weather in Zürich?"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", '{"temp": 21}', tool_call_id="call_1"),
        Message("assistant", "It is 21 °C."),
        Message("user", [TextPart("Thanks!")]),
    ], tools=[WEATHER])
    messages = server.body["messages"]
    assert messages[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(
            {"city": "Zürich", "units": ["C"]}, ensure_ascii=False)}}]}
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == call.arguments
    assert messages[2] == {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_1"}
    assert messages[3] == {"role": "assistant", "content": "It is 21 °C."}
    assert messages[4] == {"role": "user", "content": [{"type": "text", "text": "Thanks!"}]}


def test_tool_message_without_call_id_is_an_input_error(llm, server):
    with pytest.raises(InputError, match="tool_call_id"):
        llm.chat([Message("tool", "42")])
    assert server.requests == []


@pytest.mark.parametrize("arguments, problem", [('{"city": "Par', "malformed JSON"),
                                                 ('["Paris"]', "not a JSON object")])
def test_bad_tool_call_arguments_are_a_backend_error(llm, server, arguments, problem):
    server.reply(json=completion(None, finish="tool_calls", tool_calls=[
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]))
    with pytest.raises(BackendError, match=f"get_weather.*{problem}|{problem}.*get_weather"):
        llm.chat([Message("user", "Weather?")], tools=[WEATHER])


# -- structured output ------------------------------------------------------------------------------


RECEIPT_SCHEMA = {"title": "Receipt", "type": "object", "required": ["shop", "total"],
                  "properties": {"shop": {"title": "Shop", "type": "string"},
                                 "total": {"title": "Total", "type": "number"}}}


def test_a_schema_goes_out_as_strict_json_schema_response_format(llm, server):
    assert llm.supports_schema and OpenAIChat.supports_schema and OpenAIVision.supports_schema
    server.reply(json=completion('{"shop": "Corner Cafe", "total": 9.75}'))
    result = llm.chat([Message("user", "CORNER CAFE ... TOTAL 9.75")], schema=RECEIPT_SCHEMA)
    assert json.loads(result.text) == {"shop": "Corner Cafe", "total": 9.75}
    assert server.body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "Receipt", "strict": True,
        "schema": {**RECEIPT_SCHEMA, "additionalProperties": False}}}  # what strict mode demands
    assert "additionalProperties" not in RECEIPT_SCHEMA  # the caller's schema is left alone


def test_nested_objects_get_closed_too_and_optional_fields_make_it_not_strict(llm, server):
    from pydantic import BaseModel

    class Item(BaseModel):
        name: str

    class Order(BaseModel):
        items: list[Item]

    class Note(BaseModel):
        text: str
        author: str | None = None

    llm.chat([Message("user", "x")], schema=Order.model_json_schema())
    sent = server.body["response_format"]["json_schema"]
    assert sent["strict"] is True and sent["name"] == "Order"
    assert sent["schema"]["additionalProperties"] is False
    assert sent["schema"]["$defs"]["Item"]["additionalProperties"] is False
    llm.chat([Message("user", "x")], schema=Note.model_json_schema())
    sent = server.body["response_format"]["json_schema"]
    assert sent == {"name": "Note", "strict": False, "schema": Note.model_json_schema()}


def test_extract_through_the_server_sends_the_schema_and_validates_the_reply(llm, server):
    from pydantic import BaseModel

    from mmagent.extract import extract

    class Receipt(BaseModel):
        shop: str
        total: float

    server.reply(json=completion('{"shop": "Corner Cafe", "total": "n/a"}'))
    server.reply(json=completion('{"shop": "Corner Cafe", "total": 9.75}'))
    result = extract(Receipt, "CORNER CAFE ... TOTAL 9.75", llm)
    assert result.value == Receipt(shop="Corner Cafe", total=9.75) and result.constrained
    assert len(server.requests) == 2
    assert all(r["body"]["response_format"]["json_schema"]["name"] == "Receipt" for r in server.requests)
    assert "total" in server.requests[1]["body"]["messages"][-1]["content"]  # the repair request


# -- streaming --------------------------------------------------------------------------------------


def test_streaming_yields_the_deltas_in_order(llm, server):
    server.reply(sse=[chunk("", role="assistant"), chunk("Hel"), chunk("lo"), chunk(", "), chunk("world"),
                      chunk(finish="stop")])
    pieces = list(llm.stream([Message("user", "Greet me.")], max_tokens=8, stop=["!"]))
    assert pieces == ["Hel", "lo", ", ", "world"]
    assert "".join(pieces) == "Hello, world"
    assert server.body["stream"] is True
    assert server.body["max_tokens"] == 8 and server.body["stop"] == ["!"]


def test_stream_errors_are_backend_errors(llm, server):
    server.reply(status=503, json={"error": {"message": "model is loading"}})
    with pytest.raises(BackendError, match="HTTP 503: model is loading"):
        list(llm.stream([Message("user", "hi")]))
    server.reply(sse=[chunk("partial"), {"error": {"message": "backend overloaded"}}])
    pieces = []
    with pytest.raises(BackendError, match="backend overloaded"):
        for piece in llm.stream([Message("user", "hi")]):
            pieces.append(piece)
    assert pieces == ["partial"]


# -- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status, body, expected", [
    (401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}},
     r"HTTP 401: Incorrect API key provided \(check OPENAI_API_KEY\)"),
    (500, {"error": {"message": "the GPU caught fire"}}, "HTTP 500: the GPU caught fire"),
    (404, {"detail": "model 'fake-model' not found"}, "HTTP 404: model 'fake-model' not found"),
    (502, "upstream\nbroken", r"HTTP 502: upstream\\nbroken"),
])
def test_http_errors_are_one_line_backend_errors(llm, server, status, body, expected):
    server.reply(status=status, **({"json": body} if isinstance(body, dict) else {"text": body}))
    with pytest.raises(BackendError, match=expected) as info:
        llm.chat([Message("user", "hi")])
    message = str(info.value)
    assert "\n" not in message and server.url in message and "llm/openai" in message


def test_server_errors_are_retried_max_retries_times(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    llm = get_backend("llm", "openai", model="m", base_url=server.url, max_retries=1)
    server.reply(status=500, json={"error": {"message": "hiccup"}}, headers={"retry-after-ms": "1"})
    server.reply(json=completion("recovered"))
    assert llm.chat([Message("user", "hi")]).text == "recovered"
    assert len(server.requests) == 2


def test_closed_port_is_a_backend_error(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = get_backend("llm", "openai", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{port}.*cannot connect"):
        llm.chat([Message("user", "hi")])


def test_a_server_that_never_answers_times_out():
    with socket.socket() as sock:  # accepts connections (backlog) but never reads or answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        llm = get_backend("llm", "openai", base_url=url, timeout=0.3, max_retries=0)
        with pytest.raises(BackendError, match=r"no answer within 0\.3 s"):
            llm.chat([Message("user", "hi")])


def test_an_unreadable_answer_is_a_backend_error(llm, server):
    server.reply(text="<html>not json</html>")
    with pytest.raises(BackendError, match="llm/openai"):
        llm.chat([Message("user", "hi")])
    server.reply(json={"object": "chat.completion", "choices": []})
    with pytest.raises(BackendError, match="no choices"):
        llm.chat([Message("user", "hi")])


def test_missing_key_without_base_url_names_the_variable(server):
    llm = get_backend("llm", "openai")
    with pytest.raises(BackendError, match="needs an API key: set OPENAI_API_KEY"):
        llm.chat([Message("user", "hi")])
    other = get_backend("llm", "openai", api_key_env="MY_GATEWAY_KEY")
    with pytest.raises(BackendError, match="set MY_GATEWAY_KEY"):
        other.chat([Message("user", "hi")])


def test_local_servers_need_no_key_and_keys_come_from_the_named_variable(server, monkeypatch):
    get_backend("llm", "openai", model="llama3.2", base_url=server.url).chat([Message("user", "hi")])
    assert server.requests[-1]["headers"]["authorization"] == "Bearer not-needed"
    monkeypatch.setenv("MY_GATEWAY_KEY", "sk-gateway")
    get_backend("llm", "openai", model="llama3.2", base_url=server.url,
                api_key_env="MY_GATEWAY_KEY").chat([Message("user", "hi")])
    assert server.requests[-1]["headers"]["authorization"] == "Bearer sk-gateway"


def test_base_url_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    assert get_backend("llm", "openai").chat([Message("user", "hi")]).text == "ok"
    assert len(server.requests) == 1


def test_each_endpoint_gets_its_own_client(server):
    other = FakeOpenAI()
    try:
        other.reply(json=completion("from the other one"))
        first = get_backend("llm", "openai", model="same", base_url=server.url)
        second = get_backend("llm", "openai", model="same", base_url=other.url)
        assert first.chat([Message("user", "hi")]).text == "ok"
        assert second.chat([Message("user", "hi")]).text == "from the other one"
        assert len(server.requests) == len(other.requests) == 1
    finally:
        other.close()


def test_configured_from_the_roles_table(server, tmp_path, monkeypatch):
    config = tmp_path / "mmagent.toml"
    config.write_text(f'[roles.vlm]\nbackend = "openai"\nmodel = "llama3.2-vision"\n'
                      f'options = {{ base_url = "{server.url}", timeout = 5, max_retries = 0 }}\n')
    monkeypatch.setenv("MMAGENT_CONFIG", str(config))
    vlm = get_backend("vlm")
    assert type(vlm) is OpenAIVision and vlm.timeout == 5 and vlm.max_retries == 0
    vlm.chat([Message("user", "hi")])
    assert server.body["model"] == "llama3.2-vision"


@pytest.mark.parametrize("options, match", [
    ({"base-url": "http://127.0.0.1:1/v1"}, "unknown option"),
    ({"timeout": 0}, "timeout must be a positive number"),
    ({"timeout": "soon"}, "timeout must be a positive number"),
    ({"max_retries": -1}, "max_retries must be a non-negative integer"),
])
def test_bad_options_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        get_backend("llm", "openai", **options)


def test_importing_the_plugin_does_not_import_the_sdk():
    code = ("import sys, mmagent.plugins.openai_client as m; "
            "m.OpenAIVision(model='x', base_url='http://127.0.0.1:1/v1'); "
            "assert 'openai' not in sys.modules, 'openai imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the example script -----------------------------------------------------------------------------


def load_example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("unified_openai", ROOT / "examples" / "unified_openai.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must do nothing but define main()
    return module


def test_example_asks_about_an_image_and_streams_the_answer(server, capsys):
    example = load_example()
    assert server.requests == []
    server.reply(sse=[chunk("The total "), chunk("is 9.75.")])
    assert example.main(["--base-url", server.url, "--question", "What is the total?"]) == 0
    assert capsys.readouterr().out.strip() == "The total is 9.75."
    body = server.body
    assert body["model"] == "llama3.2-vision"
    text, image = body["messages"][0]["content"]
    assert text == {"type": "text", "text": "What is the total?"}
    receipt = (ROOT / "examples" / "media" / "receipt.png").read_bytes()
    assert base64.b64decode(image["image_url"]["url"].split(",", 1)[1]) == receipt


def test_example_without_a_server_prints_a_clear_error(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert load_example().main(["--base-url", f"http://127.0.0.1:{port}/v1"]) == 1
    err = capsys.readouterr().err
    assert "cannot connect" in err and "ollama serve" in err


def test_availability_follows_key_or_server(monkeypatch):
    from mmagent.plugins.openai_client import OpenAIChat

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert "OPENAI_API_KEY" in OpenAIChat().unavailable_reason()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    assert OpenAIChat().unavailable_reason() is None
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert OpenAIChat().unavailable_reason() is None


def test_unified_pipeline_sends_images_and_audio_natively(server, monkeypatch, tmp_path):
    import mmagent
    from mmagent.toolbox import Toolbox

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    unified = get_backend("unified", "openai", model="gpt-4o", base_url=server.url, max_retries=0)
    assert unified.role == "unified" and unified.accepts == ("text", "image", "audio")
    (tmp_path / "a.png").write_bytes(png_bytes())
    (tmp_path / "q.wav").write_bytes(wav_bytes())
    server.reply(json=completion("A beep and a red rectangle."))
    result = mmagent.run("What is said and what is shown?", images=[tmp_path / "a.png"], audio=[tmp_path / "q.wav"],
                         pipeline="unified", output="text", toolbox=Toolbox({"unified": unified}))
    assert result.answer == "A beep and a red rectangle."
    assert [s["tool"] for s in result.steps if s["tool"] != "embed"] == ["unified"]  # nothing transcribed first
    system, user = server.body["messages"]
    assert system["role"] == "system"
    kinds = [b["type"] for b in user["content"]]
    assert kinds == ["image_url", "input_audio", "text"]
    assert base64.b64decode(user["content"][1]["input_audio"]["data"]) == wav_bytes()
    assert result.plan["planner"] == "unified" and result.plan["audio"] == 1


def test_eval_compares_the_unified_route_over_a_server(server, monkeypatch, tmp_path):
    import json as _json

    from mmagent.eval.runner import run_eval
    from mmagent.toolbox import Toolbox

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    unified = get_backend("unified", "openai", model="gpt-4o", base_url=server.url, max_retries=0)
    (tmp_path / "a.png").write_bytes(png_bytes())
    rows = [{"id": f"i{i}", "image": "a.png", "question": f"What colour is it? ({i})", "answer": "red"} for i in range(4)]
    (tmp_path / "d.jsonl").write_text("\n".join(_json.dumps(r) for r in rows))
    for _ in range(4):
        server.reply(json=completion("It is red."))
    run = run_eval(data=str(tmp_path / "d.jsonl"), pipelines=["unified"], out=tmp_path / "o", batch_size=4,
                   toolbox=Toolbox({"unified": unified}))
    assert run.summary["pipelines"]["unified"]["accuracy"] == 1.0 and len(server.requests) == 4


# -- the pixel budget (option max_pixels) -----------------------------------------------------------


BUDGET = 1024 * 1024


def picture(width: int, height: int, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """Left half red, right half blue (a picture, not noise: it compresses and survives resizing)."""
    from PIL import Image

    image = Image.new("RGB", (width, height), (220, 20, 20))
    image.paste((20, 20, 220), (width // 2, 0, width, height))
    if mode != "RGB":
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def sent_images(body: dict) -> list[tuple[str, bytes]]:
    """(MIME type, bytes) of every image_url part of the request's messages."""
    out = []
    for message in body["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else ():
            if block["type"] == "image_url":
                header, data = block["image_url"]["url"].split(",", 1)
                assert header.startswith("data:") and header.endswith(";base64")
                out.append((header[len("data:"):-len(";base64")], base64.b64decode(data)))
    return out


def opened(data: bytes):
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture
def unified(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return get_backend("unified", "openai", model="gpt-4o", base_url=server.url, max_retries=0)


def test_a_large_png_arrives_within_the_budget_with_its_aspect_ratio_as_png(unified, server):
    assert unified.max_pixels == BUDGET
    image = load_media(picture(3000, 2000))
    assert (image.width, image.height) == (3000, 2000)
    result = unified.chat([Message("user", [TextPart("What is this?"), image])])
    ((mime, data),) = sent_images(server.body)
    sent = opened(data)
    assert mime == "image/png" and sent.format == "PNG"
    width, height = sent.size
    assert width * height <= BUDGET
    assert width * height > 0.99 * BUDGET  # as large as the budget allows, not needlessly smaller
    assert abs(width - height * 3000 / 2000) <= 1 and abs(height - width * 2000 / 3000) <= 1
    assert sent.getpixel((10, height // 2)) == (220, 20, 20)  # the same picture, shrunk
    assert sent.getpixel((width - 10, height // 2)) == (20, 20, 220)
    assert result.usage["downscaled"] == [{"from": [3000, 2000], "to": [width, height]}]
    assert result.usage["total_tokens"] == 14  # the token counts are still there
    assert unified.last_downscaled == result.usage["downscaled"]
    assert server.body["messages"][0]["content"][0] == {"type": "text", "text": "What is this?"}


def test_an_image_whose_size_the_part_does_not_know_is_measured(unified, server):
    import dataclasses

    image = dataclasses.replace(load_media(picture(3000, 2000)), width=0, height=0)
    unified.chat([Message("user", [image])])
    ((mime, data),) = sent_images(server.body)
    assert mime == "image/png" and opened(data).size == (1254, 836)


def test_a_jpeg_stays_jpeg_and_the_detail_hint_survives(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    vlm = get_backend("vlm", "openai", base_url=server.url, max_pixels=250_000)
    image = load_media(picture(2000, 1500, "JPEG"), extras={"detail": "low"})
    result = vlm.chat([Message("user", [image])])
    block = server.body["messages"][0]["content"][0]
    assert block["image_url"]["detail"] == "low"
    ((mime, data),) = sent_images(server.body)
    sent = opened(data)
    assert mime == "image/jpeg" and sent.format == "JPEG" and data[:2] == b"\xff\xd8"
    assert sent.size == (577, 433) and 577 * 433 <= 250_000
    assert result.usage["downscaled"] == [{"from": [2000, 1500], "to": [577, 433]}]


@pytest.mark.parametrize("fmt, mode", [("WEBP", "RGB"), ("GIF", "P"), ("BMP", "RGB")])
def test_other_formats_are_sent_as_png(unified, server, fmt, mode):
    unified.max_pixels = 100_000
    unified.chat([Message("user", [load_media(picture(800, 400, fmt, mode))])])
    ((mime, data),) = sent_images(server.body)
    sent = opened(data)
    assert mime == "image/png" and sent.format == "PNG" and sent.size == (447, 223)
    assert sent.convert("RGB").getpixel((5, 100))[0] > 150  # still red on the left


def test_images_within_the_budget_go_out_byte_identical(unified, server):
    small, exact = png_bytes(), picture(1024, 1024)
    result = unified.chat([Message("user", [load_media(small), load_media(exact)])])
    assert sent_images(server.body) == [("image/png", small), ("image/png", exact)]
    assert "downscaled" not in result.usage and unified.last_downscaled == []


@pytest.mark.parametrize("no_limit", [0, None])
def test_max_pixels_0_sends_the_original(server, monkeypatch, no_limit):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    unified = get_backend("unified", "openai", base_url=server.url, max_pixels=no_limit)
    assert unified.max_pixels is None
    big = picture(3000, 2000)
    result = unified.chat([Message("user", [load_media(big)])])
    assert sent_images(server.body) == [("image/png", big)]
    assert "downscaled" not in result.usage


def test_streaming_and_structured_output_are_scaled_down_too(unified, server):
    image = load_media(picture(3000, 2000, "JPEG"))
    server.reply(sse=[chunk("A red "), chunk("and blue picture.")])
    assert "".join(unified.stream([Message("user", [TextPart("Describe."), image])])) == "A red and blue picture."
    ((mime, data),) = sent_images(server.body)
    assert mime == "image/jpeg" and opened(data).size == (1254, 836)
    assert unified.last_downscaled == [{"from": [3000, 2000], "to": [1254, 836]}]
    server.reply(json=completion('{"shop": "Corner Cafe", "total": 9.75}'))
    result = unified.chat([Message("user", [image])], schema=RECEIPT_SCHEMA)
    assert server.body["response_format"]["json_schema"]["name"] == "Receipt"
    ((mime, data),) = sent_images(server.body)
    assert mime == "image/jpeg" and opened(data).size == (1254, 836)
    assert result.usage["downscaled"] == [{"from": [3000, 2000], "to": [1254, 836]}]


def test_the_unified_pipeline_sends_a_large_photo_scaled_down(server, monkeypatch, tmp_path):
    import mmagent
    from mmagent.toolbox import Toolbox

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    unified = get_backend("unified", "openai", model="gpt-4o", base_url=server.url, max_retries=0)
    (tmp_path / "big.png").write_bytes(picture(3000, 2000))
    server.reply(json=completion("Red and blue."))
    result = mmagent.run("What is shown?", images=[tmp_path / "big.png"], pipeline="unified", output="text",
                         toolbox=Toolbox({"unified": unified}))
    assert result.answer == "Red and blue."
    ((mime, data),) = sent_images(server.body)
    assert mime == "image/png" and opened(data).size == (1254, 836)


@pytest.mark.parametrize("size, budget, expected", [
    ((3000, 2000), BUDGET, (1254, 836)),
    ((2000, 3000), BUDGET, (836, 1254)),
    ((4000, 4000), BUDGET, (1024, 1024)),
    ((100_000, 1), 1000, (1000, 1)),  # a side that would round to nothing keeps one pixel
    ((7, 5), 34, (6, 4)),  # both sides rounded down
])
def test_scaled_size_fits_the_budget(size, budget, expected):
    width, height = openai_client.scaled_size(*size, budget)
    assert (width, height) == expected and width * height <= budget


@pytest.mark.parametrize("value", [-1, 1.5, "1024x1024", True, [1024]])
def test_bad_max_pixels_is_a_config_error(value):
    with pytest.raises(ConfigError, match="option max_pixels must be a positive integer"):
        get_backend("unified", "openai", max_pixels=value)


# -- what the configured model takes (option accepts) -----------------------------------------------


def test_takes_follows_the_accepts_option(server):
    default = get_backend("unified", "openai", base_url=server.url)
    assert default.accepts_here is None
    assert [default.takes(k) for k in ("text", "image", "audio", "video")] == [True, True, True, False]
    llava = get_backend("unified", "openai", base_url=server.url, accepts=["image", "text"])
    assert llava.accepts_here == ("text", "image")
    assert [llava.takes(k) for k in ("text", "image", "audio", "video")] == [True, True, False, False]
    assert llava.accepts == ("text", "image", "audio")  # the class is left alone
    assert llava.describe()["accepts"] == ["text", "image"]
    text_only = get_backend("vlm", "openai", base_url=server.url, accepts=["text"])
    assert text_only.takes("text") and not text_only.takes("image")


def test_accepts_from_the_roles_table(server, tmp_path, monkeypatch):
    config = tmp_path / "mmagent.toml"
    config.write_text(f'[roles.unified]\nbackend = "openai"\nmodel = "llava"\n'
                      f'options = {{ base_url = "{server.url}", accepts = ["text", "image"] }}\n')
    monkeypatch.setenv("MMAGENT_CONFIG", str(config))
    unified = get_backend("unified")
    assert type(unified).__name__ == "OpenAIUnified"
    assert unified.takes("image") and not unified.takes("audio")


@pytest.mark.parametrize("value, match", [
    (["image"], 'must include "text"'),
    (["text", "video"], "'video', which this backend cannot take"),
    (["text", "smell"], "'smell', which this backend cannot take"),
    ("text", "must be a list of kinds"),
    ([1], "must be a list of kinds"),
])
def test_bad_accepts_is_a_config_error(value, match):
    with pytest.raises(ConfigError, match=rf"unified/openai: option accepts.*{match}"):
        get_backend("unified", "openai", accepts=value)


# -- locality ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("base_url, local", [
    ("http://127.0.0.1:11434/v1", True),
    ("http://127.8.9.10/v1", True),
    ("http://localhost:8000/v1", True),
    ("http://LOCALHOST.:8000/v1", True),
    ("localhost:11434/v1", True),  # no scheme
    ("http://[::1]:8000/v1", True),
    ("http://10.1.2.3:8000/v1", True),
    ("http://172.16.0.5/v1", True),
    ("http://192.168.1.20:11434/v1", True),
    ("http://169.254.10.1/v1", True),
    ("http://[fe80::1]/v1", True),
    ("http://[fd12:3456::1]/v1", True),
    ("http://gpu-box.local:8000/v1", True),
    ("https://api.openai.com/v1", False),
    ("https://8.8.8.8/v1", False),
    ("http://172.32.0.1/v1", False),  # just outside 172.16/12
    ("http://[2001:4860::8888]/v1", False),
    ("https://my-vllm.example.com/v1", False),
    ("http://127.0.0.1.nip.io/v1", False),  # a name, not an address: no DNS lookup, so remote
])
def test_is_local_follows_the_base_url(base_url, local):
    assert get_backend("unified", "openai", base_url=base_url).is_local() is local


def test_is_local_without_a_base_url_or_from_the_environment(monkeypatch):
    assert get_backend("llm", "openai").is_local() is False  # api.openai.com
    monkeypatch.setenv("OPENAI_BASE_URL", "http://192.168.0.7:11434/v1")
    assert get_backend("llm", "openai").is_local() is True
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
    assert get_backend("llm", "openai").is_local() is False


def test_auto_routes_to_a_configured_unified_model_and_sends_it_a_downscaled_image(server, monkeypatch, tmp_path):
    """The unified route is a route like the others when configured: the router may choose it (here
    by its prior: no eval measured it), it is local when its server is, and the image it sends is
    within the pixel budget."""
    import io as _io

    import mmagent
    from PIL import Image

    from mmagent.testing import ScriptedLLM
    from mmagent.toolbox import Toolbox

    monkeypatch.setenv("MMAGENT_ROUTER_ROUTES", "tools,unified")
    monkeypatch.setenv("MMAGENT_ROUTER_UNMEASURED", "0.9")
    monkeypatch.setenv("MMAGENT_ROUTER_COMPETENCE", str(tmp_path / "router.json"))
    from mmagent.routing import Competence

    # an eval measured the tool chain at 20 % on these requests and never ran the unified model
    tools = {"n": 10, "correct": 2, "accuracy": 0.2, "measured": 0.2, "latency_s": 2.0, "types": {}}
    Competence(routes={"tools": tools}, classes=["other"], coef=None, intercept=None, mean=np.zeros(398),
               scale=np.ones(398), embedder={"dim": 384}).save(tmp_path / "router.json")
    unified = get_backend("unified", "openai", model="llava", base_url=server.url, max_retries=0, max_pixels=250_000,
                          accepts=["text", "image"])
    big = _io.BytesIO()
    Image.new("RGB", (1600, 1200), (200, 30, 30)).save(big, "PNG")
    (tmp_path / "big.png").write_bytes(big.getvalue())
    server.reply(json=completion("A red picture."))
    result = mmagent.run("What is in the picture?", images=[tmp_path / "big.png"], output="text",
                         toolbox=Toolbox({"unified": unified, "llm": ScriptedLLM("from the llm")}, exclusive=True))
    assert result.pipeline == "auto" and result.route["route"] == "unified" and result.answer == "A red picture."
    assert result.route["scores"]["unified"] == {"accuracy": 0.9, "latency_s": None, "measured": False, "local": True}
    sent = server.body["messages"][-1]["content"][0]["image_url"]["url"]
    width, height = Image.open(_io.BytesIO(base64.b64decode(sent.split(",", 1)[1]))).size
    assert width * height <= 250_000 and abs(width / height - 4 / 3) < 0.01
