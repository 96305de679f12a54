"""`mmagent serve` on the real offline models (the zoo): Piper speaks over /v1/audio/speech,
Whisper base hears it back over /v1/audio/transcriptions, concurrent uploads are decoded in one
batch, and the local LLM answers as a backend model — all through the
official openai SDK on loopback."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from mmagent.metrics import word_error_rate  # noqa: E402
from mmagent.server import create_app  # noqa: E402

from tests.test_server import running  # noqa: E402

pytestmark = pytest.mark.slow
SENTENCE = "Please send the quarterly report to the finance team before Friday afternoon."
QUESTION_WAV = Path(__file__).resolve().parents[1] / "examples" / "media" / "question.wav"


@pytest.fixture(autouse=True)
def zoo_home(models_home, monkeypatch):
    """The media store and models the server was built with (each test gets a fresh home otherwise)."""
    monkeypatch.setenv("MMAGENT_HOME", str(models_home))


@pytest.fixture(scope="module")
def server(zoo_model, models_home):
    for name in ("piper-en-us-joe-medium", "whisper-base", "smollm2-135m-instruct"):
        zoo_model(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMAGENT_HOME", str(models_home))
        app = create_app(max_concurrency=8, batch_wait_s=0.1)
        with running(app) as base:
            yield app, openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=300)


def test_the_real_backends_are_listed_by_name_and_alias(server):
    _, client = server
    ids = {m.id for m in client.models.list().data}
    assert {"auto", "tools", "smollm2-135m-instruct", "whisper-base", "whisper-1", "tts-1"} <= ids


def test_speech_then_transcription_round_trip(server):
    _, client = server
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="wav")
    heard = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", speech.content, "audio/wav"))
    assert word_error_rate(SENTENCE, heard.text) <= 0.10, heard.text


def test_concurrent_uploads_are_transcribed_in_one_batch(server):
    app, client = server
    data = QUESTION_WAV.read_bytes()
    texts: dict[int, str] = {}

    def upload(i: int) -> None:
        texts[i] = client.audio.transcriptions.create(model="whisper-1", file=(f"q{i}.wav", data, "audio/wav")).text

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert set(texts.values()) == {"What is the total on the receipt?"}, texts
    assert max(app.state.batchers["asr"].batches) > 1, app.state.batchers["asr"].batches


def test_the_local_llm_answers_as_a_backend_model(server):
    _, client = server
    reply = client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=12, messages=[
        {"role": "user", "content": "What is the capital of France? Answer with one word."}])
    assert "paris" in reply.choices[0].message.content.lower(), reply.choices[0].message.content
    assert reply.model_extra["mmagent"]["backend"] == "llm/transformers"
