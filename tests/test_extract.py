"""Structured extraction: validation, bounded repairs, failures surfaced with every attempt."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from mmagent.backends.results import ChatResult
from mmagent.extract import ExtractionError, extract
from mmagent.testing import ScriptedLLM


class Receipt(BaseModel):
    shop: str
    total: float


def test_valid_json_in_prose_or_fence_is_accepted_first_time():
    llm = ScriptedLLM('Sure! ```json\n{"shop": "Corner Cafe", "total": 9.75}\n```')
    result = extract(Receipt, "CORNER CAFE ... TOTAL 9.75", llm)
    assert result.value == Receipt(shop="Corner Cafe", total=9.75)
    assert len(result.attempts) == 1 and result.attempts[0].error is None
    assert '{"shop": "...", "total": 0.0}' in llm.calls[0]["messages"][0].text  # the shape is in the prompt


def test_invalid_output_is_repaired_with_the_validation_error():
    llm = ScriptedLLM(replies=[ChatResult('{"shop": "Cafe", "total": "nine"}'), ChatResult('{"shop": "Cafe", "total": 9.75}')])
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
