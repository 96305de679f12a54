"""`mmagent models list|prepare|add|remove`: the offline model zoo, and models the user adds to it."""

from __future__ import annotations

import click

from .output import print_json, print_table


@click.group()
def models() -> None:
    """The offline model zoo: what each role uses and whether it is ready; add your own models."""


@models.command("list")
@click.option("--verify", is_flag=True, help="Re-hash every file (slow for big models).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_models(verify: bool, as_json: bool) -> None:
    """List zoo models: role, source, status (ready, missing, corrupt, unavailable) and folder."""
    from ..zoo import get_zoo

    zoo = get_zoo()
    data = [
        {"name": s.name, "role": s.role, "status": zoo.status(s.name, verify=verify), "source": s.source,
         "path": str(zoo.path(s.name)), "description": s.description}
        for s in zoo.specs.values()
    ]
    if as_json:
        print_json(data)
    elif not data:
        click.echo("No models registered (see `mmagent plugins`).")
    else:
        print_table(("model", "role", "status", "source", "path"),
                    [(d["name"], d["role"], d["status"], d["source"], d["path"]) for d in data])


@models.command()
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even if ready.")
def prepare(names: tuple[str, ...], force: bool) -> None:
    """Make zoo models ready offline (all available ones when no NAMES). Idempotent."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ..zoo import Reporter, get_zoo

    zoo = get_zoo()
    # User models are copied in by `models add`, never built: not part of "all".
    wanted = list(names) or [n for n, s in zoo.specs.items()
                             if s.added_from is None and zoo.status(n) != "unavailable"]
    for name in wanted:
        zoo.spec(name)  # unknown names fail before any work starts
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  transient=False) as progress:
        for name in wanted:
            task = progress.add_task(f"{name}: checking", total=1.0)

            class _Report(Reporter):
                def step(self, message: str, fraction: float | None = None, _task=task, _name=name) -> None:
                    progress.update(_task, description=f"{_name}: {message}",
                                    completed=fraction if fraction is not None else None)

            folder = zoo.prepare(name, force=force, report=_Report())
            progress.update(task, description=f"{name}: ready ({folder})", completed=1.0)


@models.command("add")
@click.argument("name")
@click.argument("path")
@click.option("--role", metavar="ROLE", help="The role it plays (vlm, llm, asr ...); inferred from config.json "
              "when not given.")
@click.option("--description", metavar="TEXT", help="A description for `mmagent models list --json`.")
@click.option("--force", is_flag=True, help="Replace a model added earlier under NAME.")
def add(name: str, path: str, role: str | None, description: str | None, force: bool) -> None:
    """Copy the model folder PATH (saved by transformers: config.json) into the zoo as NAME.

    Then `-m ROLE=NAME` and `[roles.ROLE] model = "NAME"` use it, like a built-in model, even
    after PATH is deleted. E.g. `mmagent models add my-vlm ad/model` after `mmagent train adapter`.
    """
    from ..zoo import get_zoo

    zoo = get_zoo()
    spec = zoo.add_user_model(name, path, role=role, description=description, force=force)
    click.echo(f"Added {name} ({spec.role}) at {zoo.path(name)}; use it with -m {spec.role}={name}")


@models.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Forget a model added with `mmagent models add` and delete its copy (PATH is left alone)."""
    from ..zoo import get_zoo

    get_zoo().remove_user_model(name)
    click.echo(f"Removed {name}")


COMMANDS = [models]
