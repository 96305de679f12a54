"""`mmagent extract`: fill a pydantic schema from images (OCR), audio (ASR) and text with the LLM."""

from __future__ import annotations

import sys
import time

import click


@click.command()
@click.argument("prompt", required=False, default="")
@click.option("--schema", "schema_ref", required=True, metavar="FILE.py:Model",
              help="The pydantic model to fill: FILE.py:Model or module:Model.")
@click.option("--image", "images", multiple=True, metavar="PATH", help="An image, read by OCR. Repeatable.")
@click.option("--audio", "audio", multiple=True, metavar="PATH", help="An audio file, transcribed. Repeatable.")
@click.option("--llm", "llm_model", metavar="MODEL", help="The LLM for this run (zoo name, local path or HF id).")
@click.option("--repairs", type=click.IntRange(0, 10), default=2, show_default=True,
              help="How many times invalid JSON is sent back with its errors.")
@click.option("--max-tokens", type=click.IntRange(1, 8192), default=256, show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="Also show the text sent, each attempt and the time (stderr).")
def extract(prompt: str, schema_ref: str, images: tuple[str, ...], audio: tuple[str, ...], llm_model: str | None,
            repairs: int, max_tokens: int, verbose: bool) -> None:
    """Fill a pydantic schema and print it as JSON.

    Images go through OCR and audio through speech recognition; their text goes to the LLM, with
    PROMPT as extra instructions (without images or audio, PROMPT is the text to extract from).
    Local transformers models and OpenAI-compatible servers decode under the schema's JSON schema.

    Exit 1 when no valid object came out (every attempt is printed), 2 on bad input.
    """
    from ..backends import get_backend
    from ..config import load_settings
    from ..content.sources import load_media
    from ..errors import InputError
    from ..extract import ExtractionError, load_schema
    from ..extract import extract as run_extract
    from ..runner import check_prompt_chars, clean_text
    from ..tools import call_tool

    schema = load_schema(schema_ref)
    prompt = clean_text(prompt)
    check_prompt_chars(len(prompt), load_settings())
    if not images and not audio and not prompt.strip():
        raise InputError("nothing to extract from: give --image, --audio or the text as PROMPT")
    # Every input is checked (and stored) before any model loads.
    media = [(path, load_media(path, expect="image"), "read_text") for path in images]
    media += [(path, load_media(path, expect="audio"), "transcribe") for path in audio]
    llm = get_backend("llm", **({"model": llm_model} if llm_model else {}))
    if llm_model:
        reason = llm.unavailable_reason()
        if reason:
            raise InputError(f"--llm {llm_model}: {reason}")

    start = time.perf_counter()
    sections = [(path, call_tool(tool, {"file": part.ref.uri}).text) for path, part, tool in media]
    if not sections:
        text, instructions = prompt, None
    elif len(sections) == 1:
        text, instructions = sections[0][1], prompt
    else:
        text, instructions = "\n\n".join(f"From {path}:\n{body}" for path, body in sections), prompt
    if verbose:
        click.echo(f"text sent to llm/{llm.name} ({llm.model_id}):\n{text}", err=True)
    read_seconds = time.perf_counter() - start
    try:
        result = run_extract(schema, text, llm, max_repairs=repairs, max_tokens=max_tokens, instructions=instructions)
    except ExtractionError as exc:
        click.echo(f"Error: {exc}", err=True)
        _print_attempts(exc.attempts)
        sys.exit(1)
    seconds = time.perf_counter() - start
    click.echo(result.value.model_dump_json(indent=2))
    if verbose:
        _print_attempts(result.attempts)
        how = "decoded under the schema" if result.constrained else "schema in the prompt only"
        click.echo(f"{len(result.attempts)} attempt(s), {how}; {seconds:.2f} s "
                   f"({read_seconds:.2f} s reading the inputs)", err=True)


def _print_attempts(attempts) -> None:
    for i, attempt in enumerate(attempts, 1):
        click.echo(f"attempt {i}: {attempt.output!r}", err=True)
        click.echo(f"  error: {attempt.error}" if attempt.error else "  valid", err=True)


COMMANDS = [extract]
