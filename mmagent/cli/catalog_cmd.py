"""`mmagent graphs` and `mmagent tools`: what can run, from mmagent and its plugins."""

from __future__ import annotations

import click

from .output import print_json, print_table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def graphs(as_json: bool) -> None:
    """Registered graphs (pipelines): `mmagent run --pipeline NAME`, `ChatMMAgent(pipeline=NAME)`.
    A graph with a brain (the role that answers) is a route `--pipeline auto` chooses among."""
    from ..graphs_registry import get_graphs

    registry = get_graphs()
    rows = [{"name": g.name, "description": g.description, "needs": list(g.roles), "plugin": registry.owners[g.name],
             "route": g.brain is not None, "brain": g.brain, "needs_media": list(g.needs), "extends": g.extends,
             "builder": g.builder if isinstance(g.builder, str) else repr(g.builder)} for g in registry.list()]
    if as_json:
        print_json(rows)
        return
    print_table(["name", "needs", "route (brain)", "plugin", "description"],
                [(r["name"], ", ".join(r["needs"]), r["brain"] or "-", r["plugin"], r["description"]) for r in rows])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with each tool's argument schema).")
def tools(as_json: bool) -> None:
    """Registered tools: what agents (and LangChain, through mmagent.langchain.as_tools) can call."""
    from ..toolbox import Toolbox
    from ..tools import get_tools

    registry = get_tools()
    box = Toolbox()
    rows = []
    for t in registry.list():
        reason = box.why_unavailable(t.role) if t.role else None
        rows.append({"name": t.name, "role": t.role, "reads": t.file_kind, "produces": t.produces,
                     "plugin": registry.owners[t.name], "status": "ready" if reason is None else reason,
                     "description": t.description, "parameters": t.parameters})
    if as_json:
        print_json(rows)
        return
    print_table(["name", "role", "reads", "status", "description"],
                [(r["name"], r["role"] or "-", r["reads"] or "-", r["status"], r["description"]) for r in rows])


COMMANDS = [graphs, tools]
