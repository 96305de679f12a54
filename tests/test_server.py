"""`mmagent serve`: a live uvicorn server on loopback, driven by real clients (the official openai
SDK, LangChain's ChatOpenAI, mmagent's own OpenAI backend, raw HTTP) with zero-cost backends; the
hostile inputs each answered 4xx in OpenAI's error shape, the server still up afterwards."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402

from mmagent.backends import ChatModel  # noqa: E402
from mmagent.errors import BackendError  # noqa: E402
from mmagent.server import create_app  # noqa: E402
from mmagent.testing import (ScriptedASR, ScriptedCaptioner, ScriptedEmbedder, ScriptedLLM, ScriptedOCR,  # noqa: E402
                             ScriptedVLM, scene_png, scripted_toolbox, silent_wav)

LLM_REPLY, VLM_REPLY, ASR_TEXT = "the answer is four", "a red disc on grey", "hello from the wav"


def toolbox(**more):
    backends = dict(llm=ScriptedLLM(LLM_REPLY, model="tiny-llm"), vlm=ScriptedVLM(VLM_REPLY, model="tiny-vlm"),
                    ocr=ScriptedOCR(["TOTAL 9.75"]), asr=ScriptedASR(ASR_TEXT, model="tiny-asr"),
                    caption=ScriptedCaptioner("shapes"), embed=ScriptedEmbedder())
    backends.update(more)
    return scripted_toolbox(**backends)


@contextmanager
def running(app):
    """The app served by uvicorn in a thread on 127.0.0.1 (a free port); yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def url():
    with running(create_app(toolbox=toolbox())) as base:
        yield base


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


def png_data_url(i: int = 1) -> str:
    return "data:image/png;base64," + base64.b64encode(scene_png(i)).decode()


def image_message(question: str, url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": question},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def assert_up(base: str) -> None:
    assert httpx.get(f"{base}/health", timeout=10).json()["status"] == "ok"


# -- models -------------------------------------------------------------------------------------------------


def test_models_lists_every_registered_graph_auto_first(client):
    from mmagent.graphs_registry import get_graphs

    models = client.models.list().data
    ids = [m.id for m in models]
    pipelines = [g.name for g in get_graphs()]
    assert ids[0] == "auto" and set(ids[:len(pipelines)]) == set(pipelines) and {"tools", "adapter"} <= set(ids)
    # then each backend model by name (with its role), then OpenAI's names for the endpoints' roles
    kinds = {m.id: m.model_extra["mmagent"] for m in models}
    assert kinds["tiny-llm"] == {"kind": "backend", "role": "llm", "backend": "scripted"}
    assert kinds["tiny-vlm"]["role"] == "vlm" and kinds["tiny-asr"]["role"] == "asr"
    assert kinds["whisper-1"] == {"kind": "alias", "role": "asr"} and "tts-1" not in kinds  # no tts backend here
    assert kinds["adapter"]["kind"] == "pipeline" and kinds["adapter"]["description"]
    assert all(m.object == "model" and m.owned_by == "mmagent" and m.created > 1_600_000_000 for m in models)
    assert client.models.retrieve("tools").id == "tools" and client.models.retrieve("tiny-llm").id == "tiny-llm"


# -- chat ----------------------------------------------------------------------------------------------------


def test_chat_with_an_image_through_a_named_pipeline(client):
    response = client.chat.completions.create(model="adapter", messages=image_message("What colour is the disc?",
                                                                                        png_data_url()))
    completion = ChatCompletion.model_validate(response.model_dump())  # the SDK does not validate: we do
    assert completion.object == "chat.completion" and completion.model == "adapter"
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == VLM_REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 0
    trace = response.model_extra["mmagent"]
    assert trace["pipeline"] == "adapter" and "answer" not in trace
    assert any(s.get("tool") == "vlm" for s in trace["steps"])


def test_text_chat_through_tools_keeps_the_system_prompt(url):
    llm = ScriptedLLM(LLM_REPLY)
    with running(create_app(toolbox=toolbox(llm=llm))) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        response = client.chat.completions.create(model="tools", messages=[
            {"role": "system", "content": "Answer in one line."},
            {"role": "user", "content": "How much is two plus two?"}])
    assert response.choices[0].message.content == LLM_REPLY
    sent = llm.calls[-1]["messages"]
    assert any(m.role == "system" and "Answer in one line." in m.content for m in sent)
    assert any("two plus two" in (m.content if isinstance(m.content, str) else str(m.content)) for m in sent)


def test_auto_routes_and_says_where_in_the_trace(client):
    response = client.chat.completions.create(model="auto", messages=image_message("What colour is the disc?",
                                                                                     png_data_url()))
    trace = response.model_extra["mmagent"]
    assert trace["pipeline"] == "auto"
    route = trace["route"]["route"]
    assert route in ("tools", "adapter", "hybrid")
    assert response.choices[0].message.content == (VLM_REPLY if route in ("adapter", "hybrid") else
                                                   response.choices[0].message.content)
    assert [s["tool"] for s in trace["steps"]].count("router") == 1
    # no model named: auto as well
    raw = httpx.post(f"{client.base_url}chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                     timeout=30)
    assert raw.status_code == 200 and raw.json()["model"] == "auto"


def test_streaming_chunks_add_up_to_the_answer(client):
    stream = client.chat.completions.create(model="tools", stream=True,
                                            messages=[{"role": "user", "content": "How much is two plus two?"}])
    chunks = [ChatCompletionChunk.model_validate(c.model_dump()) for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == LLM_REPLY
    assert len([c for c in chunks if c.choices[0].delta.content]) == len(LLM_REPLY.split())  # word by word
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].model_extra["mmagent"]["pipeline"] == "tools"


def test_streaming_sends_done_and_a_non_streaming_route_still_answers(url):
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30,
                      json={"model": "adapter", "stream": True,
                            "messages": image_message("What colour?", png_data_url(2))}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(line)) for line in lines[:-1]]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == VLM_REPLY


def test_an_error_before_streaming_is_an_ordinary_error_response(url):
    response = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                          json={"model": "tools", "stream": True,
                                "messages": image_message("hi", "data:image/png;base64,!!notbase64!!")})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_data_url"


# -- transcription -------------------------------------------------------------------------------------------


def test_transcription_json_text_and_subtitles(client, url):
    wav = silent_wav(1.5)
    result = client.audio.transcriptions.create(model="whisper-1", file=("q.wav", wav, "audio/wav"))
    assert result.text == ASR_TEXT
    text = client.audio.transcriptions.create(model="whisper-1", file=("q.wav", wav, "audio/wav"),
                                              response_format="text")
    assert text.strip() == ASR_TEXT
    verbose = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("q.wav", wav, "audio/wav")},
                         data={"model": "tiny-asr", "response_format": "verbose_json", "language": "de"}, timeout=30)
    assert verbose.json() == {"task": "transcribe", "language": "de", "duration": 1.5, "text": ASR_TEXT,
                              "segments": []}
    srt = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("q.wav", wav, "audio/wav")},
                     data={"response_format": "srt"}, timeout=30)
    assert srt.text == f"1\n00:00:00,000 --> 00:00:01,500\n{ASR_TEXT}\n\n"
    vtt = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("q.wav", wav, "audio/wav")},
                     data={"response_format": "vtt"}, timeout=30)
    assert vtt.text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n" + ASR_TEXT)
    unknown = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("q.wav", wav, "audio/wav")},
                         data={"model": "tiny-llm"}, timeout=30)
    assert unknown.status_code == 400 and "not a asr model" in unknown.json()["error"]["message"]
    unknown = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("q.wav", wav, "audio/wav")},
                         data={"model": "whisper-large-v9"}, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert "whisper-1" in unknown.json()["error"]["message"] and "tiny-asr" in unknown.json()["error"]["message"]


def test_transcription_refuses_what_is_not_audio(url):
    for data, fmt, code in ((scene_png(1), "json", "unsupported_media"), (b"", "json", "invalid_input"),
                            (silent_wav(0.5), "xml", "invalid_input")):
        response = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("x.wav", data, "audio/wav")},
                              data={"response_format": fmt}, timeout=30)
        assert response.status_code == 400, (fmt, response.text)
        assert response.json()["error"]["code"] == code
    missing = httpx.post(f"{url}/v1/audio/transcriptions", data={"model": "whisper-1"}, timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request_error"
    assert_up(url)


# -- other clients -------------------------------------------------------------------------------------------


def test_langchain_chat_openai_with_a_multimodal_message(url):
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage

    chat = langchain_openai.ChatOpenAI(model="adapter", base_url=f"{url}/v1", api_key="unused", max_retries=0)
    message = HumanMessage(content=[{"type": "text", "text": "What colour is the disc?"},
                                    {"type": "image", "base64": base64.b64encode(scene_png(3)).decode(),
                                     "mime_type": "image/png"}])
    reply = chat.invoke([message])
    assert reply.content == VLM_REPLY
    assert reply.response_metadata["model_name"] == "adapter"
    streamed = "".join(chunk.content for chunk in chat.stream([message]))
    assert streamed == VLM_REPLY


def test_mmagent_openai_backend_talks_to_mmagent(url, monkeypatch):
    pytest.importorskip("mmagent.plugins.openai_client")
    from mmagent.backends.registry import get_backend
    from mmagent.backends.results import Message
    from mmagent.content import TextPart, load_media

    monkeypatch.setenv("MMAGENT_TEST_SERVER_KEY", "sk-local")
    llm = get_backend("llm", "openai", model="tools", base_url=f"{url}/v1", api_key_env="MMAGENT_TEST_SERVER_KEY",
                      max_retries=0, timeout=30)
    assert llm.chat([Message("user", "How much is two plus two?")]).text == LLM_REPLY
    assert "".join(llm.stream([Message("user", "How much is two plus two?")])) == LLM_REPLY
    vlm = get_backend("vlm", "openai", model="adapter", base_url=f"{url}/v1", api_key_env="MMAGENT_TEST_SERVER_KEY",
                      max_retries=0, timeout=30)
    image = load_media(scene_png(4), expect="image")
    assert vlm.chat([Message("user", [TextPart("What colour?"), image])]).text == VLM_REPLY


# -- hostile inputs over HTTP --------------------------------------------------------------------------------

BROKEN_PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0garbage" * 40).decode()

HOSTILE = {
    "file URL": (image_message("hi", "file:///etc/passwd"), 400, "forbidden_source"),
    "local path": (image_message("hi", "/etc/passwd"), 400, "forbidden_source"),
    "relative path": (image_message("hi", "scene.png"), 400, "forbidden_source"),
    "media reference": (image_message("hi", "mmagent-media:sha256:" + "0" * 64), 400, "forbidden_source"),
    "http while fetching is off": (image_message("hi", "http://127.0.0.1:9/x.png"), 400, "forbidden_source"),
    "bad data URL": (image_message("hi", "data:image/png;base64,@@@"), 400, "invalid_data_url"),
    "undecodable image": (image_message("hi", BROKEN_PNG), 400, None),
    "text claimed as image": (image_message("hi", "data:image/png;base64," + base64.b64encode(b"hello").decode()),
                              400, None),
    "unknown part": ([{"role": "user", "content": [{"type": "file", "file": {}}]}], 400, "content_format"),
    "last message not the user's": ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}], 400,
                                    "invalid_input"),
    "tool role": ([{"role": "tool", "content": "x", "tool_call_id": "1"}], 400, "invalid_input"),
    "no messages": ([], 400, "invalid_input"),
    "messages not a list": ("hello", 400, "invalid_input"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_chat_inputs_are_4xx_in_openai_shape(url, case):
    messages, status, code = HOSTILE[case]
    response = httpx.post(f"{url}/v1/chat/completions", json={"model": "tools", "messages": messages}, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"] and "Traceback" not in error["message"]
    if code:
        assert error["code"] == code
    else:
        assert error["code"] in ("corrupt_media", "unsupported_media", "invalid_data_url")
    assert "\n" not in error["message"]
    assert_up(url)


def test_requests_that_are_not_chat_json_are_4xx(url):
    cases = [
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, "invalid_input"),
        (dict(json={"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]}), 404, "model_not_found"),
        (dict(json={"model": 7, "messages": [{"role": "user", "content": "hi"}]}), 400, "invalid_input"),
        (dict(json={"model": "tools", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}), 400,
         "invalid_input"),
        (dict(json={"model": "tools", "tools": [{"type": "function", "function": {"name": "f"}}],
                    "messages": [{"role": "user", "content": "hi"}]}), 400, "invalid_input"),  # no tool caller
        (dict(json={"model": "tools", "tools": [{"type": "function"}],
                    "messages": [{"role": "user", "content": "hi"}]}), 400, "invalid_input"),
        (dict(json={"model": "tiny-llm", "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}},
            "messages": [{"role": "user", "content": "hi"}]}), 400, "invalid_input"),
        (dict(json={"model": "tiny-asr", "messages": [{"role": "user", "content": "hi"}]}), 400, "invalid_input"),
        (dict(json={"model": "tools", "temperature": 9, "messages": [{"role": "user", "content": "hi"}]}), 400,
         "invalid_input"),
    ]
    for kwargs, status, code in cases:
        response = httpx.post(f"{url}/v1/chat/completions", timeout=30, **kwargs)
        assert response.status_code == status, (kwargs, response.text)
        assert response.json()["error"]["code"] == code
    assert httpx.get(f"{url}/v1/nothing-here", timeout=10).json()["error"]["code"] == "not_found"
    assert httpx.get(f"{url}/v1/chat/completions", timeout=10).status_code == 405


def test_the_sdk_sees_an_unknown_model_as_not_found(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "model_not_found"


def test_a_prompt_over_the_cap_is_400(monkeypatch):
    monkeypatch.setenv("MMAGENT_LIMITS_MAX_PROMPT_CHARS", "50")
    with running(create_app(toolbox=toolbox())) as base:
        response = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                              json={"model": "tools", "messages": [{"role": "user", "content": "x" * 51}]})
        assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
        ok = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                        json={"model": "tools", "messages": [{"role": "user", "content": "x" * 50}]})
        assert ok.status_code == 200


def test_a_body_over_the_cap_is_413():
    with running(create_app(toolbox=toolbox(), max_body_bytes=100_000)) as base:
        big = {"model": "tools", "messages": [{"role": "user", "content": "x" * 150_000}]}
        response = httpx.post(f"{base}/v1/chat/completions", json=big, timeout=30)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        assert "100,000" in response.json()["error"]["message"]

        def chunked():  # no Content-Length: counted as it arrives
            for _ in range(15):
                yield b"x" * 10_000

        response = httpx.post(f"{base}/v1/chat/completions", content=chunked(), timeout=30,
                              headers={"content-type": "application/json"})
        assert response.status_code == 413
        upload = httpx.post(f"{base}/v1/audio/transcriptions", files={"file": ("a.wav", silent_wav(5.0))},
                            timeout=30)
        assert upload.status_code == 413
        assert_up(base)
        small = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                           json={"model": "tools", "messages": [{"role": "user", "content": "hi"}]})
        assert small.status_code == 200


def test_the_api_key_is_required_when_set():
    with running(create_app(toolbox=toolbox(), api_key="sekret")) as base:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekret"}):
            response = httpx.get(f"{base}/v1/models", headers=headers, timeout=10)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"] == "Bearer"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{base}/v1", api_key="sekret", max_retries=0)
        assert good.chat.completions.create(model="tools", messages=[{"role": "user", "content": "hi"}]) \
            .choices[0].message.content == LLM_REPLY
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200  # for load balancers


class GatedLLM(ScriptedLLM):
    """Holds every call until `gate` opens; `entered` says a call is in."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.entered, self.gate = threading.Event(), threading.Event()

    def chat(self, messages, **kw):
        self.entered.set()
        assert self.gate.wait(30)
        return super().chat(messages, **kw)


def test_concurrency_over_the_limit_is_429_with_retry_after():
    llm = GatedLLM(LLM_REPLY)
    with running(create_app(toolbox=toolbox(llm=llm), max_concurrency=1)) as base:
        body = {"model": "tools", "messages": [{"role": "user", "content": "How much is two plus two?"}]}
        results = {}
        first = threading.Thread(target=lambda: results.setdefault(
            "first", httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)))
        first.start()
        try:
            assert llm.entered.wait(30)
            busy = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
            assert busy.status_code == 429
            assert busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "rate_limit_exceeded"
            with pytest.raises(openai.RateLimitError):
                openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0).chat.completions.create(**body)
            assert_up(base)  # health is never limited
        finally:
            llm.gate.set()
            first.join(60)
        assert results["first"].status_code == 200
        assert results["first"].json()["choices"][0]["message"]["content"] == LLM_REPLY
        again = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)  # the slot came back
        assert again.status_code == 200


class FailingLLM(ScriptedLLM):
    def __init__(self, exc: BaseException):
        super().__init__()
        self.exc = exc

    def chat(self, messages, **kw):
        raise self.exc


@pytest.mark.parametrize("exc, status, code, shown", [
    (BackendError("the model server went away"), 502, "backend_error", "the model server went away"),
    (RuntimeError("secret internal detail /home/x"), 500, "internal_error", None),
])
def test_backend_failures_are_5xx_without_a_traceback(exc, status, code, shown):
    with running(create_app(toolbox=toolbox(llm=FailingLLM(exc)))) as base:
        for stream in (False, True):
            response = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                                  json={"model": "tools", "stream": stream,
                                        "messages": [{"role": "user", "content": "How much is two plus two?"}]})
            if stream and response.status_code == 200:  # failed after the stream began: an error event
                events = [json.loads(line[6:]) for line in response.text.splitlines()
                          if line.startswith("data: ") and line != "data: [DONE]"]
                error = events[-1]["error"]
            else:
                assert response.status_code == status
                error = response.json()["error"]
            assert error["code"] == code
            assert "Traceback" not in json.dumps(error) and "secret internal detail" not in json.dumps(error)
            if shown:
                assert shown in error["message"]
        assert_up(base)


# -- the command -------------------------------------------------------------------------------------------


def test_mmagent_serve_starts_and_requires_its_key(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mm = str(Path(sys.executable).with_name("mmagent"))
    proc = subprocess.Popen([mm, "serve", "--port", str(port), "--api-key", "k1", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert httpx.get(f"{base}/v1/models", timeout=10).status_code == 401
        ids = [m["id"] for m in httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer k1"},
                                          timeout=10).json()["data"]]
        assert ids[0] == "auto" and "tools" in ids
    finally:
        proc.terminate()
        proc.wait(20)


# -- backend models, tools, structured output ------------------------------------------------------------------


def test_a_backend_model_answers_directly_and_streams(client):
    """A backend model's id calls that backend without a graph (no pipeline trace), streaming too."""
    reply = client.chat.completions.create(model="tiny-llm", messages=[{"role": "user", "content": "Hi there"}])
    assert reply.choices[0].message.content == LLM_REPLY and reply.model == "tiny-llm"
    assert reply.model_extra["mmagent"] == {"backend": "llm/scripted", "model": "tiny-llm"}
    chunks = list(client.chat.completions.create(model="tiny-llm", stream=True,
                                                 messages=[{"role": "user", "content": "Hi there"}]))
    words = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(words) == LLM_REPLY and len(words) == len(LLM_REPLY.split())
    vlm = client.chat.completions.create(model="tiny-vlm", messages=image_message("Colour?", png_data_url(2)))
    assert vlm.choices[0].message.content == VLM_REPLY
    with pytest.raises(openai.BadRequestError, match="does not read images"):
        client.chat.completions.create(model="tiny-llm", messages=image_message("Colour?", png_data_url(2)))


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


def test_tool_calls_round_trip_with_the_openai_sdk():
    from mmagent.backends import ChatResult
    from mmagent.testing import tool_call

    llm = ScriptedLLM(replies=[tool_call("get_weather", city="Paris"), ChatResult("Sunny in Paris."),
                               tool_call("get_weather", city="Oslo")], supports_tools=True, model="tiny-llm")
    with running(create_app(toolbox=toolbox(llm=llm))) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        question = [{"role": "user", "content": "Weather in Paris?"}]
        first = client.chat.completions.create(model="tools", messages=question, tools=[WEATHER])
        ChatCompletion.model_validate(first.model_dump())
        call = first.choices[0].message.tool_calls[0]
        assert first.choices[0].finish_reason == "tool_calls" and first.choices[0].message.content is None
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
        assert [t.name for t in llm.calls[0]["tools"]] == ["get_weather"]
        assert llm.calls[0]["tools"][0].parameters["required"] == ["city"]
        # the tool's result goes back; the model answers
        second = client.chat.completions.create(model="tools", tools=[WEATHER], messages=[
            *question, first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}])
        assert second.choices[0].message.content == "Sunny in Paris."
        sent = llm.calls[1]["messages"]
        assert [m.role for m in sent] == ["user", "assistant", "tool"]
        assert sent[1].tool_calls[0].arguments == {"city": "Paris"} and sent[2].tool_call_id == call.id
        # streamed: the SDK's chunks carry the call
        chunks = list(client.chat.completions.create(model="tiny-llm", messages=question, tools=[WEATHER],
                                                     stream=True))
        calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
        assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments) == {"city": "Oslo"}
        assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_response_format_json_schema_through_extraction():
    from mmagent.backends import ChatResult

    schema = {"type": "object", "properties": {"total": {"type": "number", "description": "the amount paid"},
                                               "shop": {"type": "string"}}, "required": ["total"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "receipt", "schema": schema}}
    llm = ScriptedLLM(replies=[ChatResult("The total is 9.75."), ChatResult('{"total": "nine"}'),
                               ChatResult('Here: {"total": 9.75, "shop": "Cafe"}')], model="tiny-llm")
    with running(create_app(toolbox=toolbox(llm=llm))) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="tools", response_format=fmt,
                                               messages=image_message("What is the total?", png_data_url(3)))
        assert json.loads(reply.choices[0].message.content) == {"total": 9.75, "shop": "Cafe"}
        # the pipeline answered first (it read the receipt), then the schema was filled from that answer
        extraction = llm.calls[1]["messages"]
        assert "the amount paid" in extraction[0].content and "The total is 9.75." in extraction[1].content
        assert "'nine' is not of type 'number'" in llm.calls[2]["messages"][-1].content  # the repair
        llm.reply = '{"greeting": "hi"}'
        json_object = client.chat.completions.create(model="tiny-llm", response_format={"type": "json_object"},
                                                     messages=[{"role": "user", "content": "Say hi as JSON"}])
        assert json.loads(json_object.choices[0].message.content) == {"greeting": "hi"}
        assert "user: Say hi as JSON" in llm.calls[-1]["messages"][1].content  # the conversation, extracted
        llm.reply = "no JSON here"
        failed = httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
            "model": "tiny-llm", "response_format": fmt, "messages": [{"role": "user", "content": "total?"}]})
        assert failed.status_code == 502 and failed.json()["error"]["code"] == "extraction_failed"
        assert_up(base)


# -- speech and images -----------------------------------------------------------------------------------------


def test_speech_in_every_format():
    from mmagent.testing import ScriptedTTS

    with running(create_app(toolbox=toolbox(tts=ScriptedTTS(model="tiny-tts")))) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        wav = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there", response_format="wav")
        assert wav.content[:4] == b"RIFF" and wav.response.headers["content-type"] == "audio/wav"
        pcm = client.audio.speech.create(model="tiny-tts", voice="alloy", input="Hello", response_format="pcm")
        assert len(pcm.content) == len(wav.content) - 44  # the frames without the header
        if shutil.which("ffmpeg"):
            mp3 = client.audio.speech.create(model="tts-1", voice="nova", input="Hello")  # mp3: the SDK's default
            assert mp3.response.headers["content-type"] == "audio/mpeg"
            assert mp3.content[:3] == b"ID3" or mp3.content[0] == 0xFF
            opus = client.audio.speech.create(model="tts-1", voice="nova", input="Hello", response_format="opus")
            assert opus.content[:4] == b"OggS"
        for body, fragment in (({"input": ""}, "non-empty"), ({"input": "x" * 4097}, "4,096"),
                               ({"input": "hi", "response_format": "ogg"}, "response_format"),
                               ({"input": "hi", "speed": 2}, "speed"), ({"input": "hi", "model": "tiny-llm"}, "tts")):
            response = httpx.post(f"{base}/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", **body},
                                  timeout=30)
            assert response.status_code == 400 and fragment in response.json()["error"]["message"], response.text
    with running(create_app(toolbox=toolbox())) as base:  # no tts backend here
        response = httpx.post(f"{base}/v1/audio/speech", json={"model": "tts-1", "input": "hi"}, timeout=30)
        assert response.status_code == 503 and response.json()["error"]["code"] == "backend_unavailable"


def test_images_as_b64_json():
    from PIL import Image

    from mmagent.testing import ScriptedImageGen

    with running(create_app(toolbox=toolbox(image_gen=ScriptedImageGen(model="tiny-diffusion")))) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        result = client.images.generate(model="dall-e-2", prompt="a red disc", n=2, size="64x96",
                                        response_format="b64_json", extra_body={"seed": 40})
        images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in result.data]
        assert [im.size for im in images] == [(64, 96), (64, 96)]
        assert [im.getpixel((0, 0))[0] for im in images] == [40, 41]  # seed, seed + 1
        assert client.images.generate(model="tiny-diffusion", prompt="x", size="64x64").data[0].b64_json
        for body, fragment in (({"response_format": "url"}, "b64_json"), ({"size": "1001x1000"}, "multiple of 8"),
                               ({"n": 9}, "'n'"), ({"prompt": ""}, "prompt")):
            response = httpx.post(f"{base}/v1/images/generations", json={"prompt": "x", **body}, timeout=30)
            assert response.status_code == 400 and fragment in response.json()["error"]["message"], response.text


# -- batching, timeouts, cancellation ---------------------------------------------------------------------------


class BatchingLLM(ScriptedLLM):
    """Echoes each conversation's question; records the size of every `batch` call. A question with
    'boom' in it fails whatever batch it is in."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def chat(self, messages, **kw):
        return ChatResult_(self.batch([messages], **kw)[0])

    def batch(self, requests, *, max_tokens=256, temperature=0.0, stop=None):
        with self.lock:
            self.sizes.append(len(requests))
        time.sleep(0.2)  # a model's forward pass: calls arriving meanwhile form the next batch
        texts = [m[-1].content if isinstance(m[-1].content, str) else "" for m in requests]
        if any("boom" in t for t in texts):
            from mmagent.errors import InputError

            raise InputError("boom is not a question")
        return [f"echo: {t}" for t in texts]


def ChatResult_(text):
    from mmagent.backends import ChatResult

    return ChatResult(text)


def test_concurrent_requests_are_answered_in_batches_each_with_its_own_answer():
    llm = BatchingLLM(model="tiny-llm")
    app = create_app(toolbox=toolbox(llm=llm), max_concurrency=16, max_batch_size=8, batch_wait_s=0.05)
    assert set(app.state.batchers) == {"llm", "embed"}  # the roles whose backends can batch here
    with running(app) as base:
        def ask(i):
            text = f"question {i}" if i != 5 else "boom"
            return httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
                "model": "tiny-llm", "messages": [{"role": "user", "content": text}]})

        threads, answers = [], {}
        for i in range(12):
            threads.append(threading.Thread(target=lambda i=i: answers.__setitem__(i, ask(i))))
            threads[-1].start()
        for t in threads:
            t.join(60)
    assert answers[5].status_code == 400 and "boom" in answers[5].json()["error"]["message"]
    for i in set(range(12)) - {5}:
        assert answers[i].status_code == 200
        assert answers[i].json()["choices"][0]["message"]["content"] == f"echo: question {i}"
    batched = app.state.batchers["llm"].batches
    assert sum(batched) >= 12 and max(batched) > 1, batched  # several calls shared a forward pass
    assert max(llm.sizes) <= 8


def test_no_batching_with_max_batch_size_1():
    app = create_app(toolbox=toolbox(llm=BatchingLLM(model="tiny-llm")), max_batch_size=1)
    assert app.state.batchers == {}


class SlowLLM(ScriptedLLM):
    """Streams 40 words, one every 50 ms, counting what it produced."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.produced = 0

    def chat(self, messages, **kw):
        time.sleep(1.5)
        return ChatResult_("late")

    def stream(self, messages, **kw):
        for i in range(40):
            time.sleep(0.05)
            self.produced += 1
            yield f"w{i} "


def test_a_request_past_the_timeout_is_504_and_its_slot_comes_back():
    with running(create_app(toolbox=toolbox(llm=SlowLLM(model="tiny-llm")), timeout_s=0.5,
                            max_concurrency=1)) as base:
        response = httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
            "model": "tiny-llm", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
        assert "0.5 s" in response.json()["error"]["message"]
        deadline = time.monotonic() + 10
        while httpx.get(f"{base}/health", timeout=10).json()["running"] and time.monotonic() < deadline:
            time.sleep(0.05)  # the model call finishes (a thread cannot be killed), then the slot is free
        assert httpx.get(f"{base}/health", timeout=10).json()["running"] == 0


def test_a_client_that_leaves_a_stream_stops_the_run():
    llm = SlowLLM(model="tiny-llm")
    with running(create_app(toolbox=toolbox(llm=llm))) as base:
        with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=30, json={
                "model": "tiny-llm", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as response:
            lines = response.iter_lines()
            assert any("w1" in line for line in lines)  # streaming has begun; now the client goes away
        time.sleep(1.0)
        stopped_at = llm.produced
        time.sleep(0.5)
        assert llm.produced == stopped_at < 40  # nothing more was generated for nobody
        assert httpx.get(f"{base}/health", timeout=10).json()["running"] == 0
