"""`mmagent config`: the effective configuration and where each value came from."""

from __future__ import annotations

import click

from .output import print_json, print_table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "show_all", is_flag=True, help="Also show roles nobody configured.")
def config(as_json: bool, show_all: bool) -> None:
    """Show the effective configuration and the source of each value."""
    from ..config import config_files, load_settings

    settings = load_settings()
    files = [str(p) for p in config_files()]
    values = settings.flat()
    shown = {
        key: value for key, value in values.items()
        if show_all or not key.startswith("roles.") or settings.sources.get(key) != "default"
    }
    if as_json:
        print_json({"files": files, "values": {k: {"value": _plain(v), "source": settings.sources.get(k, "default")}
                                                for k, v in shown.items()}})
        return
    click.echo("Files read: " + (", ".join(files) if files else "none (defaults and environment only)"))
    print_table(("key", "value", "source"),
                [(k, _plain(v), settings.sources.get(k, "default")) for k, v in shown.items()])


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "items"):
        return dict(value)
    return value


COMMANDS = [config]
