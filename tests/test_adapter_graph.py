"""The adapter pipeline with a scripted VLM: images reach the model as parts, same JSON shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmagent.errors import BackendError
from mmagent.runner import run
from mmagent.testing import ScriptedASR, ScriptedTTS, ScriptedVLM, scripted_toolbox, silent_wav


@pytest.fixture
def images(tmp_path) -> list[Path]:
    from PIL import Image

    paths = []
    for i, colour in enumerate(("red", "blue")):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (32, 32), colour).save(paths[-1])
    return paths


def test_images_and_question_reach_the_vlm_as_parts(images):
    vlm = ScriptedVLM("red")
    result = run("What colour is the first image?", images=images, pipeline="adapter",
                 toolbox=scripted_toolbox(vlm=vlm))
    assert result.answer == "red" and result.pipeline == "adapter"
    assert [s["tool"] for s in result.steps] == ["vlm"]
    content = vlm.calls[0]["messages"][-1].content
    assert [p.type for p in content] == ["image", "image", "text"]
    assert content[0].read_bytes() == images[0].read_bytes()
    assert content[-1].text == "What colour is the first image?"
    assert result.plan == {"planner": "adapter", "intent": result.plan["intent"], "images": 2, "output": "text"}


def test_spoken_question_is_transcribed_first_and_answer_spoken(images, tmp_path):
    speech = tmp_path / "q.wav"
    speech.write_bytes(silent_wav(0.3))
    vlm = ScriptedVLM("blue")
    box = scripted_toolbox(asr=ScriptedASR("What colour is it?"), vlm=vlm, tts=ScriptedTTS())
    result = run(images=images[1:], audio=[speech], pipeline="adapter", output="speech", toolbox=box)
    assert [s["tool"] for s in result.steps] == ["asr", "vlm", "tts"]
    assert vlm.calls[0]["messages"][-1].content[-1].text == "What colour is it?"
    assert result.outputs[0].type == "audio"
    assert set(result.to_json()) >= {"answer", "pipeline", "steps", "artifacts", "plan", "outputs"}


def test_no_vlm_is_an_error(images):
    with pytest.raises(BackendError, match="no vlm backend"):
        run("what?", images=images, pipeline="adapter", toolbox=scripted_toolbox())


def test_a_step_record_names_no_intent_as_none():
    import numpy as np

    from mmagent.graphs.kit import Nodes
    from mmagent.testing import ScriptedEmbedder

    class Fixed(ScriptedEmbedder):
        def embed(self, texts):
            rows = np.zeros((len(texts), 4), dtype=np.float32)
            rows[:, 0] = 1.0
            if texts == ["what?"]:
                rows[0] = [0.0, 1.0, 0.0, 0.0]  # the question is like no example phrasing
            return rows

    _, [step] = Nodes(scripted_toolbox(embed=Fixed())).intent("what?")
    assert step["tool"] == "embed" and step["output"] == "intent: none"


def test_intent_examples_are_embedded_once_per_embedder():
    from mmagent.graphs.intent import INTENTS
    from mmagent.graphs.kit import Nodes
    from mmagent.testing import ScriptedEmbedder

    class Counting(ScriptedEmbedder):
        sentences = 0

        def embed(self, texts):
            self.sentences += len(texts)
            return super().embed(texts)

    embedder = Counting()
    nodes = Nodes(scripted_toolbox(embed=embedder))
    first, _ = nodes.intent("what does the text say")
    again, _ = nodes.intent("what does the text say")
    examples = sum(len(v) for v in INTENTS.values())
    assert embedder.sentences == examples + 1  # the examples once, the question once (then remembered)
    nodes.intent("what does the sign say")
    assert embedder.sentences == examples + 2  # a new question is embedded
    assert first == again and first.top == "read"
