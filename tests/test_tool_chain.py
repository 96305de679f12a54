"""The tool-chain graph with scripted backends: routing, artifacts, steps, outputs, both planners."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmagent.backends.results import ChatResult
from mmagent.errors import BackendError, InputError
from mmagent.runner import run
from mmagent.testing import (ScriptedASR, ScriptedCaptioner, ScriptedDetector, ScriptedImageGen, ScriptedLLM,
                             ScriptedOCR, ScriptedTTS, scripted_toolbox, silent_wav, tool_call)


@pytest.fixture
def receipt(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "receipt.png"
    Image.new("RGB", (64, 48), "white").save(path)
    return path


@pytest.fixture
def speech(tmp_path) -> Path:
    path = tmp_path / "q.wav"
    path.write_bytes(silent_wav(0.5))
    return path


def test_image_question_runs_ocr_then_llm_over_the_observation(receipt):
    llm = ScriptedLLM("9.75")
    box = scripted_toolbox(ocr=ScriptedOCR(["CAFE", "TOTAL 9.75"]), llm=llm)
    result = run("What is the total on the receipt?", images=[receipt], toolbox=box, pipeline="tools", planner="rules")
    assert result.answer == "9.75"
    assert [s["tool"] for s in result.steps] == ["ocr", "llm"]
    assert result.steps[0]["output"] == "CAFE\nTOTAL 9.75" and result.steps[0]["input"] == 0
    assert all(s["seconds"] >= 0 for s in result.steps)
    [ocr] = result.artifacts
    assert ocr["kind"] == "ocr" and ocr["label"] == "text read from image 1" and len(ocr["lines"]) == 2
    prompt = llm.calls[0]["messages"][-1].text
    assert "TOTAL 9.75" in prompt and "Question: What is the total on the receipt?" in prompt
    assert result.plan["intent"] == "read" and result.plan["tools"] == ["read_text"]


def test_spoken_question_becomes_the_question(receipt, speech):
    llm = ScriptedLLM("9.75")
    box = scripted_toolbox(asr=ScriptedASR("What is the total on the receipt?"), ocr=ScriptedOCR(), llm=llm)
    result = run(images=[receipt], audio=[speech], toolbox=box, pipeline="tools", planner="rules")
    assert [s["tool"] for s in result.steps] == ["asr", "ocr", "llm"]
    transcript = result.artifacts[0]
    assert {k: transcript[k] for k in ("kind", "tool", "label", "text", "language")} == {
        "kind": "transcript", "tool": "transcribe", "label": "transcript of audio 1",
        "text": "What is the total on the receipt?", "language": "en"}
    assert transcript["file"].startswith("mmagent-media:sha256:") and result.steps[0]["input"] == 1
    assert llm.calls[0]["messages"][-1].text.endswith("Question: What is the total on the receipt?")


def test_transcription_request_returns_the_transcript_without_the_llm(speech):
    llm = ScriptedLLM("should not be called")
    result = run("Transcribe this recording", audio=[speech], toolbox=scripted_toolbox(asr=ScriptedASR("hi there"),
                                                                                         llm=llm))
    assert result.answer == "hi there" and llm.calls == []


def test_describe_uses_captioner_and_detect_adds_boxes(receipt):
    box = scripted_toolbox(caption=ScriptedCaptioner("a dog on grass"), ocr=ScriptedOCR([]),
                           detect=ScriptedDetector(), llm=ScriptedLLM("a dog"))
    result = run("Describe the picture and find the objects in the image", images=[receipt], toolbox=box,
                 planner="rules")
    kinds = [a["kind"] for a in result.artifacts]
    assert "caption" in kinds and "detections" in kinds
    det = next(a for a in result.artifacts if a["kind"] == "detections")
    assert det["detections"][0]["box"] == [1.0, 1.0, 32.0, 24.0]


def test_a_count_question_without_a_detector_is_answered_from_caption_and_ocr(receipt):
    # Found by `mmagent eval`: "How many ...?" focuses on the detector; with none here the plan was
    # empty and the LLM answered blind.
    llm = ScriptedLLM("two")
    box = scripted_toolbox(caption=ScriptedCaptioner("two red squares"), ocr=ScriptedOCR([]), llm=llm)
    result = run("How many shapes are there?", images=[receipt], toolbox=box, planner="rules")
    assert result.plan["tools"] == ["read_text", "caption_image"]
    assert result.plan["skipped"] == {"detect_objects": "no detect backend in this toolbox"}
    assert "two red squares" in llm.calls[0]["messages"][-1].text


def test_speech_output_is_synthesized_and_saved(tmp_path, receipt):
    box = scripted_toolbox(ocr=ScriptedOCR(), llm=ScriptedLLM("Nine seventy-five."), tts=ScriptedTTS())
    result = run("Read the total and say the answer out loud", images=[receipt], toolbox=box, planner="rules")
    assert result.plan["output"] == "speech"
    [audio] = result.outputs
    assert audio.type == "audio" and audio.duration == pytest.approx(0.2)
    assert result.steps[-1]["tool"] == "tts" and result.steps[-1]["output"]["type"] == "audio"
    [path] = result.save_outputs(tmp_path / "out")
    assert Path(path).read_bytes() == audio.read_bytes() and path.endswith(".wav")
    assert json.loads(json.dumps(result.to_json([path])))["outputs"][0]["path"] == path


def test_image_generation_request(tmp_path):
    llm = ScriptedLLM()
    box = scripted_toolbox(llm=llm, image_gen=ScriptedImageGen())
    result = run("Generate an image of a red bicycle", toolbox=box, planner="rules")
    assert result.plan["output"] == "image" and result.outputs[0].type == "image"
    assert llm.calls == []  # nothing to answer: the image is the answer


def test_explicit_output_overrides_intent(receipt):
    box = scripted_toolbox(ocr=ScriptedOCR(), llm=ScriptedLLM("x"), tts=ScriptedTTS())
    assert run("What is the total?", images=[receipt], toolbox=box, output="speech").plan["output"] == "speech"
    assert run("Say it out loud", images=[receipt], toolbox=box, output="text").outputs == []


def test_failing_optional_tool_is_recorded_and_the_answer_still_comes(receipt):
    class BrokenOCR(ScriptedOCR):
        def read(self, image):
            raise BackendError("ocr/broken could not load model 'x'")

    box = scripted_toolbox(ocr=BrokenOCR(), caption=ScriptedCaptioner("a receipt"), llm=ScriptedLLM("unknown"))
    result = run("What is in this image?", images=[receipt], toolbox=box)
    assert result.plan["skipped"] == {}
    failed = [s for s in result.steps if s.get("error")]
    assert failed and failed[0]["tool"] == "ocr" and "could not load" in failed[0]["error"]
    assert result.answer == "unknown"


def test_missing_llm_is_an_error_not_a_silent_empty_answer(receipt):
    with pytest.raises(BackendError):
        run("What is the total?", images=[receipt], toolbox=scripted_toolbox(ocr=ScriptedOCR()))


def test_empty_request_and_bad_options_are_input_errors(receipt):
    box = scripted_toolbox(llm=ScriptedLLM())
    with pytest.raises(InputError, match="nothing to do"):
        run("  ", toolbox=box)
    with pytest.raises(InputError, match="unknown pipeline"):
        run("hi", pipeline="nope", toolbox=box)
    with pytest.raises(InputError, match="unknown output"):
        run("hi", output="smell", toolbox=box)
    with pytest.raises(InputError, match="expected an image"):
        run("hi", images=[silent_wav()], toolbox=box)


def test_llm_planner_calls_tools_and_answers(receipt, speech):
    llm = ScriptedLLM(replies=[tool_call("read_text", file="image 1"), tool_call("speak", text="x"),
                               ChatResult("The total is 9.75.")], supports_tools=True)
    box = scripted_toolbox(ocr=ScriptedOCR(["TOTAL 9.75"]), llm=llm, tts=ScriptedTTS())
    result = run("What is the total?", images=[receipt], toolbox=box, pipeline="tools")  # auto -> llm planner
    assert result.plan["planner"] == "llm" and result.plan["output"] == "speech"
    assert result.answer == "The total is 9.75."
    assert [s["tool"] for s in result.steps] == ["llm", "ocr", "llm", "tts", "llm"]  # speak ran as a tool
    assert [p.type for p in result.outputs] == ["audio"]
    offered = {t.name for t in llm.calls[0]["tools"]}
    assert offered == {"read_text", "speak"}  # only tools whose backends exist
    tool_msg = llm.calls[1]["messages"][-1]
    assert tool_msg.role == "tool" and tool_msg.tool_call_id == "call_read_text" and tool_msg.content == "TOTAL 9.75"


def test_llm_planner_reports_bad_tool_arguments_back_to_the_model(receipt):
    llm = ScriptedLLM(replies=[tool_call("read_text", file="image 7"), tool_call("nope"), tool_call("read_text"),
                               ChatResult("sorry")], supports_tools=True)
    result = run("total?", images=[receipt], toolbox=scripted_toolbox(ocr=ScriptedOCR(), llm=llm))
    assert llm.calls[1]["messages"][-1].content == "error: there is no image 7 in this conversation (files: image 1)"
    assert llm.calls[2]["messages"][-1].content.startswith("error: no tool named 'nope'")
    assert llm.calls[3]["messages"][-1].content == "error: read_text: missing argument(s) file"
    assert result.answer == "sorry"


def test_llm_planner_stops_offering_tools_after_the_turn_limit(receipt):
    from mmagent.graphs.tool_chain import MAX_AGENT_TURNS

    llm = ScriptedLLM(replies=[tool_call("read_text", file="image 1")] * MAX_AGENT_TURNS + [ChatResult("done")],
                      supports_tools=True)
    result = run("total?", images=[receipt], toolbox=scripted_toolbox(ocr=ScriptedOCR(), llm=llm))
    assert result.answer == "done"
    assert [bool(c["tools"]) for c in llm.calls] == [True] * MAX_AGENT_TURNS + [False]


def test_state_holds_references_not_bytes(receipt):
    from mmagent.runner import build_pipeline

    box = scripted_toolbox(ocr=ScriptedOCR(), llm=ScriptedLLM("x"))
    graph = build_pipeline("tools", box, planner="rules")
    from mmagent.runner import request_message

    state = graph.invoke({"messages": [request_message("total?", images=[receipt])], "output": "auto"})
    assert state["messages"][0].content[1]["url"].startswith("mmagent-media:sha256:")
    assert len(json.dumps(state, default=str)) < 4000
    assert "base64" not in json.dumps(state, default=str)


def test_inline_media_in_a_message_is_stored_and_replaced_by_reference(receipt):
    import base64

    from langchain_core.messages import HumanMessage

    from mmagent.runner import build_pipeline

    box = scripted_toolbox(ocr=ScriptedOCR(), llm=ScriptedLLM("x"))
    graph = build_pipeline("tools", box, planner="rules")
    data = base64.b64encode(receipt.read_bytes()).decode()
    message = HumanMessage([{"type": "text", "text": "total?"},
                            {"type": "image", "base64": data, "mime_type": "image/png"}])
    state = graph.invoke({"messages": [message]})
    assert data not in json.dumps(state, default=str)
    assert state["messages"][0].id == message.id and state["messages"][0].content[1]["url"].startswith("mmagent-media:")
    assert state["artifacts"][0]["kind"] == "ocr"


def test_cli_run_json_and_bad_input(tmp_path):
    mm = str(Path(sys.executable).with_name("mmagent"))
    bad = subprocess.run([mm, "run", "--image", str(tmp_path / "missing.png"), "hi"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("Error: ") and "Traceback" not in bad.stderr
    empty = subprocess.run([mm, "run"], capture_output=True, text=True)
    assert empty.returncode == 2 and "nothing to do" in empty.stderr


HOSTILE = Path(__file__).parent / "hostile" / "corpus"


@pytest.mark.parametrize("kind, name", [
    ("image", "bomb_9000x9000_1bit.png"), ("image", "truncated.png"), ("image", "wav_named.png"),
    ("image", "image.svg"), ("audio", "truncated_header.wav"), ("audio", "zero_samples.wav"),
    ("audio", "png_named.wav"), ("audio", "video_only.mp4"), ("audio", "id3_garbage.mp3"),
])
def test_hostile_media_is_refused_before_any_tool_runs(kind, name, home):
    llm = ScriptedLLM("never")
    box = scripted_toolbox(asr=ScriptedASR(), ocr=ScriptedOCR(), llm=llm)
    with pytest.raises(InputError) as info:
        run("what is this?", toolbox=box, **{"images" if kind == "image" else "audio": [HOSTILE / name]})
    assert "\n" not in str(info.value) and llm.calls == []
    assert not (home / "media").exists() or not any((home / "media").rglob("*"))


def test_cli_run_refuses_hostile_audio_in_one_line():
    mm = str(Path(sys.executable).with_name("mmagent"))
    proc = subprocess.run([mm, "run", "--audio", str(HOSTILE / "zero_samples.wav"), "hi"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_question_for_the_written_text_is_answered_with_what_ocr_read(receipt):
    """The image analogue of a transcription request: the text itself, not the small LLM's
    paraphrase of it (which turned "PARK" into "parking")."""
    llm = ScriptedLLM("The word parking is written.")
    box = scripted_toolbox(ocr=ScriptedOCR(["PARK"]), llm=llm)
    result = run("What word is written in the image?", images=[receipt], toolbox=box, pipeline="tools",
                 planner="rules")
    assert result.answer == "PARK" and llm.calls == []
    assert result.plan["intent"] == "verbatim" and result.plan["answer"] == "verbatim (OCR)"
    assert result.plan["tools"] == ["read_text"]
    nothing = run("What word is written in the image?", images=[receipt], pipeline="tools", planner="rules",
                  toolbox=scripted_toolbox(ocr=ScriptedOCR([]), llm=llm))
    assert nothing.answer == "The word parking is written."  # OCR found no text: the LLM answers


def test_when_every_tool_fails_the_answer_says_so_instead_of_guessing(receipt):
    """A failed tool must not leave the LLM answering blind (issue 11: a 1x100000 image made OCR
    fail and the LLM invented a total)."""
    class BrokenOCR(ScriptedOCR):
        def read(self, image):
            raise BackendError("ocr/scripted cannot read a 1x100000 image: it is too thin")

    llm = ScriptedLLM("The total is 42.")
    box = scripted_toolbox(ocr=BrokenOCR(), llm=llm)
    result = run("What is the total?", images=[receipt], toolbox=box, pipeline="tools", planner="rules")
    assert llm.calls == [] and result.plan["answer"] == "tools failed"
    assert result.answer.startswith("I could not look at the files: read_text of image 1 failed:")
    assert "too thin" in result.answer
    # with one tool still working, the LLM answers, told what failed
    box = scripted_toolbox(ocr=BrokenOCR(), caption=ScriptedCaptioner("a receipt"), llm=llm)
    run("What is in the picture?", images=[receipt], toolbox=box, pipeline="tools", planner="rules")
    prompt = llm.calls[-1]["messages"][-1].text
    assert "a receipt" in prompt and "read_text of image 1 failed" in prompt
