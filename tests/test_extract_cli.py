"""`mmagent extract`: images through OCR and audio through ASR (the tools registry), the text to the
configured LLM with the schema when it decodes under one; the validated object as JSON on stdout,
every attempt on stderr and exit 1 on failure, one line and exit 2 on bad input.

Scripted backends stand in for models (registered by a test plugin, chosen through
MMAGENT_<ROLE>_BACKEND), so these tests check the command, not a model."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from mmagent import hookimpl
from mmagent.backends.results import ChatResult
from mmagent.testing import ScriptedASR, ScriptedLLM, ScriptedOCR, silent_wav

ROOT = Path(__file__).resolve().parent.parent
RECEIPT_SCHEMA = f"{ROOT / 'examples' / 'receipt_schema.py'}:Receipt"


class JsonLLM(ScriptedLLM):
    """Decodes under a schema (records it); answers from the class-level script, then `reply`."""

    name = "json"
    default_model = "scripted-json"
    supports_schema = True
    script: ClassVar[list[str]] = []
    reply_text: ClassVar[str] = '{"shop": "CORNER CAFE", "total": 9.75}'
    seen: ClassVar[list[dict]] = []

    def unavailable_reason(self) -> str | None:
        return "model 'missing-model' is not here" if self.model_id == "missing-model" else None

    def chat(self, messages, *, schema=None, **kw) -> ChatResult:
        JsonLLM.seen.append({"model": self.model_id, "messages": list(messages), "schema": schema})
        return ChatResult(JsonLLM.script.pop(0) if JsonLLM.script else JsonLLM.reply_text)


class PlainLLM(JsonLLM):
    """No schema support: `chat` without a `schema` keyword."""

    name = "plain"
    supports_schema = False

    def chat(self, messages, *, tools=None, max_tokens=256, temperature=0.0, stop=None) -> ChatResult:
        return super().chat(messages)


class ReceiptOCR(ScriptedOCR):
    name = "receipt"

    def __init__(self, **kw):
        super().__init__(lines=("CORNER CAFE", "Coffee 3.50", "TOTAL 9.75"), **kw)


class SpokenOrder(ScriptedASR):
    name = "spoken"

    def __init__(self, **kw):
        super().__init__(text="Table four paid nine seventy-five.", **kw)


class Doubles:
    @hookimpl
    def register_backends(self, register):
        for cls in (JsonLLM, PlainLLM, ReceiptOCR, SpokenOrder):
            register(cls)


@pytest.fixture(autouse=True)
def doubles(monkeypatch):
    from mmagent.plugin_manager import get_plugins

    get_plugins().add(Doubles(), name="extract-doubles")
    JsonLLM.seen.clear()
    JsonLLM.script.clear()
    for role, name in {"llm": "json", "ocr": "receipt", "asr": "spoken"}.items():
        monkeypatch.setenv(f"MMAGENT_{role.upper()}_BACKEND", name)


def invoke(*args: str):
    from mmagent.cli import build_cli

    return CliRunner().invoke(build_cli(), list(args), catch_exceptions=False)


def png(path: Path) -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), "white").save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return path


def one_line_error(result, code: int, fragment: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert result.stdout == "" and JsonLLM.seen == []  # nothing asked of the model


# -- success --------------------------------------------------------------------------------------------


def test_image_text_goes_to_the_llm_with_the_schema_and_the_object_is_printed(tmp_path):
    result = invoke("extract", "--schema", RECEIPT_SCHEMA, "--image", str(png(tmp_path / "r.png")))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"shop": "CORNER CAFE", "total": 9.75}
    [call] = JsonLLM.seen
    system, user = call["messages"]
    assert user.text == "CORNER CAFE\nCoffee 3.50\nTOTAL 9.75"  # what the OCR read, as it read it
    assert "printed on the receipt's first line" in system.text  # the schema's field description
    assert call["schema"]["required"] == ["shop", "total"] and call["model"] == "scripted-json"


def test_prompt_is_an_instruction_when_media_is_given_and_the_text_otherwise(tmp_path):
    assert invoke("extract", "--schema", RECEIPT_SCHEMA, "--image", str(png(tmp_path / "r.png")),
                  "Amounts are in euros.").exit_code == 0
    system, user = JsonLLM.seen[-1]["messages"]
    assert system.text.endswith("Amounts are in euros.") and "euros" not in user.text
    assert invoke("extract", "--schema", RECEIPT_SCHEMA, "Bakery Bob, total 4.20").exit_code == 0
    assert JsonLLM.seen[-1]["messages"][1].text == "Bakery Bob, total 4.20"


def test_images_and_audio_together_are_labelled_by_file(tmp_path):
    image, wav = png(tmp_path / "r.png"), tmp_path / "order.wav"
    wav.write_bytes(silent_wav(0.3))
    result = invoke("extract", "--schema", RECEIPT_SCHEMA, "--image", str(image), "--audio", str(wav))
    assert result.exit_code == 0, result.stderr
    user = JsonLLM.seen[-1]["messages"][1].text
    assert user == (f"From {image}:\nCORNER CAFE\nCoffee 3.50\nTOTAL 9.75\n\n"
                    f"From {wav}:\nTable four paid nine seventy-five.")


def test_a_backend_without_schema_support_is_not_given_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MMAGENT_LLM_BACKEND", "plain")
    result = invoke("extract", "--schema", RECEIPT_SCHEMA, "-v", "Corner Cafe 9.75")
    assert result.exit_code == 0, result.stderr
    assert JsonLLM.seen[-1]["schema"] is None  # PlainLLM.chat would raise TypeError if given one
    assert "schema in the prompt only" in result.stderr


def test_llm_option_picks_the_model_and_a_missing_one_is_exit_2(tmp_path):
    assert invoke("extract", "--schema", RECEIPT_SCHEMA, "--llm", "other-model", "x").exit_code == 0
    assert JsonLLM.seen[-1]["model"] == "other-model"
    JsonLLM.seen.clear()
    one_line_error(invoke("extract", "--schema", RECEIPT_SCHEMA, "--llm", "missing-model", "x"), 2,
                   "--llm missing-model: model 'missing-model' is not here")


def test_verbose_shows_the_text_each_attempt_and_the_time(tmp_path):
    JsonLLM.script[:] = ['{"shop": "S"}']
    result = invoke("extract", "--schema", RECEIPT_SCHEMA, "-v", "--image", str(png(tmp_path / "r.png")))
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"shop": "CORNER CAFE", "total": 9.75}  # stdout: the object only
    err = result.stderr
    assert "CORNER CAFE\nCoffee 3.50" in err
    assert "attempt 1: '{\"shop\": \"S\"}'\n  error: total: Field required" in err
    assert "attempt 2:" in err and "2 attempt(s), decoded under the schema;" in err


# -- failure: every attempt, exit 1 ------------------------------------------------------------------------


def test_failure_prints_every_attempt_and_exits_1(tmp_path):
    JsonLLM.script[:] = ["no idea", '{"shop": "S", "total": "lots"}', "{}"]
    result = invoke("extract", "--schema", RECEIPT_SCHEMA, "--repairs", "2", "some text")
    assert result.exit_code == 1
    assert result.stdout == ""
    err = result.stderr.splitlines()
    assert err[0].startswith("Error: no valid Receipt after 3 attempts: shop: Field required")
    assert err[2].startswith("  error: json: Invalid JSON")
    assert err[1:2] + err[3:] == ["attempt 1: 'no idea'",
                                  "attempt 2: '{\"shop\": \"S\", \"total\": \"lots\"}'",
                                  "  error: total: Input should be a valid number, unable to parse string as a number",
                                  "attempt 3: '{}'", "  error: shop: Field required; total: Field required"]
    assert len(JsonLLM.seen) == 3


def test_a_greedy_model_repeating_itself_stops_early_and_says_why(monkeypatch):
    monkeypatch.setattr(JsonLLM, "reply_text", "I cannot do that.")
    result = invoke("extract", "--schema", RECEIPT_SCHEMA, "--repairs", "5", "some text")
    assert result.exit_code == 1 and len(JsonLLM.seen) == 2
    assert "attempt 2 repeated attempt 1 word for word" in result.stderr.splitlines()[0]


# -- bad input: one line, exit 2 ---------------------------------------------------------------------------


@pytest.fixture
def schemas(tmp_path, monkeypatch) -> Path:
    (tmp_path / "schemas.py").write_text("from pydantic import BaseModel\n\nclass Person(BaseModel):\n"
                                        "    name: str\n    age: int\n\nNOT_A_MODEL = 42\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("args, fragment", [
    (["--schema", "schemas.py:Person", "--image", "nowhere.png"], "nowhere.png"),
    (["--schema", "schemas.py:Person", "--audio", "schemas.py"], "schemas.py"),
    (["--schema", "missing.py:Person", "x"], "schema file not found: missing.py"),
    (["--schema", "schemas.py", "x"], "--schema must be FILE.py:Model or module:Model"),
    (["--schema", "schemas.py:Nobody", "x"], "has no 'Nobody' (pydantic models there: Person)"),
    (["--schema", "schemas.py:NOT_A_MODEL", "x"], "is not a pydantic model"),
    (["--schema", "no_such_module_xyz:Person", "x"], "cannot import module 'no_such_module_xyz'"),
    (["--schema", "schemas.py:Person"], "nothing to extract from"),
])
def test_bad_input_is_one_line_and_exit_2(schemas, args, fragment):
    one_line_error(invoke("extract", *args), 2, fragment)


def test_a_missing_second_image_fails_before_any_model_runs(schemas):
    png(schemas / "a.png")
    one_line_error(invoke("extract", "--schema", "schemas.py:Person", "--image", "a.png", "--image", "b.png"), 2,
                   "b.png")


def test_module_reference_from_the_current_directory(schemas):
    JsonLLM.script[:] = ['{"name": "Ada", "age": 36}']
    result = invoke("extract", "--schema", "schemas:Person", "Ada is 36.")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "Ada", "age": 36}


def test_the_command_imports_no_model_library_until_it_runs():
    code = ("import sys\nfrom mmagent.cli import build_cli\nbuild_cli()\n"
            "import mmagent.cli.extract_cmd, mmagent.extract\n"
            "heavy = [m for m in ('torch', 'transformers', 'xgrammar', 'langgraph') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
