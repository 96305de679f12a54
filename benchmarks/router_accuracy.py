"""Routing by measured competence: does `auto` answer at least as well as the best single route,
per question type, on the same items?

Reads EVAL_DIR/results.jsonl (what `mmagent eval --pipelines tools,adapter,hybrid,auto` writes:
item_id, pipeline, type, correct, seconds, batch_size, and on auto's rows the route it chose) and
prints, per question type: n, each pipeline's accuracy, the best single route, whether auto is at
least as accurate as it (✓/✗), and how often auto chose each route; then the same overall, with the
accuracy a perfect per-type choice would reach (the best route of each type: an oracle that knows
the type). Only paired items count: those that every listed pipeline answered without an error.

    .venv/bin/python benchmarks/router_accuracy.py EVAL_DIR [--pipelines tools,adapter,hybrid,auto] [--markdown]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

from mmagent.eval.results import RESULTS, read_rows

ROUTER = "auto"
#: The order pipelines are listed in (others follow in the order they first appear).
ORDER = ("tools", "adapter", "hybrid", "unified", ROUTER)


def load(folder: Path, pipelines: list[str] | None) -> tuple[list[str], dict[str, dict[str, dict]], dict]:
    """(pipelines, {item_id: {pipeline: row}} for the paired items, counts of what was left out)."""
    rows = read_rows(folder / RESULTS)
    if not rows:
        raise SystemExit(f"{folder}: no {RESULTS} rows")
    seen: list[str] = []
    for row in rows:
        if row["pipeline"] not in seen:
            seen.append(str(row["pipeline"]))
    if pipelines is None:
        pipelines = [p for p in ORDER if p in seen] + [p for p in seen if p not in ORDER]
    missing = [p for p in pipelines if p not in seen]
    if missing:
        raise SystemExit(f"{folder}/{RESULTS} has no rows for {', '.join(missing)} (it has {', '.join(seen)})")
    by_item: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:  # a resumed run may repeat a row: the last one counts
        if row["pipeline"] in pipelines:
            by_item[str(row["item_id"])][str(row["pipeline"])] = row
    paired = {item: answers for item, answers in by_item.items()
              if all(p in answers and not answers[p].get("error") for p in pipelines)}
    left_out = {"items": len(by_item), "paired": len(paired),
                "errors": sum(1 for a in by_item.values() for r in a.values() if r.get("error"))}
    return pipelines, paired, left_out


def summarise(pipelines: list[str], paired: dict[str, dict[str, dict]]):
    """Per type (and "all"): n, correct per pipeline, auto's route choices."""
    types: dict[str, dict] = defaultdict(lambda: {"n": 0, "correct": Counter(), "chose": Counter(),
                                                  "chose_right": Counter()})
    for answers in paired.values():
        kind = str(next(iter(answers.values())).get("type") or "other")
        for key in (kind, None):
            entry = types[key]
            entry["n"] += 1
            for p in pipelines:
                entry["correct"][p] += bool(answers[p].get("correct"))
            if ROUTER in answers:
                route = str(answers[ROUTER].get("route") or "?")
                entry["chose"][route] += 1
                entry["chose_right"][route] += bool(answers[ROUTER].get("correct"))
    overall = types.pop(None)
    return dict(sorted(types.items())), overall


def table(pipelines: list[str], per_type: dict[str, dict], overall: dict, markdown: bool) -> str:
    singles = [p for p in pipelines if p != ROUTER]
    has_router = ROUTER in pipelines
    header = ["type", "n", *pipelines, "best single route"]
    if has_router:
        header += ["auto ≥ best", "auto chose"]

    def pct(correct: int, n: int) -> str:
        return f"{100 * correct / n:.1f}%" if n else "—"

    def line(name: str, entry: dict, bold: bool = False) -> list[str]:
        n = entry["n"]
        best_count = max(entry["correct"][p] for p in singles) if singles else 0
        best = [p for p in singles if entry["correct"][p] == best_count]
        cells = [name, str(n)]
        for p in pipelines:
            cell = pct(entry["correct"][p], n)
            cells.append(f"**{cell}**" if markdown and p in best else cell)
        cells.append(f"{' = '.join(best)} ({pct(best_count, n)})")
        if has_router:
            cells.append("✓" if entry["correct"][ROUTER] >= best_count else "✗")
            chose = entry["chose"]
            cells.append(", ".join(f"{route} {count}" for route, count in chose.most_common()) or "—")
        if bold and markdown:
            cells[0] = f"**{name}**"
        return cells

    body = [line(name, entry) for name, entry in per_type.items()]
    body.append(line("all", overall, bold=True))
    if markdown:
        out = ["| " + " | ".join(header) + " |",
               "|" + "|".join("---" if i == 0 or h in ("best single route", "auto chose") else "---:"
                              for i, h in enumerate(header)) + "|"]
        out += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(out)
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    rows = [header, ["-" * w for w in widths], *body[:-1], ["-" * w for w in widths], body[-1]]
    return "\n".join("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in
                               enumerate(zip(r, widths))) for r in rows)


def verdict(pipelines: list[str], per_type: dict[str, dict], overall: dict) -> list[str]:
    """The targets, one line each: auto ≥ the best single route on every type; overall above
    tools and adapter; and the per-type oracle for reference."""
    if ROUTER not in pipelines:
        return ["no auto rows: nothing to compare the routes with"]
    singles = [p for p in pipelines if p != ROUTER]
    n = overall["n"]
    lines = []
    behind = [(name, e) for name, e in per_type.items() if e["correct"][ROUTER] < max(e["correct"][p] for p in singles)]
    if behind:
        lines.append("auto is behind the best single route on " + "; ".join(
            f"{name} ({e['correct'][ROUTER]}/{e['n']} vs {max(e['correct'][p] for p in singles)}/{e['n']})"
            for name, e in behind))
    else:
        lines.append(f"auto ≥ the best single route on every type ({len(per_type)} types)")
    auto = overall["correct"][ROUTER]
    for p in ("tools", "adapter"):
        if p in singles:
            mark = "above" if auto > overall["correct"][p] else ("equal to" if auto == overall["correct"][p] else "below")
            lines.append(f"overall auto {auto}/{n} is {mark} {p} {overall['correct'][p]}/{n}")
    oracle = sum(max(e["correct"][p] for p in singles) for e in per_type.values())
    lines.append(f"best route per type (an oracle that knows the type): {oracle}/{n} = {100 * oracle / n:.1f}%; "
                 f"auto {auto}/{n} = {100 * auto / n:.1f}%")
    chose = overall["chose"]
    lines.append("auto chose: " + ", ".join(
        f"{route} {count} ({overall['chose_right'][route]} right)" for route, count in chose.most_common()))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", type=Path, help="an `mmagent eval --out` folder")
    parser.add_argument("--pipelines", help="comma-separated; default: every pipeline in the file")
    parser.add_argument("--markdown", action="store_true", help="markdown tables (for docs/benchmarks.md)")
    args = parser.parse_args(argv)
    wanted = [p.strip() for p in args.pipelines.split(",") if p.strip()] if args.pipelines else None
    pipelines, paired, counts = load(args.eval_dir, wanted)
    if not paired:
        print(f"no item was answered by every one of {', '.join(pipelines)}")
        return 0
    per_type, overall = summarise(pipelines, paired)
    print(f"{args.eval_dir}: {counts['paired']} paired items (of {counts['items']}; rows with errors: "
          f"{counts['errors']}), pipelines {', '.join(pipelines)}\n")
    print(table(pipelines, per_type, overall, args.markdown))
    print()
    for line in verdict(pipelines, per_type, overall):
        print(f"- {line}" if args.markdown else line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
