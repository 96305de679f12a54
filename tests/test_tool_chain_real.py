"""The tool chain end to end on real offline weights: Whisper base, PP-OCRv4, MiniLM, SmolLM2, Piper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmagent.runner import run

pytestmark = pytest.mark.slow
MEDIA = Path(__file__).resolve().parent.parent / "examples" / "media"


def test_typed_question_about_a_receipt(offline_home):
    result = run("What is the total on the receipt?", images=[MEDIA / "receipt.png"], pipeline="tools")
    assert "9.75" in result.answer
    assert [s["tool"] for s in result.steps] == ["embed", "ocr", "llm"]
    assert result.plan["intent"] == "read" and result.plan["intent_method"] == "embeddings"
    assert "TOTAL 9.75" in result.artifacts[0]["text"]


def test_spoken_question_about_a_receipt_answered_out_loud(offline_home, tmp_path):
    result = run(audio=[MEDIA / "question.wav"], images=[MEDIA / "receipt.png"], output="speech")
    transcript = result.artifacts[0]
    assert transcript["kind"] == "transcript" and "total on the receipt" in transcript["text"].lower()
    assert "9.75" in result.answer
    [speech] = result.outputs
    assert speech.type == "audio" and 1.0 < speech.duration < 15.0
    [path] = result.save_outputs(tmp_path)
    assert Path(path).stat().st_size == speech.ref.size


def test_cli_json_has_answer_pipeline_and_timed_steps(offline_home, tmp_path):
    mm = str(Path(sys.executable).with_name("mmagent"))
    proc = subprocess.run([mm, "run", "--json", "--image", str(MEDIA / "receipt.png"), "What is the total?"],
                          capture_output=True, text=True, timeout=600, env={**os.environ}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "9.75" in data["answer"] and data["pipeline"] == "auto" and data["route"]["route"] == "tools"
    assert [s["tool"] for s in data["steps"] if s["tool"] != "embed"] == ["router", "ocr", "llm"]
    assert all(isinstance(s["seconds"], float) and s["output"] for s in data["steps"])


def test_cli_second_turn_answers_from_the_first_turns_image(offline_home, tmp_path):
    mm = str(Path(sys.executable).with_name("mmagent"))

    def ask(*args):
        proc = subprocess.run([mm, "run", "--json", *args], capture_output=True, text=True, timeout=600,
                              env={**os.environ}, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    first = ask("--thread", "receipt", "-a", str(MEDIA / "receipt.png"), "What is on this receipt?")
    second = ask("-c", "What is the total on the receipt?")
    assert second["thread"] == first["thread"] == "receipt"
    assert "9.75" in second["answer"]
    # no new image: the router routes on turn 1's image, and turn 1's OCR is reused
    assert [s["tool"] for s in second["steps"] if s["tool"] != "embed"] == ["router", "llm"]
    assert second["artifacts"][0]["cached"] is True and "TOTAL 9.75" in second["artifacts"][0]["text"]


def test_stream_gives_tokens_before_the_run_ends(offline_home):
    import time

    import mmagent

    start, first_token, tokens = time.perf_counter(), None, []
    for kind, value in mmagent.stream("What is the total on the receipt?", images=[MEDIA / "receipt.png"]):
        if kind == "token":
            first_token = first_token or time.perf_counter() - start
            tokens.append(value)
        elif kind == "result":
            total = time.perf_counter() - start
            result = value
    assert len(tokens) > 3 and "".join(tokens).strip() == result.answer and "9.75" in result.answer
    assert first_token < total
