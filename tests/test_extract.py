"""Structured extraction: validation, bounded repairs, a greedy loop that stops repeating itself,
the schema handed only to backends that decode under it, failures surfaced with every attempt;
`load_schema` for FILE.py:Model and module:Model."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import BaseModel, Field

from mmagent.backends.results import ChatResult
from mmagent.errors import InputError
from mmagent.extract import ExtractionError, SchemaLoadError, extract, load_schema, system_prompt
from mmagent.testing import ScriptedLLM


class Receipt(BaseModel):
    shop: str
    total: float


class DescribedReceipt(BaseModel):
    shop: str = Field(description="the shop's name, on the first line")
    total: float


class SchemaLLM(ScriptedLLM):
    """A scripted backend that decodes under a schema: records the `schema` it was given."""

    name = "scripted-schema"
    supports_schema = True

    def chat(self, messages, *, schema=None, **kw) -> ChatResult:
        result = super().chat(messages, **kw)
        self.calls[-1]["schema"] = schema
        self.calls[-1]["temperature"] = kw.get("temperature")
        return result


def test_valid_json_in_prose_or_fence_is_accepted_first_time():
    llm = ScriptedLLM('Sure! ```json\n{"shop": "Corner Cafe", "total": 9.75}\n```')
    result = extract(Receipt, "CORNER CAFE ... TOTAL 9.75", llm)
    assert result.value == Receipt(shop="Corner Cafe", total=9.75)
    assert len(result.attempts) == 1 and result.attempts[0].error is None
    assert '{"shop": "...", "total": 0.0}' in llm.calls[0]["messages"][0].text  # the shape is in the prompt
    assert result.constrained is False


def test_invalid_output_is_repaired_with_the_validation_error():
    llm = ScriptedLLM(replies=[ChatResult('{"shop": "Cafe", "total": "nine"}'),
                               ChatResult('{"shop": "Cafe", "total": 9.75}')])
    result = extract(Receipt, "text", llm)
    assert result.value.total == 9.75 and len(result.attempts) == 2
    repair = llm.calls[1]["messages"][-1].text
    assert "total" in repair and "valid number" in repair


def test_gives_up_after_max_repairs_and_keeps_every_attempt():
    llm = ScriptedLLM(replies=[ChatResult("I cannot do that."), ChatResult("{}"), ChatResult('{"shop": 1}')])
    with pytest.raises(ExtractionError, match="no valid Receipt after 3 attempts: shop: Input should be") as info:
        extract(Receipt, "text", llm, max_repairs=2)
    assert len(llm.calls) == 3
    assert [a.output for a in info.value.attempts] == ["I cannot do that.", "{}", '{"shop": 1}']
    assert all(a.error for a in info.value.attempts)


# -- a greedy model that ignores the repair request --------------------------------------------------


def test_a_repeated_attempt_ends_the_greedy_loop_and_the_error_says_why():
    llm = ScriptedLLM("I cannot do that.")  # what greedy decoding does: the same bytes every time
    with pytest.raises(ExtractionError) as info:
        extract(Receipt, "text", llm, max_repairs=5)
    assert len(llm.calls) == 2  # not 6: the second attempt repeated the first
    message = str(info.value)
    assert "no valid Receipt after 2 attempts" in message
    assert "attempt 2 repeated attempt 1 word for word" in message and "greedy decoding" in message
    assert [a.output for a in info.value.attempts] == ["I cannot do that."] * 2
    assert all(a.error for a in info.value.attempts)


def test_a_repeat_of_any_earlier_attempt_counts():
    llm = ScriptedLLM(replies=[ChatResult("A"), ChatResult("B"), ChatResult("A"), ChatResult("C")])
    with pytest.raises(ExtractionError, match="attempt 3 repeated attempt 1") as info:
        extract(Receipt, "text", llm, max_repairs=5)
    assert [a.output for a in info.value.attempts] == ["A", "B", "A"] and len(llm.calls) == 3


def test_sampling_keeps_every_repair_even_when_an_attempt_repeats():
    llm = ScriptedLLM("I cannot do that.")
    with pytest.raises(ExtractionError, match="no valid Receipt after 4 attempts") as info:
        extract(Receipt, "text", llm, max_repairs=3, temperature=0.7)
    assert len(llm.calls) == 4 and "repeated" not in str(info.value)


def test_a_reply_cut_at_max_tokens_says_so():
    llm = ScriptedLLM(replies=[ChatResult('{"shop": "Corner', finish_reason="length")])
    with pytest.raises(ExtractionError, match=r"cut at max_tokens=7") as info:
        extract(Receipt, "text", llm, max_repairs=0, max_tokens=7)
    assert info.value.attempts[0].finish_reason == "length"


# -- the schema goes to backends that decode under it, and only to them ------------------------------


def test_the_schema_is_passed_to_a_backend_that_supports_it():
    llm = SchemaLLM('{"shop": "Corner Cafe", "total": 9.75}')
    result = extract(Receipt, "text", llm)
    assert result.constrained is True and result.value.shop == "Corner Cafe"
    assert llm.calls[0]["schema"] == Receipt.model_json_schema()
    assert llm.calls[0]["temperature"] == 0.0


def test_the_schema_is_passed_on_every_repair_too():
    llm = SchemaLLM(replies=[ChatResult('{"shop": "S", "total": -1}'), ChatResult('{"shop": "S", "total": 2}')])

    class Positive(BaseModel):
        shop: str
        total: float = Field(ge=0)

    result = extract(Positive, "text", llm)
    assert len(result.attempts) == 2
    assert [c["schema"] for c in llm.calls] == [Positive.model_json_schema()] * 2


def test_a_backend_without_schema_support_keeps_its_signature():
    class Strict(ScriptedLLM):  # a `chat` without `schema`: passing it would raise TypeError
        def chat(self, messages, *, tools=None, max_tokens=256, temperature=0.0, stop=None):
            return super().chat(messages, tools=tools, max_tokens=max_tokens, temperature=temperature, stop=stop)

    llm = Strict('{"shop": "S", "total": 1}')
    assert not llm.supports_schema
    assert extract(Receipt, "text", llm).constrained is False


def test_field_descriptions_and_instructions_are_in_the_system_prompt():
    llm = ScriptedLLM('{"shop": "S", "total": 1}')
    extract(DescribedReceipt, "text", llm, instructions="Amounts are in euros.")
    system = llm.calls[0]["messages"][0].text
    assert "- shop: the shop's name, on the first line" in system
    assert "- total" not in system  # no description, no line
    assert system.endswith("Amounts are in euros.")
    assert "Fields:" not in system_prompt(Receipt)


# -- load_schema ---------------------------------------------------------------------------------------


SCHEMA_FILE = textwrap.dedent('''
    from __future__ import annotations
    from pydantic import BaseModel

    class Item(BaseModel):
        name: str

    class Order(BaseModel):
        items: list[Item]

    NOT_A_MODEL = {"type": "object"}
''')


def test_load_schema_from_a_file_and_from_a_module(tmp_path, monkeypatch):
    path = tmp_path / "order_schema.py"
    path.write_text(SCHEMA_FILE)
    order = load_schema(f"{path}:Order")
    assert order.model_validate({"items": [{"name": "x"}]}).items[0].name == "x"  # forward refs resolved
    monkeypatch.chdir(tmp_path)
    assert load_schema("order_schema.py:Order").__name__ == "Order"
    assert load_schema("order_schema:Item").__name__ == "Item"  # module:Model, from the current directory


@pytest.mark.parametrize("ref, fragment", [
    ("order_schema.py", "must be FILE.py:Model or module:Model"),
    ("order_schema.py:", "must be FILE.py:Model or module:Model"),
    ("missing.py:Order", "schema file not found: missing.py"),
    ("order_schema.py:Nope", "has no 'Nope' (pydantic models there: Item, Order)"),
    ("order_schema.py:NOT_A_MODEL", "is not a pydantic model"),
    ("order_schema.py:BaseModel", "is not a pydantic model"),
    ("broken.py:Order", "cannot load broken.py: ZeroDivisionError"),
    ("no_such_module_here:Order", "cannot import module 'no_such_module_here'"),
])
def test_bad_schema_references_are_input_errors(tmp_path, monkeypatch, ref, fragment):
    (tmp_path / "order_schema.py").write_text(SCHEMA_FILE)
    (tmp_path / "broken.py").write_text("x = 1 / 0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SchemaLoadError) as info:
        load_schema(ref)
    assert isinstance(info.value, InputError) and info.value.exit_code == 2
    assert fragment in str(info.value) and "\n" not in str(info.value)
