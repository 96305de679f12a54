"""`mmagent route`: the router behind `--pipeline auto` — what it knows, refitting it from your own
eval runs, and what it would choose for a request."""

from __future__ import annotations

import click

from .output import print_json, print_table


@click.group()
def route() -> None:
    """The router (`--pipeline auto`): its measured competence, refitting it, its choices.

    \b
    mmagent route show                                  # the competence in use, per route and type
    mmagent route fit --from runs/scenes --from runs/ocr # learn from your eval runs
    mmagent route explain "What colour is the circle?" -a scene.png
    """


@route.command("fit")
@click.option("--from", "sources", multiple=True, required=True, metavar="EVAL_DIR",
              help="An `mmagent eval` output folder (results.jsonl). Repeatable.")
@click.option("--out", "out", type=click.Path(dir_okay=False),
              help="Where to write the competence (default: MMAGENT_HOME/router.json, which auto then uses).")
@click.option("--json", "as_json", is_flag=True, help="Print the fitted competence's summary as JSON.")
def fit_cmd(sources: tuple[str, ...], out: str | None, as_json: bool) -> None:
    """Learn which route answers which questions best from eval results.

    Every pipeline in the folders that is a route (not auto, not a FILE.py graph) gets its accuracy
    and per-item latency per question type; a small classifier learns the question type from the
    MiniLM question embedding and cheap image features. Run the same items through every route
    (`mmagent eval --pipelines tools,adapter,hybrid`) so the figures compare."""
    from ..config import load_settings
    from ..errors import BackendError
    from ..routing import fit
    from ..routing.competence import FITTED_NAME
    from ..toolbox import Toolbox

    settings = load_settings()
    toolbox = Toolbox(settings=settings)
    reason = toolbox.why_unavailable("embed")
    if reason:
        raise BackendError(f"route fit embeds the questions: {reason}")
    competence = fit(sources, toolbox.get("embed"))
    path = out or str(settings.home_path / FITTED_NAME)
    competence.save(path)
    if as_json:
        print_json({"out": path, **_summary(competence)})
        return
    _print(competence, f"wrote {path}")
    if out:
        click.echo(f"use it with [router] competence = \"{path}\" in mmagent.toml (or MMAGENT_ROUTER_COMPETENCE)")


@route.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(as_json: bool) -> None:
    """The competence auto routes by: where it comes from, and each route's accuracy per type."""
    from ..config import load_settings
    from ..routing import competence_path, load_competence

    settings = load_settings()
    path, origin = competence_path(settings)
    competence = load_competence(settings)
    info = {"file": str(path) if path else None, "origin": origin, "policy": settings.router.policy}
    if competence is None:
        if as_json:
            print_json({**info, "routes": {}})
            return
        click.echo("no competence file: every route is unmeasured (run mmagent route fit)")
        return
    if as_json:
        print_json({**info, **_summary(competence)})
        return
    _print(competence, f"{path} ({origin}); policy {settings.router.policy}")


@route.command("explain")
@click.argument("prompt", required=False, default="")
@click.option("-a", "--attach", "attachments", multiple=True, metavar="FILE", help="An image, audio or video file.")
@click.option("--policy", type=click.Choice(["quality", "latency", "local-only", "budget"]),
              help="The policy to choose by (default: [router] policy).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def explain_cmd(prompt: str, attachments: tuple[str, ...], policy: str | None, as_json: bool) -> None:
    """What auto would choose for PROMPT and the attachments, and why — without answering.

    A spoken question is transcribed (the router needs the question) and a video expanded;
    nothing else runs."""
    from ..config import load_settings
    from ..graphs_registry import get_graphs
    from ..runner import request_message
    from ..toolbox import Toolbox

    settings = load_settings(overrides={"router.policy": policy} if policy else None)
    message = request_message(prompt, attachments=attachments, settings=settings)
    graph = get_graphs().get("auto").compile(Toolbox(settings=settings))
    decision = None
    for update in graph.stream({"messages": [message]}, stream_mode="updates"):
        if "route" in update:
            decision = update["route"]["route"]
            break
    if decision is None:  # pragma: no cover - the router's first node always decides
        raise click.ClickException("the router made no decision")
    decision = {k: v for k, v in decision.items() if k != "message_id"}
    if as_json:
        print_json(decision)
        return
    click.echo(f"route: {decision['route']} ({decision['reason']}; policy {decision['policy']})")
    if decision.get("runner_up"):
        click.echo(f"runner-up: {decision['runner_up']}")
    if decision.get("question_type"):
        click.echo("question type: " + ", ".join(f"{t} {p:.2f}" for t, p in decision["question_type"].items()))
    click.echo(f"method: {decision['method']}")
    rows = [(name, s["accuracy"], "-" if s["latency_s"] is None else s["latency_s"],
             "yes" if s["measured"] else "no (prior)", "yes" if s["local"] else "no", s.get("unusable", ""))
            for name, s in decision["scores"].items()]
    print_table(("route", "expected accuracy", "expected s", "measured", "local", "cannot serve"), rows)
    for line in decision.get("downgrades", []):
        click.echo(f"downgrade: {line}")


def _summary(competence) -> dict:
    return {"embedder": competence.embedder, "classes": competence.classes, "checks": competence.checks,
            "sources": competence.sources, "routes": competence.routes}


def _print(competence, title: str) -> None:
    routes = list(competence.routes)
    types = sorted({t for table in competence.routes.values() for t in table["types"]})

    def cell(row):
        if not row:
            return "-"
        latency = "" if row.get("latency_s") is None else f" {row['latency_s']:.2f}s"
        return f"{100 * row['measured']:.0f}% of {row['n']}{latency}"

    rows = [(t, *[cell(competence.routes[r]["types"].get(t)) for r in routes]) for t in types]
    rows.append(("all", *[cell(competence.routes[r]) for r in routes]))
    print_table(("question type", *routes), rows, title=title)
    cv = competence.checks.get("type_accuracy_cv")
    click.echo(f"question-type classifier: {len(competence.classes)} types from {competence.checks.get('items')} items"
               + (f", {100 * cv:.1f}% right in {competence.checks.get('folds')}-fold cross-validation" if cv else ""))


COMMANDS = [route]
