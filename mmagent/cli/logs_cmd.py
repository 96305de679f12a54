"""`mmagent logs`: recent runs and conversation threads, with their media references."""

from __future__ import annotations

import datetime as _dt

import click

from .output import print_json


@click.command()
@click.option("-n", "--count", default=10, show_default=True, help="How many runs (or threads) to show.")
@click.option("--thread", metavar="ID", help="Only the runs of this thread.")
@click.option("--threads", "list_threads", is_flag=True, help="List threads instead of runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def logs(count: int, thread: str | None, list_threads: bool, as_json: bool) -> None:
    """Recent runs (newest first): prompt, answer, pipeline, thread and media references."""
    from ..threads import db_path, recent_runs, threads

    if count < 1:
        raise click.BadParameter("must be at least 1", param_hint="--count")
    if list_threads:
        rows = threads(count)
        if as_json:
            print_json(rows)
            return
        for r in rows:
            click.echo(f"{r['thread']}  {r['runs']} run(s)  last {_when(r['last'])}")
        if not rows:
            click.echo(f"no threads yet ({db_path()})", err=True)
        return
    runs = recent_runs(count, thread=thread)
    if as_json:
        print_json(runs)
        return
    if not runs:
        click.echo(f"no runs logged yet ({db_path()})", err=True)
    for r in reversed(runs):  # oldest first, like a conversation
        click.echo(f"## {_when(r['started'])}  thread {r['thread']}  pipeline {r['pipeline']}  {r['seconds']:.2f}s")
        click.echo("")
        click.echo(f"> {r['prompt']}" if r["prompt"] else "> (no prompt)")
        for m in r["media"]:
            click.echo(f"> [{m['type']}] {m['url']}")
        click.echo("")
        click.echo(r["answer"])
        for o in r["outputs"]:
            click.echo(f"[{o['type']} output] mmagent-media:sha256:{o['ref']['sha256']}")
        click.echo("")


def _when(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


COMMANDS = [logs]
