"""Structured extraction: text in, a validated pydantic object out, with a bounded repair loop.

The model is asked for JSON matching the schema; what it returns is validated, and on failure the
validation errors are sent back for a repair, at most `max_repairs` times. A final failure raises
`ExtractionError` carrying every attempt — never a half-valid object.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from .backends.results import Message
from .errors import MMAgentError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .backends.roles import ChatModel

T = TypeVar("T", bound="BaseModel")

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Attempt:
    output: str
    error: str | None


class ExtractionError(MMAgentError):
    """The model did not produce valid JSON for the schema within the allowed repairs."""

    def __init__(self, message: str, attempts: list[Attempt]):
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True)
class Extraction(Generic[T]):
    value: T
    attempts: list[Attempt]


def extract(schema: type[T], text: str, llm: ChatModel, *, max_repairs: int = 2,
            max_tokens: int = 256) -> Extraction[T]:
    """Fill `schema` from `text` using `llm`; raises ExtractionError after `max_repairs` failed repairs."""
    from pydantic import ValidationError

    messages = [
        Message("system", "Extract the requested fields from the text. Reply with one JSON object only, "
                          f"shaped like this template: {template(schema)}"),
        Message("user", text),
    ]
    attempts: list[Attempt] = []
    for _ in range(max_repairs + 1):
        output = llm.chat(messages, max_tokens=max_tokens).text
        try:
            value = schema.model_validate_json(_json_part(output))
        except ValidationError as exc:
            error = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'json'}: {e['msg']}" for e in exc.errors())
            attempts.append(Attempt(output, error))
            messages += [Message("assistant", output),
                         Message("user", f"That is not valid: {error}. Reply with the corrected JSON object only.")]
            continue
        attempts.append(Attempt(output, None))
        return Extraction(value, attempts)
    raise ExtractionError(f"no valid {schema.__name__} after {len(attempts)} attempts: {attempts[-1].error}",
                          attempts)


def template(schema: type[BaseModel]) -> str:
    """A JSON example of the schema's shape (`{"shop": "...", "total": 0.0}`): small models follow
    an example far better than a JSON Schema document."""
    blanks = {"string": "...", "number": 0.0, "integer": 0, "boolean": False, "array": [], "object": {}}
    properties = schema.model_json_schema().get("properties", {})
    return json.dumps({name: blanks.get(spec.get("type"), None) for name, spec in properties.items()})


def _json_part(output: str) -> str:
    """The JSON object in a reply that may wrap it in prose or a ``` fence."""
    fenced = _FENCE.search(output)
    if fenced:
        return fenced.group(1).strip()
    start, end = output.find("{"), output.rfind("}")
    return output[start:end + 1] if 0 <= start < end else output.strip()
