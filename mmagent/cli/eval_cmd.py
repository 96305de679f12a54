"""`mmagent eval`: the same items through several pipelines; per-type accuracy, latency, memory,
paired statistics and the telephone loss, written to a folder with an HTML report."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click


def _split(value: str | None) -> list[str] | None:
    return [p for p in (value or "").split(",") if p.strip()] or None


@click.command("eval")
@click.option("--suite", metavar="NAME|FILE.yaml", help="A registered suite (see --list) or a suite file.")
@click.option("--data", metavar="FILE.jsonl|FOLDER|hf:ID",
              help="Your own items: a JSONL file, a saved `datasets` folder, or a Hugging Face dataset id.")
@click.option("--pipelines", metavar="A,B,...",
              help="Pipelines to compare: registered names (tools, adapter, ...) or FILE.py:graph. "
                   "Default: the suite's.")
@click.option("--out", "out", type=click.Path(file_okay=False), metavar="DIR",
              help="Where results.jsonl and the reports go (default: mmagent-eval/SUITE-TIME).")
@click.option("--limit", type=click.IntRange(1), metavar="N", help="At most N items (default: the suite's).")
@click.option("--batch-size", type=click.IntRange(1, 256), default=1, show_default=True, metavar="B",
              help="Items run at once; the VLM and LLM answer them in one batch.")
@click.option("--resume", is_flag=True, help="Continue the run in --out: items already done are skipped.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for generated suites and sampling.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: shard items over a Ray cluster (local unless --address).")
@click.option("--address", metavar="ADDR", help="Ray cluster address (with --engine ray; default: start one here).")
@click.option("--workers", type=click.IntRange(1), metavar="N", help="Ray workers (default: the cluster's CPUs).")
@click.option("--metric", metavar="NAME", help="Score with this metric instead of the suite's (see --list).")
@click.option("--field", "fields", multiple=True, metavar="FIELD=COLUMN",
              help="For --data datasets: which column holds question/answer/image/audio/type/id. Repeatable.")
@click.option("--compare", "compare", nargs=2, type=click.Path(file_okay=False), metavar="DIR_A DIR_B",
              help="Diff two result folders instead of running.")
@click.option("--list", "list_", is_flag=True, help="List the suites and metrics.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json (or the --compare diff) to stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def eval_(suite, data, pipelines, out, limit, batch_size, resume, seed, engine, address, workers, metric, fields,
          compare, list_, as_json, quiet) -> None:
    """Evaluate pipelines on the same items and compare them.

    \b
      mmagent eval --suite scenes-vqa --pipelines tools,adapter --limit 40
      mmagent eval --data my_items.jsonl --pipelines tools,adapter,mygraph.py:graph --out runs/mine
      mmagent eval --suite scenes-vqa --out runs/a --resume      # continue a killed run
      mmagent eval --compare runs/a runs/b

    Every finished (item, pipeline) is appended to DIR/results.jsonl at once; DIR also gets
    summary.json, report.md and a self-contained report.html. Bad data rows are reported with
    their line number and skipped. Exit 2 on bad input.
    """
    from .output import print_json, print_table
    from ..errors import InputError

    if list_:
        from ..eval import get_metrics, get_suites

        print_table(["suite", "metric", "pipelines", "description"],
                    [(s.name, s.metric, ",".join(s.pipelines), s.description) for s in get_suites()], title="suites")
        print_table(["metric", "correct at", "description"],
                    [(m.name, f"≥ {m.threshold:g}", m.description) for m in get_metrics()], title="metrics")
        return
    if compare:
        from ..eval.report import compare_runs, render_compare

        diff = compare_runs(*compare)
        print_json(diff) if as_json else click.echo(render_compare(diff))
        return
    if not suite and not data:
        raise InputError("give --suite NAME (see --list) or --data FILE.jsonl")
    from ..eval.data import parse_mapping
    from ..eval.report import render_table
    from ..eval.runner import run_eval

    label = Path(data).name if data else Path(suite).stem
    out = out or str(Path("mmagent-eval") / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}")
    show = _Progress(enabled=not quiet and sys.stderr.isatty())
    try:
        with show:
            run = run_eval(suite=suite, data=data, pipelines=_split(pipelines), out=out, limit=limit,
                           batch_size=batch_size, resume=resume, seed=seed, engine=engine, metric=metric,
                           mapping=parse_mapping(fields), address=address, workers=workers,
                           progress=show.update,
                           on_skipped=lambda bad: click.echo(f"skipped {bad}", err=True))
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: finished items are saved in {out}/results.jsonl; "
                   f"add --resume to continue", err=True)
        raise
    if as_json:
        print_json(run.summary)
        return
    click.echo(render_table(run.summary))
    errors = sum(p.get("errors", 0) for p in run.summary["pipelines"].values())
    if errors:
        click.echo(f"{errors} item(s) failed with an error (see 'error' in results.jsonl)", err=True)
    if run.skipped:
        click.echo(f"{len(run.skipped)} data row(s) skipped (listed in {out}/skipped.jsonl)", err=True)
    click.echo(f"report: {run.reports.get('html', Path(out) / 'report.html')}")


class _Progress:
    """Rich progress bars on a terminal (one per pipeline); a line per finished pipeline otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None
        self._tasks: dict[str, int] = {}
        self._reported: set[str] = set()

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True))
            self._bar.start()
        return self

    def update(self, pipeline: str, done: int, total: int) -> None:
        if self._bar is not None:
            if pipeline not in self._tasks:
                self._tasks[pipeline] = self._bar.add_task(pipeline, total=total)
            self._bar.update(self._tasks[pipeline], completed=done, total=total)
        elif done == total and pipeline not in self._reported:
            self._reported.add(pipeline)
            click.echo(f"{pipeline}: {done}/{total} items", err=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


COMMANDS = [eval_]
