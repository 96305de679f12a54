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

import importlib
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .backends.results import Message
from .errors import InputError, MMAgentError, one_line

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


class SchemaLoadError(InputError):
    """A `FILE.py:Model` or `module:Model` reference that does not name a pydantic model."""


@dataclass(frozen=True)
class Extraction(Generic[T]):
    value: T
    attempts: list[Attempt]
    #: True when the backend decoded under the schema (it was passed `schema=`).
    constrained: bool = False


class JsonSchema:
    """A plain JSON Schema (a dict, as OpenAI's `response_format` carries it) standing where a
    pydantic model stands in `extract`: its values are the parsed JSON, validated with
    `jsonschema`."""

    def __init__(self, schema: dict, name: str = "object"):
        from jsonschema import exceptions, validators

        if not isinstance(schema, dict):
            raise InputError("a JSON schema must be an object")
        try:
            cls = validators.validator_for(schema)
            cls.check_schema(schema)
        except exceptions.SchemaError as exc:
            raise InputError(f"not a valid JSON schema: {one_line(exc.message, 200)}") from None
        self.schema, self.__name__ = schema, name
        self._validator = cls(schema)

    def model_json_schema(self) -> dict:
        return self.schema

    def descriptions(self) -> list[tuple[str, str]]:
        properties = self.schema.get("properties") or {}
        return [(k, v["description"]) for k, v in properties.items() if isinstance(v, dict) and v.get("description")]

    def validate_json(self, text: str) -> tuple[Any, str | None]:
        """(value, None) when `text` is JSON matching the schema, else (None, what is wrong)."""
        try:
            value = json.loads(text)
        except ValueError as exc:
            return None, f"json: {exc}"
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            return None, "; ".join(f"{'.'.join(map(str, e.absolute_path)) or 'json'}: {e.message}" for e in errors[:8])
        return value, None


def _validate(schema: Any, output: str) -> tuple[Any, str | None]:
    if isinstance(schema, JsonSchema):
        return schema.validate_json(_json_part(output))
    from pydantic import ValidationError

    try:
        return schema.model_validate_json(_json_part(output)), None
    except ValidationError as exc:
        return None, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'json'}: {e['msg']}" for e in exc.errors())


def extract(schema: type[T] | JsonSchema, text: str, llm: ChatModel, *, max_repairs: int = 2, max_tokens: int = 256,
            temperature: float = 0.0, instructions: str | None = None) -> Extraction[T]:
    """Fill `schema` (a pydantic model, or a `JsonSchema`: then the value is the parsed JSON) from
    `text` using `llm`; raises ExtractionError after `max_repairs` failed repairs (or sooner, at
    temperature 0, when a repair repeats an earlier attempt).

    `instructions` are added to the system prompt (what to look for, where). Field descriptions of
    the schema (`Field(description=...)`) are listed there too: small models need to be told where
    each value is."""
    from .runner import clean_text

    # Lone surrogates (undecodable argv bytes, a caller's "\udce9") never reach a tokenizer.
    text, instructions = clean_text(text), clean_text(instructions) if instructions else instructions
    constrained = bool(getattr(llm, "supports_schema", False))
    options = {"schema": schema.model_json_schema()} if constrained else {}
    messages = [Message("system", system_prompt(schema, instructions)), Message("user", text)]
    attempts: list[Attempt] = []
    for _ in range(max_repairs + 1):
        result = llm.chat(messages, max_tokens=max_tokens, temperature=temperature, **options)
        output, finish = result.text, result.finish_reason or "stop"
        value, error = _validate(schema, output)
        if error is not None:
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


def load_schema(ref: str) -> type[BaseModel]:
    """The pydantic model named by `FILE.py:Model` (a Python file, run as a module) or
    `module:Model` (an importable module; the current directory is searched first).
    Raises SchemaLoadError (an InputError) with one readable line."""
    from pydantic import BaseModel

    where, sep, name = ref.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise SchemaLoadError(f"--schema must be FILE.py:Model or module:Model, not {ref!r}")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _load_file(Path(where), ref)
    else:
        module = _import_module(where, ref)
    if not hasattr(module, name):
        models = sorted(k for k, v in vars(module).items()
                        if isinstance(v, type) and issubclass(v, BaseModel) and v is not BaseModel)
        raise SchemaLoadError(f"{where} has no {name!r} (pydantic models there: {', '.join(models) or 'none'})")
    schema = getattr(module, name)
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)) or schema is BaseModel:
        raise SchemaLoadError(f"{ref} is not a pydantic model (a subclass of pydantic.BaseModel) but "
                              f"{type(schema).__name__} {schema!r}")
    return schema


def _load_file(path: Path, ref: str):
    if not path.is_file():
        raise SchemaLoadError(f"schema file not found: {path}")
    module_name = f"_mmagent_schema_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SchemaLoadError(f"cannot load {path} as Python (expected FILE.py:Model)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves forward references through sys.modules
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise SchemaLoadError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None
    return module


def _import_module(name: str, ref: str):
    sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SchemaLoadError(f"cannot import module {name!r} of {ref!r}: {exc}") from None
    except Exception as exc:
        raise SchemaLoadError(f"cannot import module {name!r}: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(str(Path.cwd()))


def system_prompt(schema: type[BaseModel] | JsonSchema, instructions: str | None = None) -> str:
    """What the model is told: reply with JSON shaped like `template(schema)`, each described
    field's description, then `instructions`."""
    lines = ["Extract the requested fields from the text. Reply with one JSON object only, "
             f"shaped like this template: {template(schema)}"]
    if isinstance(schema, JsonSchema):
        described = schema.descriptions()
    else:
        described = [(name, field.description) for name, field in schema.model_fields.items() if field.description]
    if described:
        lines.append("Fields:")
        lines += [f"- {name}: {description}" for name, description in described]
    if instructions and instructions.strip():
        lines.append(instructions.strip())
    return "\n".join(lines)


def template(schema: type[BaseModel] | JsonSchema) -> str:
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
