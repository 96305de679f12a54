"""`mmagent run`: one request through a pipeline."""

from __future__ import annotations

import click

from . import UserFacingError
from .output import print_json


@click.command()
@click.argument("prompt", required=False, default="")
@click.option("--image", "images", multiple=True, metavar="PATH", help="An image (path, data URL or URL). Repeatable.")
@click.option("--audio", "audio", multiple=True, metavar="PATH", help="An audio file. Repeatable.")
@click.option("-a", "--attach", "--attachment", "attachments", multiple=True, metavar="FILE",
              help="An image or audio file (the bytes tell which). Repeatable.")
@click.option("-m", "--model", "model_choices", multiple=True, metavar="ROLE=MODEL",
              help="This run's model for ROLE: a zoo name, a folder or a Hugging Face id "
                   "(-m llm=HuggingFaceTB/SmolLM2-360M-Instruct -m asr=tiny.en). Repeatable.")
@click.option("-b", "--backend", "backend_choices", multiple=True, metavar="ROLE=BACKEND",
              help="This run's backend for ROLE (-b llm=openai; see `mmagent backends`). Repeatable.")
@click.option("-s", "--system", metavar="TEXT", help="A system prompt.")
@click.option("--pipeline", default="auto", show_default=True,
              help="auto: the router sends each request to the route that answers it best; or a route by "
                   "name: tools (LLM + tools), adapter (a VLM reads the images), hybrid (VLM + OCR), "
                   "unified (an API model), or any registered graph (mmagent graphs).")
@click.option("--policy", type=click.Choice(["quality", "latency", "local-only", "budget"]),
              help="How auto chooses among routes that can serve (default: [router] policy, else quality).")
@click.option("--output", type=click.Choice(["auto", "text", "image", "speech"]), default="auto", show_default=True,
              help="Answer modality; auto follows the request.")
@click.option("--planner", type=click.Choice(["auto", "rules", "llm"]), default="auto", show_default=True,
              help="rules: deterministic; llm: the chat model calls tools (needs tool calling).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: answer, pipeline, plan, steps ...")
@click.option("-v", "--verbose", is_flag=True, help="Also show every step (tool, backend, time, output).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="mmagent-out", show_default=True,
              help="Where generated images and audio are written.")
@click.option("--graph", "graph_target", metavar="FILE.py:ATTR",
              help="Run any LangGraph graph whose state has 'messages' (FILE.py:ATTR or module:attr).")
@click.option("--stream", "stream_tokens", is_flag=True,
              help="Print the answer's tokens as they arrive (steps on stderr).")
@click.option("--thread", metavar="ID", help="Continue (or start) the conversation thread ID.")
@click.option("-c", "--continue", "continue_", is_flag=True, help="Continue the most recent thread.")
@click.option("--no-log", is_flag=True, help="Do not record this run for `mmagent logs`.")
def run(prompt: str, images: tuple[str, ...], audio: tuple[str, ...], attachments: tuple[str, ...],
        model_choices: tuple[str, ...], backend_choices: tuple[str, ...], system: str | None, pipeline: str,
        policy: str | None, output: str, planner: str,
        as_json: bool, verbose: bool, out_dir: str, graph_target: str | None, stream_tokens: bool,
        thread: str | None, continue_: bool, no_log: bool) -> None:
    """Answer PROMPT about the given images and audio (a spoken question needs no PROMPT).

    Piped stdin is read too (`echo question | mmagent run`), before PROMPT when both are given,
    as llm does; `mmagent run -` reads the prompt from stdin only.

    Every run is a turn of a conversation thread: `-c` continues the last one, `--thread ID` a
    named one; `mmagent logs` lists them."""
    settings = settings_for_run(model_choices, backend_choices, {"router.policy": policy} if policy else None)
    prompt = prompt_with_stdin(prompt, max_chars=settings.limits.max_prompt_chars)
    thread = _pick_thread(thread, continue_)
    result = _execute(prompt, images=images, audio=audio, pipeline=pipeline, output=output, planner=planner,
                      attachments=attachments, settings=settings, system=system or None,
                      graph_target=graph_target, stream_tokens=stream_tokens and not as_json, thread=thread,
                      log=not no_log)
    files = result.save_outputs(out_dir) if result.outputs else []
    failed_step, missing = missing_output(result)
    if as_json:
        print_json(result.to_json(files))
        if missing:
            raise UserFacingError(missing)
        return
    if verbose:
        _print_steps(result)
    if result.streamed:
        click.echo("")  # the tokens are out; end the line
    else:
        click.echo(result.answer)
    for path in files:
        click.echo(f"wrote {path}", err=True)
    for step in result.steps:
        if step.get("error") and step is not failed_step:
            click.echo(f"note: {step['tool']} skipped: {step['error']}", err=True)
    if missing:
        raise UserFacingError(missing)


def _pick_thread(thread: str | None, continue_: bool) -> str:
    from ..errors import InputError
    from ..threads import last_thread, new_thread_id

    if thread and continue_:
        raise InputError("use either --thread ID or -c (continue the last thread), not both")
    if continue_:
        last = last_thread()
        if last is None:
            raise InputError("no earlier thread to continue (see mmagent logs)")
        return last
    return thread or new_thread_id()


def _execute(prompt: str, *, graph_target: str | None, stream_tokens: bool, thread: str, log: bool, **options):
    """Run the request (a pipeline, or a user's graph), echoing tokens and steps when streaming."""
    import sys

    from .. import runner

    media = {k: options.pop(k) for k in ("images", "audio", "attachments")}
    if graph_target:
        _export_role_choices(options["settings"])
        events = runner.run_graph(graph_target, prompt, thread=thread, tokens=stream_tokens, log=log,
                                  system=options.get("system"), settings=options["settings"], **media)
    else:
        events = runner.stream(prompt, thread=thread, tokens=stream_tokens, log=log, **media, **options)
    result = None
    for kind, value in events:
        if kind == "token" and stream_tokens:
            sys.stdout.write(value)
            sys.stdout.flush()
        elif kind == "step" and stream_tokens:
            what = value.get("name") or value["tool"]
            detail = f"error: {value['error']}" if value.get("error") else f"{value.get('seconds', 0):.2f}s"
            click.echo(f"[{what}] {detail}", err=True)
        elif kind == "result":
            result = value
    return result


def _export_role_choices(settings) -> None:
    """`-m`/`-b` for a user's graph: the graph builds its own backends from the configuration, so
    this run's choices go into the process environment (MMAGENT_<ROLE>_MODEL / _BACKEND), which
    the configuration reads — this process only."""
    import os

    for key, source in settings.sources.items():
        parts = key.split(".")
        if source == "argument" and len(parts) == 3 and parts[0] == "roles" and parts[2] in ("model", "backend"):
            os.environ[f"MMAGENT_{parts[1].upper()}_{parts[2].upper()}"] = str(getattr(settings.role(parts[1]), parts[2]))


def _print_steps(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("tool", "backend", "model", "input", "seconds", "output", title=f"pipeline: {result.pipeline}" + (f" -> {result.route['route']} ({result.route['reason']})"
                                                                if result.route else ""),
                  title_justify="left")
    for s in result.steps:
        out = s.get("error") and f"[red]{s['error']}[/red]" or s.get("output", "")
        if isinstance(out, dict):
            out = f"{out['type']} {out['sha256'][:12]}"
        table.add_row(s["tool"], s.get("backend", "-"), str(s.get("model", "-")), str(s.get("input", "-")),
                      f"{s.get('seconds', 0):.2f}", str(out).replace("\n", " | ")[:80])
    Console(stderr=True).print(table)


# -- habits: models and backends for one run, a prompt from stdin, a missing output fails --------------


def settings_for_run(model_choices: tuple[str, ...] = (), backend_choices: tuple[str, ...] = (),
                     more: dict | None = None):
    """Settings with `-m ROLE=MODEL` and `-b ROLE=BACKEND` applied (the role's `model` and `backend`
    for this run only). A malformed value is one line and exit 2; a chosen model that cannot be had
    here (not installed, no such folder, not cached while the hub is unreachable) fails before any
    model loads, in one line."""
    from ..config import load_settings

    overrides = {**_role_overrides(backend_choices, "-b", "backend", "llm=openai"),
                 **_role_overrides(model_choices, "-m", "model", "llm=HuggingFaceTB/SmolLM2-360M-Instruct"),
                 **(more or {})}
    settings = load_settings(overrides=overrides)
    roles = list(dict.fromkeys(key.split(".")[1] for key in overrides if key.startswith("roles.")))
    for role in roles:
        _check_chosen(role, settings)
    return settings


def _role_overrides(values: tuple[str, ...], option: str, field: str, example: str) -> dict[str, str]:
    import re

    from ..backends.registry import get_registry
    from ..errors import InputError

    overrides: dict[str, str] = {}
    registry = get_registry()
    roles = sorted({e.role for e in registry.list()})
    for value in values:
        role, sep, choice = value.partition("=")
        role, choice = role.strip(), choice.strip()
        if not sep or not role or not choice or not re.fullmatch(r"[a-z][a-z0-9_]*", role):
            raise InputError(f"{option} wants ROLE={field.upper()} (e.g. {option} {example}), not {value!r}")
        if role not in roles:
            raise InputError(f"{option} {value}: no role '{role}' (roles: {', '.join(roles) or 'none'})")
        key = f"roles.{role}.{field}"
        if key in overrides:
            raise InputError(f"{option} names role '{role}' twice")
        if field == "backend" and not any(e.name == choice for e in registry.list(role)):
            names = ", ".join(e.name for e in registry.list(role))
            raise InputError(f"{option} {value}: no backend '{choice}' for role '{role}' (registered: {names})")
        overrides[key] = choice
    return overrides


def _check_chosen(role: str, settings) -> None:
    """Raise `BackendError` when the backend and model chosen for `role` cannot run here. A model
    that is only missing locally passes while the hub can be reached (it will be downloaded)."""
    from ..backends.base import model_unavailable_reason
    from ..backends.registry import get_registry
    from ..errors import BackendError
    from ..zoo import get_zoo

    backend = get_registry().create(role, settings=settings)
    reason = backend.unavailable_reason()
    if reason is None:
        return
    model, what = str(backend.model_id or ""), f"{backend.role}/{backend.name}"
    downloadable = (reason == model_unavailable_reason(backend.model_id) and model not in get_zoo().specs
                    and not model.startswith((".", "/", "~")))
    if downloadable:
        from ..hf_hub import hub_unreachable_reason

        offline = hub_unreachable_reason()
        if offline is None:
            return
        if model.count("/") == 1:
            raise BackendError(f"{what}: {model!r} is not in the local Hugging Face cache and the hub cannot be "
                               f"reached ({offline})")
        raise BackendError(f"{what}: {reason}, and it cannot be downloaded here ({offline})")
    raise BackendError(reason if reason.startswith(what) else f"{what}: {reason}")


def prompt_with_stdin(prompt: str, max_chars: int | None = None) -> str:
    """The prompt with piped stdin, as llm combines them: stdin, a space, then PROMPT. `-` reads
    stdin only. Stdin is read when it is a pipe or a file (never a terminal or /dev/null);
    undecodable bytes become U+FFFD. With `max_chars`, stdin is read no further than that many
    characters could take (a PromptTooLongError past it, before the rest is read)."""
    import sys

    stream = getattr(sys.stdin, "buffer", None)  # None: no stdin at all (closed, pythonw)
    if stream is None:
        return "" if prompt == "-" else prompt
    if prompt == "-":
        return _read_text(stream, max_chars)
    if not _piped(stream):
        return prompt
    piped = _read_text(stream, max_chars)
    if not piped:
        return prompt
    return f"{piped} {prompt}" if prompt else piped


def _piped(stream) -> bool:
    import os
    import stat

    try:
        if stream.isatty():
            return False
        mode = os.fstat(stream.fileno()).st_mode
    except (AttributeError, OSError, ValueError):  # an in-memory stream (tests, embedding): read it
        return True
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def _read_text(stream, max_chars: int | None = None) -> str:
    if max_chars is None:
        return stream.read().decode("utf-8-sig", errors="replace")
    from ..errors import PromptTooLongError

    limit = max_chars * 4 + 3  # UTF-8: at most 4 bytes a character, and a byte-order mark
    data = stream.read(limit + 1)
    text = data[:limit].decode("utf-8-sig", errors="replace")
    if len(data) > limit or len(text) > max_chars:
        raise PromptTooLongError(f"the prompt on stdin is over the cap of {max_chars} characters "
                                 f"([limits] max_prompt_chars, MMAGENT_LIMITS_MAX_PROMPT_CHARS)")
    return text


def missing_output(result) -> tuple[dict | None, str | None]:
    """(the failing step, one line saying why) when the plan asked for an image or speech and
    none was made; (None, None) otherwise."""
    kind = (result.plan or {}).get("output")
    if kind not in ("image", "speech") or any(p.type == ("image" if kind == "image" else "audio")
                                              for p in result.outputs):
        return None, None
    makers = ("image_gen", "generate_image") if kind == "image" else ("tts", "speak")
    failed = [s for s in result.steps if s.get("error") and (s.get("tool") in makers or s.get("name") in makers)]
    step = failed[-1] if failed else None
    why = step["error"] if step else f"no {makers[0]} step ran"
    return step, f"no {kind} was made: {' '.join(str(why).split())}"


COMMANDS = [run]
