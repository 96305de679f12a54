"""Structured extraction: text in, a validated pydantic object out, with a bounded repair loop.

The model is asked for JSON matching the schema. A backend that can decode under a JSON schema
(`ChatModel.supports_schema`: transformers models through xgrammar, OpenAI-compatible servers
through native structured output) is given the schema and cannot write anything else; others get
the shape in the prompt only. What comes back is validated, and on failure the validation errors
are sent back for a repair, at most `max_repairs` times. At temperature 0 (greedy decoding) a
repair that repeats an earlier attempt word for word ends the loop: the model is ignoring the
errors and would go on repeating itself. A final failure raises `ExtractionError` carrying every
attempt — never a half-valid object.
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
    #: The backend's finish reason ("stop"; "length" when the reply was cut at max_tokens).
    finish_reason: str = "stop"


class ExtractionError(MMAgentError):
    """The model did not produce valid JSON for the schema within the allowed repairs."""

    def __init__(self, message: str, attempts: list[Attempt]):
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True)
class Extraction(Generic[T]):
    value: T
    attempts: list[Attempt]
    #: True when the backend decoded under the schema (it was passed `schema=`).
    constrained: bool = False


def extract(schema: type[T], text: str, llm: ChatModel, *, max_repairs: int = 2, max_tokens: int = 256,
            temperature: float = 0.0, instructions: str | None = None) -> Extraction[T]:
    """Fill `schema` from `text` using `llm`; raises ExtractionError after `max_repairs` failed repairs
    (or sooner, at temperature 0, when a repair repeats an earlier attempt).

    `instructions` are added to the system prompt (what to look for, where). Field descriptions of
    the schema (`Field(description=...)`) are listed there too: small models need to be told where
    each value is."""
    from pydantic import ValidationError

    constrained = bool(getattr(llm, "supports_schema", False))
    options = {"schema": schema.model_json_schema()} if constrained else {}
    messages = [Message("system", system_prompt(schema, instructions)), Message("user", text)]
    attempts: list[Attempt] = []
    for _ in range(max_repairs + 1):
        result = llm.chat(messages, max_tokens=max_tokens, temperature=temperature, **options)
        output, finish = result.text, result.finish_reason or "stop"
        try:
            value = schema.model_validate_json(_json_part(output))
        except ValidationError as exc:
            error = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'json'}: {e['msg']}" for e in exc.errors())
            if finish == "length":
                error += f" (the reply was cut at max_tokens={max_tokens})"
            attempts.append(Attempt(output, error, finish))
            earlier = next((i for i, a in enumerate(attempts[:-1], 1) if a.output == output), None)
            if earlier is not None and temperature == 0:
                raise ExtractionError(
                    f"no valid {schema.__name__} after {len(attempts)} attempts: attempt {len(attempts)} repeated "
                    f"attempt {earlier} word for word; with greedy decoding (temperature 0) the model ignores the "
                    f"validation errors, so further repairs would repeat it too: {error}", attempts)
            messages += [Message("assistant", output),
                         Message("user", f"That is not valid: {error}. Reply with the corrected JSON object only.")]
            continue
        attempts.append(Attempt(output, None, finish))
        return Extraction(value, attempts, constrained)
    raise ExtractionError(f"no valid {schema.__name__} after {len(attempts)} attempts: {attempts[-1].error}",
                          attempts)


def system_prompt(schema: type[BaseModel], instructions: str | None = None) -> str:
    """What the model is told: reply with JSON shaped like `template(schema)`, each described
    field's description, then `instructions`."""
    lines = ["Extract the requested fields from the text. Reply with one JSON object only, "
             f"shaped like this template: {template(schema)}"]
    described = [(name, field.description) for name, field in schema.model_fields.items() if field.description]
    if described:
        lines.append("Fields:")
        lines += [f"- {name}: {description}" for name, description in described]
    if instructions and instructions.strip():
        lines.append(instructions.strip())
    return "\n".join(lines)


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
