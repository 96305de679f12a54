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
    """List registered backends by role: the model each would use here and whether it is ready
    (its libraries installed and its model on this machine) or what is missing."""
    from ..backends.registry import get_registry
    from ..config import load_settings

    registry, settings = get_registry(), load_settings()
    data = []
    for e in registry.list(role):
        model, ready, status = backend_status(registry, e, settings)
        data.append({
            "role": e.role, "name": e.name, "plugin": e.plugin, "model": model, "default_model": e.cls.default_model,
            "accepts": list(e.cls.accepts), "produces": list(e.cls.produces), "ready": ready, "status": status,
            "missing": e.missing_requirements(), "description": e.cls.description,
        })
    if as_json:
        print_json(data)
        return
    if not data:
        click.echo("No backends registered" + (f" for role '{role}'." if role else "."))
        return
    rows = [
        (d["role"], d["name"], d["model"] or "-", " + ".join(d["accepts"]) + " -> " + " + ".join(d["produces"]),
         d["plugin"], d["status"])
        for d in data
    ]
    print_table(("role", "name", "model", "io", "plugin", "status"), rows)


def backend_status(registry, entry, settings) -> tuple[str | None, bool, str]:
    """(model, ready, status) of a registered backend as configured here, checked without loading
    anything. Ready: its libraries are installed and its model is on this machine (a built zoo
    model, an existing folder, a Hugging Face id in the local cache). Otherwise the status says
    what is missing: "needs install: ...", "zoo: build with mmagent models prepare NAME",
    "not downloaded ...", "not found: PATH", or the backend's own reason (an API key)."""
    from ..backends.base import model_unavailable_reason
    from ..zoo import get_zoo

    missing = entry.missing_requirements()
    try:
        backend = registry.create(entry.role, entry.name, settings=settings)
    except Exception as exc:  # a plugin's constructor that fails is reported, not raised
        return entry.cls.default_model, False, f"error: {type(exc).__name__}: {' '.join(str(exc).split())}"
    model = backend.model_id
    if missing:
        return model, False, "needs install: " + ", ".join(missing)
    zoo = get_zoo()
    if model in zoo.specs:
        state = zoo.status(model)
        if state == "ready":
            return model, True, "ready"
        if state == "unavailable":
            spec = zoo.spec(model)
            return model, False, f"needs install: {spec.install_hint or spec.source} (zoo model {model})"
        return model, False, f"zoo: build with mmagent models prepare {model}"
    reason = backend.unavailable_reason()
    if reason is None:
        return model, True, "ready"
    if model and reason == model_unavailable_reason(model):
        if model.startswith((".", "/", "~")):
            return model, False, f"not found: {model}"
        return model, False, "not downloaded (not in the Hugging Face cache)"
    return model, False, " ".join(reason.split())


COMMANDS = [plugins, backends]
