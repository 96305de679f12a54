"""`mmagent run`: one request through a pipeline."""

from __future__ import annotations

import click

from .output import print_json


@click.command()
@click.argument("prompt", required=False, default="")
@click.option("--image", "images", multiple=True, metavar="PATH", help="An image (path, data URL or URL). Repeatable.")
@click.option("--audio", "audio", multiple=True, metavar="PATH", help="An audio file. Repeatable.")
@click.option("--pipeline", default="tools", show_default=True,
              help="tools (LLM + tools) or adapter (a vision-language model reads the images).")
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
def run(prompt: str, images: tuple[str, ...], audio: tuple[str, ...], pipeline: str, output: str, planner: str,
        as_json: bool, verbose: bool, out_dir: str, graph_target: str | None, stream_tokens: bool,
        thread: str | None, continue_: bool, no_log: bool) -> None:
    """Answer PROMPT about the given images and audio (a spoken question needs no PROMPT).

    Every run is a turn of a conversation thread: `-c` continues the last one, `--thread ID` a
    named one; `mmagent logs` lists them."""
    thread = _pick_thread(thread, continue_)
    result = _execute(prompt, images=images, audio=audio, pipeline=pipeline, output=output, planner=planner,
                      graph_target=graph_target, stream_tokens=stream_tokens and not as_json, thread=thread,
                      log=not no_log)
    files = result.save_outputs(out_dir) if result.outputs else []
    if as_json:
        print_json(result.to_json(files))
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
        if step.get("error"):
            click.echo(f"note: {step['tool']} skipped: {step['error']}", err=True)


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

    media = {k: options.pop(k) for k in ("images", "audio")}
    if graph_target:
        events = runner.run_graph(graph_target, prompt, thread=thread, tokens=stream_tokens, log=log, **media)
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


def _print_steps(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("tool", "backend", "model", "input", "seconds", "output", title=f"pipeline: {result.pipeline}",
                  title_justify="left")
    for s in result.steps:
        out = s.get("error") and f"[red]{s['error']}[/red]" or s.get("output", "")
        if isinstance(out, dict):
            out = f"{out['type']} {out['sha256'][:12]}"
        table.add_row(s["tool"], s.get("backend", "-"), str(s.get("model", "-")), str(s.get("input", "-")),
                      f"{s.get('seconds', 0):.2f}", str(out).replace("\n", " | ")[:80])
    Console(stderr=True).print(table)


COMMANDS = [run]
