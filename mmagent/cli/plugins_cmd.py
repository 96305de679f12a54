"""`mmagent plugins` and `mmagent backends`."""

from __future__ import annotations

import click

from .output import print_json, print_table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json: bool) -> None:
    """List plugins: what each provides, where it comes from, and load errors."""
    from ..backends.registry import get_registry
    from ..plugin_manager import get_plugins
    from ..zoo import get_zoo

    get_registry()  # runs register_backends and register_models, so 'provides' and errors are complete
    get_zoo()
    infos = list(get_plugins().infos.values())
    if as_json:
        print_json([info.to_dict() for info in infos])
        return
    if not infos:
        click.echo("No plugins.")
        return
    rows = [
        (
            info.name,
            ", ".join(info.provides) or "-",
            f"{info.package or '-'} {info.version or ''}".strip() + f" ({info.source})",
            "ok" if info.status == "ok" else "error: " + "; ".join(info.errors),
        )
        for info in infos
    ]
    print_table(("plugin", "provides", "package", "status"), rows)


@click.command()
@click.option("--role", help="Only this role (asr, ocr, llm, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def backends(role: str | None, as_json: bool) -> None:
    """List registered backends by role, with their default model and missing requirements."""
    from ..backends.registry import get_registry

    entries = get_registry().list(role)
    data = [
        {
            "role": e.role, "name": e.name, "plugin": e.plugin, "default_model": e.cls.default_model,
            "accepts": list(e.cls.accepts), "produces": list(e.cls.produces),
            "missing": e.missing_requirements(), "description": e.cls.description,
        }
        for e in entries
    ]
    if as_json:
        print_json(data)
        return
    if not data:
        click.echo("No backends registered" + (f" for role '{role}'." if role else "."))
        return
    rows = [
        (d["role"], d["name"], d["default_model"] or "-", " + ".join(d["accepts"]) + " -> " + " + ".join(d["produces"]),
         d["plugin"], "missing: " + ", ".join(d["missing"]) if d["missing"] else "ready")
        for d in data
    ]
    print_table(("role", "name", "default model", "io", "plugin", "status"), rows)


COMMANDS = [plugins, backends]
