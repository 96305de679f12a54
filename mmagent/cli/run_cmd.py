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
def run(prompt: str, images: tuple[str, ...], audio: tuple[str, ...], pipeline: str, output: str, planner: str,
        as_json: bool, verbose: bool, out_dir: str) -> None:
    """Answer PROMPT about the given images and audio (a spoken question needs no PROMPT)."""
    from ..runner import run as run_request

    result = run_request(prompt, images=images, audio=audio, pipeline=pipeline, output=output, planner=planner)
    files = result.save_outputs(out_dir) if result.outputs else []
    if as_json:
        print_json(result.to_json(files))
        return
    if verbose:
        _print_steps(result)
    click.echo(result.answer)
    for path in files:
        click.echo(f"wrote {path}", err=True)
    for step in result.steps:
        if step.get("error"):
            click.echo(f"note: {step['tool']} skipped: {step['error']}", err=True)


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
