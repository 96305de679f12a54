"""Decoding under a JSON schema with xgrammar (plugins/transformers_llm.py): on a tiny random Llama
the reply parses under the schema whatever the weights; on real SmolLM2 weights the bundled
receipt gives the right shop and total, through the example and through `mmagent extract`."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

pytest.importorskip("transformers")

from mmagent.backends import Message, get_backend  # noqa: E402
from mmagent.errors import BackendError, InputError  # noqa: E402
from mmagent.extract import extract, load_schema  # noqa: E402
from mmagent.plugins.transformers_llm import TransformersChat  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
needs_xgrammar = pytest.mark.skipif(importlib.util.find_spec("xgrammar") is None, reason="xgrammar not installed")


class Bounded(BaseModel):
    """Every field bounded, so a random model's reply always fits in max_tokens."""

    name: str = Field(max_length=12)
    count: int = Field(ge=0, le=99)
    kind: Literal["cat", "dog"]
    ok: bool
    price: float = Field(ge=0, le=1000)


@pytest.fixture
def tiny(tiny_llama):
    return get_backend("llm", "transformers", model=str(tiny_llama), device="cpu")


def ask(i: int) -> list[Message]:
    return [Message("system", "Reply with JSON."), Message("user", f"Item number {i}, please.")]


@needs_xgrammar
def test_random_weights_reply_in_the_schema_greedy_and_sampled(tiny):
    import torch

    assert tiny.supports_schema
    schema = Bounded.model_json_schema()
    replies = []
    for i in range(3):
        for temperature in (0.0, 1.0):
            torch.manual_seed(i)
            result = tiny.chat(ask(i), schema=schema, max_tokens=120, temperature=temperature)
            assert result.finish_reason == "stop", result
            replies.append(Bounded.model_validate_json(result.text))  # raises if it does not follow
    assert len({r.model_dump_json() for r in replies}) > 1  # the model chose the values, not a template
    for i in range(3):  # the same model, unconstrained, writes no such thing
        with pytest.raises(ValidationError):
            Bounded.model_validate_json(tiny.chat(ask(i), max_tokens=60).text)


@needs_xgrammar
def test_extract_on_random_weights_needs_one_attempt(tiny):
    result = extract(Bounded, "A dog named Rex, 3 years, 12.50.", tiny, max_tokens=120)
    assert result.constrained and len(result.attempts) == 1 and result.attempts[0].error is None


@needs_xgrammar
def test_a_reply_cut_at_max_tokens_reports_length(tiny):
    class Free(BaseModel):
        text: str  # unbounded: a random model does not close the string in 6 tokens

    result = tiny.chat(ask(0), schema=Free.model_json_schema(), max_tokens=6)
    assert result.finish_reason == "length" and result.text.startswith('{"text": "')
    with pytest.raises(ValidationError):
        Free.model_validate_json(result.text)


@needs_xgrammar
def test_a_schema_xgrammar_cannot_compile_is_one_line_input_error(tiny):
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}
    with pytest.raises(InputError, match=r"cannot decode under this JSON schema: Cannot find field") as info:
        tiny.chat(ask(0), schema=schema)
    assert "\n" not in str(info.value) and "json_schema_converter.cc" not in str(info.value)


def test_without_xgrammar_the_backend_says_so_and_loads_nothing(monkeypatch):
    monkeypatch.setattr(TransformersChat, "supports_schema", False)
    llm = TransformersChat(model="/nonexistent/model")  # loading it would fail differently
    with pytest.raises(BackendError, match=r"needs xgrammar \(pip install --no-deps xgrammar"):
        llm.chat([Message("user", "hi")], schema=Bounded.model_json_schema())


# -- real weights ---------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_xgrammar
def test_the_bundled_receipt_gives_shop_and_total_offline(zoo_model, models_home, monkeypatch, capsys):
    """SmolLM2-135M alone writes off-schema JSON here (a fenced object with invented keys); under
    the schema, with the field descriptions of examples/receipt_schema.py, it fills both fields."""
    from click.testing import CliRunner

    from mmagent.cli import build_cli

    zoo_model("smollm2-135m-instruct")
    zoo_model("pp-ocrv4")
    monkeypatch.setenv("MMAGENT_HOME", str(models_home))
    receipt = str(ROOT / "examples" / "media" / "receipt.png")

    def right(value: dict) -> bool:  # the OCR reads "CORNERCAFE"; the model may change the case
        return re.sub(r"\W", "", value["shop"]).lower() == "cornercafe" and value["total"] == 9.75

    spec = importlib.util.spec_from_file_location("extract_receipt", ROOT / "examples" / "extract_receipt.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main([receipt]) == 0
    out = capsys.readouterr()
    assert right(json.loads(out.out)), out.out
    assert "1 attempt(s), decoded under the schema" in out.err

    start = time.perf_counter()
    schema = f"{ROOT / 'examples' / 'receipt_schema.py'}:Receipt"
    result = CliRunner().invoke(build_cli(), ["extract", "--schema", schema, "--image", receipt],
                                catch_exceptions=False)
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.stderr
    assert right(json.loads(result.stdout)), result.stdout
    print(f"mmagent extract on the receipt, model loaded: {seconds:.2f} s")

    llm = get_backend("llm")
    typed = "CORNER CAFE\nCoffee 3.50\nBagel 2.25\nOrange juice 4.00\nTOTAL 9.75"  # the text as printed
    value = extract(load_schema(schema), typed, llm).value
    assert value.total == 9.75 and value.shop.replace(" ", "").lower() == "cornercafe"
