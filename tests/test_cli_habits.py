"""`mmagent run` and the listing commands as llm users expect them: -m/-b for one run, -a with the
type from the bytes, a prompt from stdin, --system, a failure when a requested image or speech is
not made, honest `backends` statuses, fast failure on an uncached Hugging Face id, whole names in
piped tables, and --planner llm refusing a model that cannot call tools.

Scripted backends stand in for models (registered by a test plugin and chosen per role through
MMAGENT_<ROLE>_BACKEND or -b), so these tests check the CLI, not a model."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from mmagent import hookimpl
from mmagent.backends.results import ChatResult
from mmagent.errors import BackendError
from mmagent.testing import ScriptedASR, ScriptedCaptioner, ScriptedImageGen, ScriptedLLM, ScriptedOCR, ScriptedTTS
from mmagent.testing import silent_wav
from mmagent.zoo import ModelSpec

MMAGENT = str(Path(sys.executable).with_name("mmagent"))


# -- doubles -----------------------------------------------------------------------------------------


class RecordingLLM(ScriptedLLM):
    """Answers "answer from <model>" and records the model and messages of every call."""

    name = "recording"
    seen: ClassVar[list[dict]] = []

    def unavailable_reason(self) -> str | None:
        return None  # a double needs nothing, whatever model it is told to be

    def chat(self, messages, **kw) -> ChatResult:
        RecordingLLM.seen.append({"model": self.model_id, "messages": list(messages)})
        return ChatResult(f"answer from {self.model_id}")


class ToolCallingLLM(RecordingLLM):
    name = "tool-calling"

    def __init__(self, **kw):
        super().__init__(supports_tools=True, **kw)


class BrokenImageGen(ScriptedImageGen):
    name = "broken"

    def generate(self, prompt: str, **kw):
        raise BackendError("image_gen/broken: no weights for this model here")


class BrokenTTS(ScriptedTTS):
    name = "broken"

    def synthesize(self, text: str, *, voice=None):
        raise BackendError("tts/broken: the voice is not installed")


class ZooBacked(ScriptedCaptioner):
    """A backend whose default model is a zoo model of the test plugin."""

    name = "zoo-backed"
    default_model = "habits-test-model"


class NeedsLibrary(ScriptedCaptioner):
    name = "needs-library"
    requires = ("no_such_module_for_habits_test",)


class FromHub(ScriptedCaptioner):
    name = "from-hub"
    default_model = "habits-org/habits-captioner"


def _build(folder: Path, report) -> None:
    (folder / "weights.bin").write_bytes(b"w")


class Doubles:
    @hookimpl
    def register_backends(self, register):
        for cls in (RecordingLLM, ToolCallingLLM, ScriptedASR, ScriptedOCR, ScriptedCaptioner, ScriptedTTS,
                    ScriptedImageGen, BrokenImageGen, BrokenTTS, ZooBacked, NeedsLibrary, FromHub):
            register(cls)

    @hookimpl
    def register_models(self, register):
        register(ModelSpec(name="habits-test-model", role="caption", description="test", source="the test",
                           build=_build))
        register(ModelSpec(name="habits-missing-model", role="caption", description="test", source="PyPI nothing",
                           build=_build, available=lambda: False, install_hint="pip install habits-weights"))


@pytest.fixture
def doubles(monkeypatch):
    """Every role the tool chain uses served by a double; the embedder absent (keyword intents)."""
    from mmagent.plugin_manager import get_plugins

    get_plugins().add(Doubles(), name="habits-doubles")
    RecordingLLM.seen.clear()
    roles = {"asr": "scripted", "ocr": "scripted", "caption": "scripted", "llm": "recording", "tts": "scripted",
             "image_gen": "scripted", "embed": "absent"}
    for role, name in roles.items():
        monkeypatch.setenv(f"MMAGENT_{role.upper()}_BACKEND", name)


def invoke(*args: str, input: str | bytes | None = None):
    from mmagent.cli import build_cli

    return CliRunner().invoke(build_cli(), list(args), input=input, catch_exceptions=False)


def one_line_error(result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def user_text() -> str:
    """What the (last) LLM call was asked, all messages but the system prompt."""
    return "\n".join(m.text for m in RecordingLLM.seen[-1]["messages"] if m.role != "system")


def png(path: Path) -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), "white").save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return path


# -- 1: -m ROLE=MODEL and -b ROLE=BACKEND for one run --------------------------------------------------


def test_model_option_sets_the_model_of_a_role_for_this_run(doubles, tmp_path):
    result = invoke("run", "-m", "llm=org/my-model", "What is two plus two?", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answer"] == "answer from org/my-model"
    assert [s["model"] for s in data["steps"] if s["tool"] == "llm"] == ["org/my-model"]
    # only this run: the next one is back on the configured model
    assert json.loads(invoke("run", "What is two plus two?", "--json").stdout)["answer"] == "answer from None"


def test_backend_option_picks_the_backend_of_a_role(doubles):
    result = invoke("run", "-b", "llm=tool-calling", "-m", "llm=m1", "hi", "--json")
    assert result.exit_code == 0, result.stderr
    assert [(s["backend"], s["model"]) for s in json.loads(result.stdout)["steps"] if s["tool"] == "llm"] \
        == [("tool-calling", "m1")]


@pytest.mark.parametrize("args, fragments", [
    (("-m", "llm"), ("-m wants ROLE=MODEL", "'llm'")),
    (("-m", "=x"), ("-m wants ROLE=MODEL",)),
    (("-m", "llm="), ("-m wants ROLE=MODEL",)),
    (("-m", "LLM=x"), ("-m wants ROLE=MODEL",)),
    (("-m", "chef=x"), ("no role 'chef'", "llm")),
    (("-m", "llm=a", "-m", "llm=b"), ("names role 'llm' twice",)),
    (("-b", "llm"), ("-b wants ROLE=BACKEND",)),
    (("-b", "llm=nope"), ("no backend 'nope' for role 'llm'", "recording")),
], ids=["no-equals", "no-role", "no-model", "upper-case", "unknown-role", "twice", "backend-no-equals",
        "unknown-backend"])
def test_a_bad_role_choice_is_one_line_exit_2(doubles, args, fragments):
    one_line_error(invoke("run", *args, "hi"), 2, *fragments)
    assert RecordingLLM.seen == []  # refused before anything ran


def test_a_chosen_model_missing_here_fails_before_anything_loads(doubles, tmp_path):
    result = invoke("run", "-b", "caption=needs-library", "hi")
    one_line_error(result, 1, "no_such_module_for_habits_test")
    result = invoke("run", "-m", "llm=recording", "-b", "caption=from-hub", "-m", f"caption={tmp_path}/absent", "hi")
    one_line_error(result, 1, f"{tmp_path}/absent")
    assert RecordingLLM.seen == []


# -- 2: -a FILE, the type from the bytes -----------------------------------------------------------------


def test_attachments_are_sorted_by_their_bytes_not_their_names(doubles, tmp_path):
    image = png(tmp_path / "scan.wav")  # misleading extensions: the bytes decide
    audio = tmp_path / "question.png"
    audio.write_bytes(silent_wav(0.5))
    result = invoke("run", "-a", str(image), "--attach", str(audio), "What is the total?", "--json", "--pipeline", "tools")
    assert result.exit_code == 0, result.stderr
    steps = json.loads(result.stdout)["steps"]
    assert {s["tool"] for s in steps} >= {"asr", "ocr", "llm"}
    assert [s["input"] for s in steps if s["tool"] == "ocr"] == [0]
    assert [s["input"] for s in steps if s["tool"] == "asr"] == [1]
    assert "TOTAL 9.75" in user_text()  # what the scripted OCR read reached the model


def test_attachment_that_is_not_media_is_one_line_exit_2(doubles, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("just text")
    one_line_error(invoke("run", "-a", str(notes), "hi"), 2, "not an image, audio or video")


# -- 3: the prompt from stdin ------------------------------------------------------------------------------


def test_prompt_from_stdin(doubles):
    result = invoke("run", input="What is the capital of France?\n")
    assert result.exit_code == 0, result.stderr
    assert "What is the capital of France?" in user_text()


def test_stdin_then_prompt_when_both_are_given_as_llm_does(doubles):
    result = invoke("run", "Summarize this.", input="Line one of the report.\n")
    assert result.exit_code == 0, result.stderr
    text = user_text()
    assert "Line one of the report." in text and "Summarize this." in text
    assert text.index("Line one of the report.") < text.index("Summarize this.")


def test_dash_reads_the_prompt_from_stdin_only(doubles):
    result = invoke("run", "-", input="Only stdin here")
    assert result.exit_code == 0, result.stderr
    assert "Only stdin here" in user_text()
    assert "-" not in user_text().replace("Only stdin here", "")


def test_invalid_utf8_on_stdin_is_replaced_not_a_crash(doubles):
    result = invoke("run", input=b"caf\xe9 \xff\xfe ok?\n")
    assert result.exit_code == 0, result.stderr
    assert "caf\ufffd" in user_text() and "ok?" in user_text()


def test_no_prompt_and_empty_stdin_is_one_line_exit_2(doubles):
    one_line_error(invoke("run", input=""), 2, "nothing to do")


ECHO_GRAPH = """
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph


def echo(state):
    content = state["messages"][-1].content
    text = content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)
    return {"messages": [AIMessage("echo: " + text)]}


builder = StateGraph(MessagesState)
builder.add_node("echo", echo)
builder.add_edge(START, "echo")
builder.add_edge("echo", END)
graph = builder.compile()
"""


def test_piped_stdin_through_the_installed_command(tmp_path):
    """A real pipe and a real /dev/null (not CliRunner's stand-in), through a graph that echoes."""
    (tmp_path / "echo.py").write_text(ECHO_GRAPH)
    env = {**os.environ, "MMAGENT_HOME": str(tmp_path / "home")}

    def mmagent(*args, **kw):
        return subprocess.run([MMAGENT, "run", "--graph", "echo.py:graph", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120, **kw)

    piped = mmagent(input="from a pipe\n")
    assert (piped.returncode, piped.stdout.strip()) == (0, "echo: from a pipe"), piped.stderr
    both = mmagent("and the prompt", input="from a pipe")
    assert both.stdout.strip() == "echo: from a pipe and the prompt", both.stderr
    devnull = mmagent("just the prompt", stdin=subprocess.DEVNULL)
    assert devnull.stdout.strip() == "echo: just the prompt", devnull.stderr


# -- 4: --system -------------------------------------------------------------------------------------------


def test_system_prompt_reaches_the_model_first(doubles):
    result = invoke("run", "-s", "Answer in French.", "What colour is the sky?")
    assert result.exit_code == 0, result.stderr
    messages = RecordingLLM.seen[-1]["messages"]
    assert messages[0].role == "system" and messages[0].text == "Answer in French."
    result = invoke("run", "--system", "Be terse.", "hi")
    assert RecordingLLM.seen[-1]["messages"][0].text == "Be terse."


# -- 5: a requested image or speech that is not made is a failure ------------------------------------------------


def test_image_that_cannot_be_made_prints_the_answer_then_why_and_exits_1(doubles, monkeypatch, tmp_path):
    monkeypatch.setenv("MMAGENT_IMAGE_GEN_BACKEND", "broken")
    result = invoke("run", "Draw a cat", "--out", str(tmp_path / "out"))
    line = one_line_error(result, 1, "no image was made", "no weights for this model here")
    assert result.stdout.strip()  # the answer is still printed
    assert "note:" not in result.stderr and line
    assert not (tmp_path / "out").exists()


def test_speech_that_cannot_be_made_fails_in_json_mode_too(doubles, monkeypatch):
    monkeypatch.setenv("MMAGENT_TTS_BACKEND", "broken")
    result = invoke("run", "--output", "speech", "Say hello", "--json")
    one_line_error(result, 1, "no speech was made", "the voice is not installed")
    assert json.loads(result.stdout)["outputs"] == []


def test_image_that_is_made_is_written_and_exits_0(doubles, tmp_path):
    result = invoke("run", "Draw a cat", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    assert [p.suffix for p in (tmp_path / "out").iterdir()] == [".png"]


# -- 6: `mmagent backends` says ready only when the model is here -----------------------------------------------


def backends_json(*args: str) -> dict[str, dict]:
    result = invoke("backends", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return {f"{d['role']}/{d['name']}": d for d in json.loads(result.stdout)}


def test_backends_status_tells_what_is_missing(doubles, monkeypatch, tmp_path):
    from mmagent.zoo import get_zoo

    data = backends_json("--role", "caption")
    assert data["caption/needs-library"]["status"] == "needs install: no_such_module_for_habits_test"
    assert data["caption/zoo-backed"]["status"] == "zoo: build with mmagent models prepare habits-test-model"
    assert data["caption/from-hub"]["status"].startswith("not downloaded")
    assert not any(data[k]["ready"] for k in ("caption/needs-library", "caption/zoo-backed", "caption/from-hub"))

    get_zoo().prepare("habits-test-model")
    assert backends_json("--role", "caption")["caption/zoo-backed"]["status"] == "ready"

    monkeypatch.setenv("MMAGENT_CAPTION_BACKEND", "zoo-backed")
    monkeypatch.setenv("MMAGENT_CAPTION_MODEL", "habits-missing-model")
    assert backends_json()["caption/zoo-backed"]["status"] == \
        "needs install: pip install habits-weights (zoo model habits-missing-model)"
    monkeypatch.setenv("MMAGENT_CAPTION_MODEL", str(tmp_path / "nowhere"))
    assert backends_json()["caption/zoo-backed"]["status"] == f"not found: {tmp_path / 'nowhere'}"
    monkeypatch.setenv("MMAGENT_CAPTION_MODEL", str(tmp_path))
    assert backends_json()["caption/zoo-backed"]["ready"] is True


def test_backends_ready_for_a_hugging_face_id_in_the_local_cache(doubles, monkeypatch, tmp_path):
    fake_hf_cache(monkeypatch, tmp_path, "habits-org/habits-captioner")
    data = backends_json("--role", "caption")
    assert (data["caption/from-hub"]["status"], data["caption/from-hub"]["ready"]) == ("ready", True)


def fake_hf_cache(monkeypatch, root: Path, repo_id: str) -> Path:
    """A Hugging Face cache under `root` holding `repo_id`'s config.json; returns the snapshot folder."""
    from huggingface_hub import constants

    cache = root / "hf-cache"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return snapshot


# -- 7: an uncached Hugging Face id fails fast offline -------------------------------------------------------


def run_cli(*args: str, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([MMAGENT, *args], capture_output=True, text=True, env={**os.environ, **env},
                          stdin=subprocess.DEVNULL, timeout=120)
    return proc, time.perf_counter() - start


@pytest.mark.parametrize("env, why", [
    ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "127.0.0.1:9"),  # nothing listens there: unreachable, with or without network
    ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
], ids=["hub-unreachable", "offline-mode"])
def test_uncached_hub_id_fails_in_one_line_within_seconds(tmp_path, env, why):
    proc, seconds = run_cli("run", "-m", "llm=nobody/nothing", "hi",
                            env={"MMAGENT_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hf"), **env})
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Retrying" not in proc.stderr, proc.stderr
    assert "'nobody/nothing' is not in the local Hugging Face cache and the hub cannot be reached" in lines[0]
    assert why in lines[0]
    assert seconds < 5, f"took {seconds:.1f} s"


def test_backend_load_path_fails_fast_too(monkeypatch, tmp_path):
    """Without the CLI's check (Python API, a model from mmagent.toml): the load itself fails in one
    line instead of retrying, before torch is imported."""
    from mmagent.plugins.transformers_llm import TransformersChat

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(BackendError, match="'nobody/nothing' is not in the local Hugging Face cache"):
        TransformersChat(model="nobody/nothing").load_model()
    assert time.perf_counter() - start < 2


def test_cached_hub_id_resolves_to_its_snapshot_when_the_hub_is_unreachable(monkeypatch, tmp_path):
    from mmagent.plugins._hf import model_source

    snapshot = fake_hf_cache(monkeypatch, tmp_path, "some-org/cached-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert model_source("some-org/cached-model", "llm/transformers") == str(snapshot)
    with pytest.raises(BackendError, match="revision 'v2'"):
        model_source("some-org/cached-model", "llm/transformers", revision="v2")


def test_hub_id_is_left_to_from_pretrained_when_the_hub_answers(monkeypatch):
    from mmagent import hf_hub
    from mmagent.plugins._hf import model_source

    monkeypatch.setattr(hf_hub, "_hub_checks", {_endpoint(): None})
    assert model_source("nobody/nothing", "llm/transformers") == "nobody/nothing"


def _endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


@pytest.mark.slow
def test_cached_hub_id_answers_offline_without_requests(tiny_llama, tmp_path):
    """A real (tiny) model in the Hugging Face cache runs with the hub unreachable, at once."""
    cache = tmp_path / "hf"
    repo = cache / "models--habits--tiny-llama"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots").mkdir()
    (repo / "snapshots" / "abc").symlink_to(tiny_llama, target_is_directory=True)
    proc, seconds = run_cli("run", "-m", "llm=habits/tiny-llama", "--json", "hi",
                            env={"MMAGENT_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(cache),
                                 "HF_ENDPOINT": "http://127.0.0.1:9", "MMAGENT_EMBED_BACKEND": "absent"})
    assert proc.returncode == 0, proc.stderr
    assert "Retrying" not in proc.stderr
    assert [s["model"] for s in json.loads(proc.stdout)["steps"] if s["tool"] == "llm"] == ["habits/tiny-llama"]


# -- 8: piped tables keep every name whole ------------------------------------------------------------------------


def test_piped_tables_keep_every_value_whole_on_its_row(doubles, tmp_path, monkeypatch):
    monkeypatch.setenv("MMAGENT_HOME", str(tmp_path / ("a-long-home-folder-name-" * 4)))
    backends = json.loads(invoke("backends", "--json").stdout)
    lines = invoke("backends").stdout.splitlines()
    assert len(lines) == 1 + len(backends)  # a header, then one line per backend
    for d, line in zip(backends, lines[1:]):
        assert line.split()[:3] == [d["role"], d["name"], d["model"] or "-"]
        assert line.endswith(d["status"])
    assert not any(ch in "".join(lines) for ch in "│┃━─")

    models = json.loads(invoke("models", "list", "--json").stdout)
    lines = invoke("models", "list").stdout.splitlines()
    assert len(lines) == 1 + len(models)
    for m, line in zip(models, lines[1:]):
        assert line.startswith(m["name"] + " ") and line.endswith(m["path"]) and len(m["path"]) > 80

    plugins = json.loads(invoke("plugins", "--json").stdout)
    lines = invoke("plugins").stdout.splitlines()
    assert len(lines) == 1 + len(plugins)
    for p, line in zip(plugins, lines[1:]):
        assert line.startswith(p["name"] + " ") and ", ".join(p["provides"]) in line


# -- 9: --planner llm refuses a model that cannot call tools ------------------------------------------------------


def test_planner_llm_refuses_the_offline_default_chat_model():
    one_line_error(invoke("run", "--planner", "llm", "hi"), 2,
                   "--planner llm needs a chat model that calls tools; llm/transformers")


def test_planner_llm_runs_with_a_model_that_calls_tools(doubles):
    result = invoke("run", "--planner", "llm", "-b", "llm=tool-calling", "hi", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["plan"]["planner"] == "llm" and data["answer"] == "answer from None"
