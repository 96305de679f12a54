"""The reports of `mmagent eval`: `summary.json`, `report.md`, `report.html`, the CLI's per-type
table, and `--compare A B` (two result folders diffed).

    write_reports(folder, summary, rows)   summary.json + report.md + report.html, each written atomically
    render_table(summary)                  the per-type text table the CLI prints (fits 100 columns)
    compare_runs(dir_a, dir_b)             two result folders diffed, per pipeline (a dict)
    render_compare(diff)                   that diff as text

`summary` is what `mmagent.eval.stats.summarize` returns; `rows` are the rows of `results.jsonl`
(`mmagent.eval.results`). `report.html` is one self-contained file: inline CSS, inline SVG drawn
here, no script, nothing fetched (no CDN, font or image), every user-provided text HTML-escaped.
Nothing here imports a heavy library.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import statistics
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import InputError, one_line
from .results import RESULTS, read_rows

SUMMARY, REPORT_MD, REPORT_HTML = "summary.json", "report.md", "report.html"
#: The type of items that have none (rows with `"type": null`), as `stats` names it.
UNTYPED = "(none)"
#: Failure causes of the telephone-loss attribution, in stacking order, with their legend text.
CAUSES = (
    ("perception", "perception: the needed fact is not in the tools' texts"),
    ("reasoning", "reasoning: the fact was there, the answer still wrong"),
    ("unknown", "unknown: the needed fact is only yes/no, it cannot be looked for"),
    ("no_intermediates", "no text: the pipeline wrote no intermediate text"),
    ("error", "error: the pipeline failed on the item"),
)
#: Series colours (Vega's Tableau-10: distinct, colour-blind friendlier than most).
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d",
           "#ff9da6", "#bab0ac")
_CAUSE_NAMES = {c: label.split(":")[0] for c, label in CAUSES}
CAUSE_COLOURS = {"perception": "#f58518", "reasoning": "#4c78a8", "unknown": "#bab0ac",
                 "no_intermediates": "#ddd6cf", "error": "#e45756"}
#: Example failures shown per pipeline and cause.
EXAMPLES = 3
#: The CLI table's width limit.
WIDTH = 100


# --------------------------------------------------------------------------------------------
# Writing the files


def write_reports(folder: str | os.PathLike[str], summary: dict[str, Any],
                  rows: Sequence[dict[str, Any]] = ()) -> dict[str, Path]:
    """Write `summary.json`, `report.md` and `report.html` into `folder` (created if needed), each
    atomically (a temporary file, then `os.replace`): a reader never sees a half-written report.
    Returns {"summary": path, "markdown": path, "html": path}."""
    if not isinstance(summary, dict) or not isinstance(summary.get("pipelines", {}), dict):
        raise InputError("a report needs a summary dict with a 'pipelines' mapping")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    texts = {
        "summary": (SUMMARY, json.dumps(_finite(summary), indent=2, ensure_ascii=False, allow_nan=False) + "\n"),
        "markdown": (REPORT_MD, render_markdown(summary, rows)),
        "html": (REPORT_HTML, render_html(summary, rows)),
    }
    paths = {}
    for key, (name, text) in texts.items():
        paths[key] = folder / name
        _write_atomic(paths[key], text)
    return paths


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as null (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Number formatting


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _pct(value: Any, digits: int = 1) -> str:
    v = _num(value)
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def _secs(value: Any) -> str:
    v = _num(value)
    if v is None:
        return "–"
    if v < 1:
        return f"{1000 * v:.0f} ms" if v >= 0.01 else f"{1000 * v:.1f} ms"
    return f"{v:.2f} s" if v < 10 else f"{v:.1f} s" if v < 100 else f"{v:.0f} s"


def _mb(value: Any) -> str:
    v = _num(value)
    if v is None:
        return "–"
    return f"{v / 1024:.2f} GB" if v >= 1024 else f"{v:.0f} MB"


def _p(value: Any) -> str:
    v = _num(value)
    if v is None:
        return "–"
    return "<0.001" if v < 0.001 else f"{v:.3f}" if v < 0.1 else f"{v:.2f}"


def _pt(value: Any) -> str:
    """A difference of two accuracies (fractions) in percentage points."""
    v = _num(value)
    return "–" if v is None else f"{100 * v:+.1f}"


def _diff_ci(comparison: dict[str, Any]) -> str:
    text = f"{_pt(comparison.get('diff'))} pt"
    ci = comparison.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(c) is not None for c in ci):
        text += f" [{_pt(ci[0])}, {_pt(ci[1])}]"
    return text


def _ratio(value: Any) -> str:
    v = _num(value)
    return "–" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def _int(value: Any) -> str:
    v = _num(value)
    return "–" if v is None else f"{v:.0f}"


def _reference(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " / ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return "" if value is None else str(value)


def _clip(text: Any, limit: int = 160) -> str:
    return one_line("" if text is None else str(text), limit)


# --------------------------------------------------------------------------------------------
# What the reports are made of: tables as data, rendered to Markdown and to HTML alike


class Cell:
    """A table cell: its text, and for HTML an optional number in [0, 1] drawn as a bar behind it
    and a class."""

    __slots__ = ("text", "bar", "cls", "raw")

    def __init__(self, text: Any, bar: float | None = None, cls: str = "", raw: bool = False):
        #: raw: text this module formatted (numbers): Markdown gets it unescaped.
        self.text, self.bar, self.cls, self.raw = "" if text is None else str(text), bar, cls, raw


class Table:
    """A titled table; columns from `numeric_from` on are right-aligned numbers, except those in
    `text_cols`."""

    def __init__(self, title: str, headers: Sequence[str], rows: list[list[Any]], note: str = "",
                 numeric_from: int = 1, text_cols: Sequence[int] = ()):
        self.title, self.headers, self.rows, self.note = title, list(headers), rows, note
        self.numeric_from, self.text_cols = numeric_from, tuple(text_cols)

    def numeric(self, column: int) -> bool:
        return column >= self.numeric_from and column not in self.text_cols


def _pipelines(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pipes = summary.get("pipelines") or {}
    return {str(name): (p if isinstance(p, dict) else {}) for name, p in pipes.items()}


def _types(summary: dict[str, Any]) -> list[str]:
    """Every type of any pipeline's breakdown, in first-seen order."""
    seen: dict[str, None] = {}
    for p in _pipelines(summary).values():
        for t in p.get("by_type") or {}:
            seen.setdefault(str(t), None)
    return list(seen)


def _acc_cell(stats: dict[str, Any] | None, best: bool = False) -> Cell:
    if not stats or _num(stats.get("accuracy")) is None:
        return Cell("–")
    n = stats.get("n")
    text = _pct(stats["accuracy"]) + (f" (n={_int(n)})" if n is not None else "")
    return Cell(text, bar=stats["accuracy"], cls="best" if best else "")


def _best(values: Iterable[Any]) -> float | None:
    nums = [v for v in (_num(x) for x in values) if v is not None]
    return max(nums) if len(nums) > 1 else None


def _by_type_table(summary: dict[str, Any]) -> Table:
    pipes = _pipelines(summary)
    rows = []
    for t in _types(summary):
        stats = [(p.get("by_type") or {}).get(t) for p in pipes.values()]
        best = _best(s.get("accuracy") for s in stats if s)
        rows.append([t] + [_acc_cell(s, best is not None and s is not None and _num(s.get("accuracy")) == best)
                           for s in stats])
    overall = list(pipes.values())
    best = _best(p.get("accuracy") for p in overall)
    rows.append([Cell("all", cls="total")] + [
        _acc_cell(p, best is not None and _num(p.get("accuracy")) == best) for p in overall])
    return Table("Accuracy by type", ["type", *pipes], rows)


def _cost_table(summary: dict[str, Any]) -> Table:
    pipes = _pipelines(summary)
    stages = []
    for p in pipes.values():
        for s in p.get("stages") or {}:
            if s not in stages:
                stages.append(str(s))
    rows = []
    for name, p in pipes.items():
        stage_text = ", ".join(f"{s} {_secs((p.get('stages') or {}).get(s, {}).get('p50_s'))}"
                               for s in stages if s in (p.get("stages") or {}))
        rows.append([name, _acc_cell(p), _int(p.get("correct")), _int(p.get("errors")),
                     _secs(p.get("latency_p50_s")), _secs(p.get("latency_p95_s")), _mb(p.get("peak_rss_mb")),
                     stage_text or "–"])
    return Table("Overall: accuracy and cost", ["pipeline", "accuracy", "correct", "errors", "latency p50",
                                                "latency p95", "peak memory", "stages (p50)"], rows, text_cols=(7,),
                 note="Latency is the wall time per item" + (
                     f" (with --batch-size {batch}, it includes waiting for the batch)" if (batch := max(
                         (int(p.get("batch_size") or 1) for p in pipes.values()), default=1)) > 1 else "")
                 + "; peak memory is the process's peak RSS while the pipeline ran.")


def _metrics_table(summary: dict[str, Any]) -> Table | None:
    pipes = _pipelines(summary)
    names: list[str] = []
    for p in pipes.values():
        for m, v in (p.get("metrics") or {}).items():
            if m not in names and _num(v) is not None:
                names.append(str(m))
    if not names:
        return None
    rows = [[name] + [_metric(m, (p.get("metrics") or {}).get(m)) for m in names] for name, p in pipes.items()]
    return Table("Metrics", ["pipeline", *names], rows)


def _metric(name: str, value: Any) -> str:
    v = _num(value)
    if v is None:
        return "–"
    if name.lower() in ("wer", "cer") or (0 <= v <= 1 and not float(v).is_integer()):
        return f"{v:.3f}"
    return f"{v:g}"


def _pope_table(summary: dict[str, Any]) -> Table | None:
    pipes = {name: p["pope"] for name, p in _pipelines(summary).items() if isinstance(p.get("pope"), dict)}
    if not pipes:
        return None
    rows = [[name, _int(s.get("n")), _pct(s.get("yes_ratio")), _pct(s.get("precision")), _pct(s.get("recall")),
             _pct(s.get("f1")), _pct(s.get("accuracy")), _int(s.get("unanswered"))] for name, s in pipes.items()]
    return Table("Hallucination on existence questions (POPE)", ["pipeline", "n", "yes ratio", "precision",
                                                                 "recall", "F1", "accuracy", "no yes/no"], rows,
                 note="\"yes\" is the positive class; a yes-ratio well above the share of present objects "
                      "means the pipeline says yes to absent objects.")


def _comparison_table(summary: dict[str, Any]) -> Table | None:
    comps = [c for c in summary.get("comparisons") or [] if isinstance(c, dict)]
    if not comps:
        return None
    rows = []
    for c in comps:
        p = _num(c.get("mcnemar_p"))
        cls = "significant" if p is not None and p < 0.05 else ""
        rows.append([f"{c.get('a')} vs {c.get('b')}", _int(c.get("n")), _pct(c.get("accuracy_a")),
                     _pct(c.get("accuracy_b")), Cell(_diff_ci(c), cls=cls, raw=True),
                     _int(c.get("a_only")), _int(c.get("b_only")), Cell(_p(c.get("mcnemar_p")), cls=cls, raw=True)])
    return Table("Paired comparisons", ["A vs B", "items", "accuracy A", "accuracy B", "A − B (95% CI)",
                                        "only A right", "only B right", "McNemar p"], rows,
                 note="On the items both pipelines answered. The CI is a paired bootstrap; McNemar's exact "
                      "test uses the items only one of the two got right (bold: p < 0.05).")


def _comparison_type_table(c: dict[str, Any]) -> Table | None:
    by_type = c.get("by_type") or {}
    if not by_type:
        return None
    rows = [[t, _int(s.get("n")), _pct(s.get("accuracy_a")), _pct(s.get("accuracy_b")),
             _pt(_sub(s.get("accuracy_a"), s.get("accuracy_b")))] for t, s in by_type.items() if isinstance(s, dict)]
    return Table(f"{c.get('a')} vs {c.get('b')} by type", ["type", "items", str(c.get("a")), str(c.get("b")),
                                                            "A − B (pt)"], rows)


def _sub(b: Any, a: Any) -> float | None:
    a, b = _num(a), _num(b)
    return None if a is None or b is None else b - a


def _attribution(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    att = summary.get("attribution") or {}
    return {str(name): a for name, a in att.items() if isinstance(a, dict)}


def _causes(atts: Iterable[dict[str, Any]]) -> list[str]:
    """The causes to show: perception, reasoning and unknown always, the others where they occur."""
    atts = list(atts)
    return [c for c, _ in CAUSES if c in ("perception", "reasoning", "unknown") or
            any((_num(a.get(c)) or 0) > 0 for a in atts)]


def _attribution_table(name: str, att: dict[str, Any]) -> Table:
    causes = _causes([att])

    def row(label: Any, s: dict[str, Any]) -> list[Any]:
        wrong = _num(s.get("wrong")) or 0
        out: list[Any] = [label, _int(s.get("wrong"))]
        for cause in causes:
            v = _num(s.get(cause))
            out.append(Cell("–" if v is None else f"{v:.0f}" + (f" ({100 * v / wrong:.0f}%)" if wrong and v else ""),
                            bar=(v / wrong) if (v and wrong) else None))
        return out

    rows = [row(t, s) for t, s in (att.get("by_type") or {}).items() if isinstance(s, dict)]
    rows.append(row(Cell("all", cls="total"), att))
    return Table(f"{name}: why the wrong answers are wrong", ["type", "wrong", *(_CAUSE_NAMES[c] for c in causes)], rows)


def _examples(summary: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """[(pipeline, cause or "wrong", [example...])]: the attribution's examples, and for pipelines
    without any, the first wrong rows."""
    out = []
    seen = set()
    types = {(str(r.get("item_id")), str(r.get("pipeline"))): r.get("type") for r in rows}
    for name, att in _attribution(summary).items():
        for cause, examples in (att.get("examples") or {}).items():
            examples = [{"type": types.get((str(e.get("item_id")), name)), **e}
                        for e in examples or [] if isinstance(e, dict)][:EXAMPLES]
            if examples:
                out.append((name, _CAUSE_NAMES.get(str(cause), str(cause)), examples))
                seen.add(name)
    wrong: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        name = str(row.get("pipeline"))
        if name in seen or row.get("correct") or len(wrong.get(name, [])) >= EXAMPLES:
            continue
        wrong.setdefault(name, []).append({
            "item_id": row.get("item_id"), "type": row.get("type"), "question": row.get("question"),
            "prediction": row.get("prediction") if not row.get("error") else f"error: {row.get('error')}",
            "reference": row.get("reference")})
    out += [(name, "wrong", examples) for name, examples in wrong.items()]
    order = {name: i for i, name in enumerate(_pipelines(summary))}
    return sorted(out, key=lambda e: order.get(e[0], len(order)))  # stable: causes keep their order


# --------------------------------------------------------------------------------------------
# report.md

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&#])")


def _md(text: Any) -> str:
    """User text safe in a Markdown table cell: one line, Markdown punctuation backslash-escaped (so
    `<script>` stays text, a `|` does not split the cell)."""
    return _MD_SPECIAL.sub(r"\\\1", _clip(text, 10_000))


def _md_table(table: Table) -> str:
    def cell(c: Any) -> str:
        if isinstance(c, Cell):
            return c.text if c.raw else _md(c.text)
        return _md(c)

    def bold(c: Any) -> str:
        text = cell(c)
        return f"**{text}**" if isinstance(c, Cell) and c.cls in ("best", "total", "significant") and text != "–" else text

    lines = [f"### {_md(table.title)}", ""] if table.title else []
    lines.append("| " + " | ".join(_md(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---:" if table.numeric(i) else "---" for i in range(len(table.headers))) + "|")
    lines += ["| " + " | ".join(bold(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines) + "\n"


def _title(summary: dict[str, Any]) -> str:
    return f"mmagent eval: {summary.get('suite') or 'results'}"


def _meta_line(summary: dict[str, Any]) -> str:
    parts = []
    if summary.get("suite"):
        parts.append(f"suite {summary['suite']}")
    if summary.get("metric"):
        parts.append(f"metric {summary['metric']}")
    if summary.get("n_items") is not None:
        parts.append(f"{_int(summary['n_items'])} items")
    pipes = list(_pipelines(summary))
    parts.append(f"{len(pipes)} pipeline{'s' if len(pipes) != 1 else ''}: {', '.join(pipes) or 'none'}")
    return " · ".join(parts)


def render_markdown(summary: dict[str, Any], rows: Sequence[dict[str, Any]] = ()) -> str:
    """`report.md`: the tables of a summary, and a few example failures."""
    out = [f"# {_md(_title(summary))}", "", _md(_meta_line(summary)), ""]
    out += ["## Accuracy by type", "", _md_table(_untitled(_by_type_table(summary)))]
    out += ["## Accuracy and cost", "", _md_table(_untitled(_cost_table(summary)))]
    for table in (_metrics_table(summary), _pope_table(summary)):
        if table:
            out += [f"## {table.title}", "", _md_table(_untitled(table))]
    comps = _comparison_table(summary)
    if comps:
        out += ["## Comparisons", "", _md_table(_untitled(comps))]
        for c in summary.get("comparisons") or []:
            if isinstance(c, dict) and (t := _comparison_type_table(c)):
                out.append(_md_table(t))
    attribution = _attribution(summary)
    if attribution:
        out += ["## Telephone-loss attribution", "",
                "For each item a pipeline got wrong: was the fact the answer needs in the text its tools wrote "
                "(caption, OCR, transcript)? Absent: **perception** loss (the tools never passed it on). "
                "Present: **reasoning** loss (the answering model had it and still missed).", ""]
        out += [_md_table(_attribution_table(name, att)) for name, att in attribution.items()]
    examples = _examples(summary, rows)
    if examples:
        out += ["## Example failures", ""]
        for name, cause, items in examples:
            out += [f"### {_md(name)}: {_md(cause)}", "", "| item | type | question | prediction | reference |",
                    "|---|---|---|---|---|"]
            out += [f"| {_md(e.get('item_id'))} | {_md(e.get('type') or '')} | {_md(_clip(e.get('question')))} | "
                    f"{_md(_clip(e.get('prediction')))} | {_md(_clip(_reference(e.get('reference'))))} |" for e in items]
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _untitled(table: Table) -> Table:
    return Table("", table.headers, table.rows, table.note, table.numeric_from, table.text_cols)


# --------------------------------------------------------------------------------------------
# report.html: inline CSS, inline SVG, no script


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _f(x: float) -> str:
    """A coordinate, short."""
    return f"{x:.1f}".rstrip("0").rstrip(".") if not float(x).is_integer() else str(int(x))


def _colours(summary: dict[str, Any]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(_pipelines(summary))}


def _text_width(text: str, size: float = 12) -> float:
    """An estimate of the width of `text` in px (a sans-serif's average advance)."""
    return len(text) * size * 0.58


def _nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _svg_open(plot_id: str, title: str, desc: str, width: float, height: float) -> str:
    return (f'<svg id="{_e(plot_id)}" class="plot" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'viewBox="0 0 {_f(width)} {_f(height)}" width="{_f(width)}" height="{_f(height)}" '
            f'aria-label="{_e(title)}" aria-describedby="{_e(plot_id)}-desc">'
            f'<title>{_e(title)}</title><desc id="{_e(plot_id)}-desc">{_e(desc)}</desc>')


def _legend(items: Sequence[tuple[str, str]], x: float, y: float, max_width: float) -> tuple[str, float]:
    """A legend row (wrapping), swatches and labels; returns its SVG and its height."""
    parts, cx, cy = ['<g class="legend">'], x, y
    for label, colour in items:
        w = 18 + _text_width(label, 12) + 18
        if cx > x and cx + w > x + max_width:
            cx, cy = x, cy + 20
        parts.append(f'<rect class="legend-swatch" x="{_f(cx)}" y="{_f(cy - 10)}" width="12" height="12" rx="2" '
                     f'fill="{colour}"/><text x="{_f(cx + 18)}" y="{_f(cy)}">{_e(label)}</text>')
        cx += w
    parts.append("</g>")
    return "".join(parts), cy - y + 20


def _category_label(text: str, cx: float, y0: float, rotate: bool, cls: str = "cat") -> str:
    """An x-axis category label under the bars centred at `cx` (slanted when labels are crowded)."""
    if rotate:
        return (f'<text class="{cls}" transform="translate({_f(cx + 4)} {_f(y0 + 14)}) rotate(-35)" '
                f'text-anchor="end">{_e(text)}</text>')
    return f'<text class="{cls}" x="{_f(cx)}" y="{_f(y0 + 18)}" text-anchor="middle">{_e(text)}</text>'


def svg_by_type(summary: dict[str, Any]) -> str:
    """Grouped bars: accuracy per type (and overall), one bar per pipeline."""
    pipes = _pipelines(summary)
    colours = _colours(summary)
    groups = [(t, {n: (p.get("by_type") or {}).get(t) for n, p in pipes.items()}) for t in _types(summary)]
    groups.append(("all", {n: p for n, p in pipes.items()}))
    bar_w = 20 if len(pipes) <= 4 else 14
    group_w = max(len(pipes) * (bar_w + 2) + 22, 56)
    labels = [t for t, _ in groups]
    rotate = any(_text_width(t, 12) > group_w - 6 for t in labels)
    left, right = 58, 20
    plot_w = group_w * len(groups)
    width = max(left + plot_w + right, 520)
    plot_w = width - left - right
    group_w = plot_w / len(groups)
    legend, legend_h = _legend([(n, colours[n]) for n in pipes], left, 22, plot_w)
    top = 22 + legend_h + 14
    plot_h = 230
    label_h = (max(_text_width(t, 12) for t in labels) * 0.6 + 24) if rotate else 26
    height = top + plot_h + label_h + 26
    y0 = top + plot_h

    def y(v: float) -> float:
        return y0 - v * plot_h

    desc = "; ".join(f"{t}: " + ", ".join(f"{n} {_pct((s or {}).get('accuracy'))}" for n, s in g.items())
                     for t, g in groups)
    out = [_svg_open("plot-by-type", "Accuracy by type per pipeline", desc, width, height), legend]
    out.append('<g class="grid">')
    for tick in range(0, 101, 20):
        out.append(f'<line x1="{left}" x2="{_f(left + plot_w)}" y1="{_f(y(tick / 100))}" y2="{_f(y(tick / 100))}"/>')
        out.append(f'<text class="tick" x="{left - 8}" y="{_f(y(tick / 100) + 4)}" text-anchor="end">{tick}%</text>')
    out.append("</g>")
    out.append(f'<text class="axis-title" transform="translate(16 {_f(top + plot_h / 2)}) rotate(-90)" '
               f'text-anchor="middle">accuracy</text>')
    inner = len(pipes) * bar_w + (len(pipes) - 1) * 2
    for gi, (t, stats) in enumerate(groups):
        gx = left + gi * group_w
        if t == "all" and gi:
            out.append(f'<line class="separator" x1="{_f(gx)}" x2="{_f(gx)}" y1="{_f(top)}" y2="{_f(y0)}"/>')
        x = gx + (group_w - inner) / 2
        for name, s in stats.items():
            acc = _num((s or {}).get("accuracy"))
            if acc is not None:
                h = max(acc * plot_h, 2)  # a zero is a visible sliver on the baseline, not a missing bar
                tip = f"{name} · {t}: {_pct(acc)}" + (f" (n={_int(s.get('n'))})" if s.get("n") is not None else "")
                out.append(f'<rect class="bar" data-pipeline="{_e(name)}" data-type="{_e(t)}" x="{_f(x)}" '
                           f'y="{_f(y0 - h)}" width="{bar_w}" height="{_f(h)}" rx="2" fill="{colours[name]}">'
                           f'<title>{_e(tip)}</title></rect>')
                if bar_w >= 18:
                    out.append(f'<text class="value" x="{_f(x + bar_w / 2)}" y="{_f(y0 - h - 4)}" '
                               f'text-anchor="middle">{100 * acc:.0f}</text>')
            x += bar_w + 2
        cx = gx + group_w / 2
        out.append(_category_label(t, cx, y0, rotate, "cat total" if t == "all" else "cat"))
    out.append(f'<line class="axis" x1="{left}" x2="{_f(left + plot_w)}" y1="{_f(y0)}" y2="{_f(y0)}"/>')
    out.append(f'<text class="axis-title" x="{_f(left + plot_w / 2)}" y="{_f(height - 8)}" '
               f'text-anchor="middle">item type</text>')
    out.append("</svg>")
    return "".join(out)


def _tick_secs(v: float) -> str:
    if v == 0:
        return "0"
    return f"{1000 * v:.4g} ms" if v < 1 else f"{v:.4g} s"


def pareto_front(points: Sequence[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """The (name, latency, accuracy) points no other point beats on both (as fast or faster and at
    least as accurate, one of the two strictly), from fastest to slowest."""
    front: list[tuple[str, float, float]] = []
    for point in sorted(points, key=lambda p: (p[1], -p[2])):
        if not front or point[2] > front[-1][2]:
            front.append(point)
    return front


def svg_pareto(summary: dict[str, Any]) -> str | None:
    """Accuracy against median latency, a point per pipeline, the Pareto front as a line."""
    colours = _colours(summary)
    points = []
    for name, p in _pipelines(summary).items():
        lat, acc = _num(p.get("latency_p50_s")), _num(p.get("accuracy"))
        if lat is not None and acc is not None and lat >= 0:
            points.append((name, lat, acc))
    if not points:
        return None
    width, height, left, right, top, bottom = 640, 400, 62, 30, 40, 54
    plot_w, plot_h = width - left - right, height - top - bottom
    lats = [p[1] for p in points]
    positive = [v for v in lats if v > 0]
    log = bool(positive) and len(positive) == len(lats) and max(lats) / min(positive) >= 10
    if log:
        lo, hi = min(lats) / 1.8, max(lats) * 1.8  # room for the points and their labels
        first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        ticks = [10.0 ** k * m for k in range(first, last + 1) for m in (1, 2, 5)]
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) > 8:
            ticks = [t for t in ticks if math.isclose(10 ** round(math.log10(t)), t)]

        def x(v: float) -> float:
            return left + (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * plot_w
    else:
        step = _nice_step(max(lats) * 1.15 or 1.0, 5)
        hi = step * math.ceil((max(lats) * 1.15 or 1.0) / step)
        lo = 0.0
        ticks = [i * step for i in range(int(round(hi / step)) + 1)]

        def x(v: float) -> float:
            return left + (v - lo) / (hi - lo) * plot_w

    def y(v: float) -> float:
        return top + plot_h - v * plot_h

    front = pareto_front(points)
    on_front = {p[0] for p in front}
    desc = "; ".join(f"{n}: {_pct(a)} at {_secs(l)}" for n, l, a in points) + \
        f". Pareto front: {', '.join(p[0] for p in front)}."
    out = [_svg_open("plot-pareto", "Accuracy vs median latency, with the Pareto front", desc, width, height)]
    out.append('<g class="grid">')
    for tick in range(0, 101, 20):
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{_f(y(tick / 100))}" y2="{_f(y(tick / 100))}"/>')
        out.append(f'<text class="tick" x="{left - 8}" y="{_f(y(tick / 100) + 4)}" text-anchor="end">{tick}%</text>')
    for t in ticks:
        out.append(f'<line x1="{_f(x(t))}" x2="{_f(x(t))}" y1="{top}" y2="{top + plot_h}"/>')
        out.append(f'<text class="tick" x="{_f(x(t))}" y="{top + plot_h + 18}" text-anchor="middle">'
                   f'{_e(_tick_secs(t))}</text>')
    out.append("</g>")
    out.append(f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    out.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}"/>')
    out.append(f'<text class="axis-title" x="{_f(left + plot_w / 2)}" y="{height - 10}" text-anchor="middle">'
               f'median latency per item{" (log scale)" if log else ""} →</text>')
    out.append(f'<text class="axis-title" transform="translate(16 {_f(top + plot_h / 2)}) rotate(-90)" '
               f'text-anchor="middle">accuracy →</text>')
    if len(front) >= 2:
        d = " ".join(f"{'M' if i == 0 else 'L'}{_f(x(l))} {_f(y(a))}" for i, (_, l, a) in enumerate(front))
        out.append(f'<path class="pareto" d="{d}"><title>Pareto front: {_e(", ".join(p[0] for p in front))}'
                   f'</title></path>')
    placed: list[tuple[float, float, float, float]] = []
    labels = []
    for name, lat, acc in sorted(points, key=lambda p: (p[1], -p[2])):
        px, py = x(lat), y(acc)
        cls = "point front" if name in on_front else "point"
        out.append(f'<circle class="{cls}" data-pipeline="{_e(name)}" cx="{_f(px)}" cy="{_f(py)}" r="7" '
                   f'fill="{colours[name]}" stroke="{colours[name]}"><title>{_e(name)}: {_pct(acc)} at '
                   f'{_e(_secs(lat))} per item{" (on the Pareto front)" if name in on_front else ""}</title></circle>')
        label = f"{name}  {_pct(acc, 0)} · {_secs(lat)}"
        w, h = _text_width(label, 12), 14
        for lx, ly, anchor in ((px + 11, py + 4, "start"), (px - 11, py + 4, "end"), (px, py - 12, "middle"),
                               (px, py + 22, "middle"), (px + 11, py - 12, "start"), (px + 11, py + 20, "start")):
            x0 = lx if anchor == "start" else lx - w if anchor == "end" else lx - w / 2
            box = (x0, ly - h + 3, x0 + w, ly + 3)
            inside = box[0] >= 0 and box[2] <= width and box[1] >= top - 4 and box[3] <= top + plot_h
            if inside and not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        labels.append(f'<text class="point-label" x="{_f(lx)}" y="{_f(ly)}" text-anchor="{anchor}">'
                      f'<tspan class="name">{_e(name)}</tspan> {_e(_pct(acc, 0))} · {_e(_secs(lat))}</text>')
    out += labels
    if len(front) >= 2:
        out.append(f'<g class="legend"><line class="pareto" x1="{left + plot_w - 104}" x2="{left + plot_w - 80}" '
                   f'y1="{top - 22}" y2="{top - 22}"/><text x="{left + plot_w - 74}" y="{top - 18}">'
                   f'Pareto front</text></g>')
    out.append("</svg>")
    return "".join(out)


def svg_attribution(summary: dict[str, Any]) -> str | None:
    """Stacked bars: per pipeline (a panel each) and type, the wrong answers split by cause."""
    att = {n: a for n, a in _attribution(summary).items() if (_num(a.get("wrong")) or 0) > 0}
    if not att:
        return None
    order = _types(summary)
    types: list[str] = [t for t in order if any(t in (a.get("by_type") or {}) for a in att.values())]
    for a in att.values():
        types += [str(t) for t in a.get("by_type") or {} if str(t) not in types]
    if not types:
        types = ["all"]

    causes = _causes(att.values())

    def counts(a: dict[str, Any], t: str) -> dict[str, float]:
        s = a if t == "all" and "all" not in (a.get("by_type") or {}) else (a.get("by_type") or {}).get(t) or {}
        return {c: _num(s.get(c)) or 0.0 for c in causes}

    top_count = max(sum(counts(a, t).values()) for a in att.values() for t in types) or 1
    step = max(1, math.ceil(_nice_step(top_count, 4)))
    y_max = step * math.ceil(top_count * 1.08 / step)  # headroom for the value above the tallest bar
    rotate = any(_text_width(t, 12) > 64 for t in types)
    left, right = 58, 20
    group_w = 70
    width = max(left + group_w * len(types) + right, 600)
    plot_w = width - left - right
    group_w = plot_w / len(types)
    bar_w = min(36, group_w * 0.6)
    legend, legend_h = _legend([(_CAUSE_NAMES[c], CAUSE_COLOURS[c]) for c in causes], left, 22, plot_w)
    panel_h, label_h = 170, ((max(_text_width(t, 12) for t in types) * 0.6 + 22) if rotate else 26)
    top = 22 + legend_h + 8
    height = top + (len(att) - 1) * (panel_h + label_h + 30) + 22 + panel_h + label_h + 8
    desc_parts = []
    out = []
    for pi, (name, a) in enumerate(att.items()):
        ptop = top + pi * (panel_h + label_h + 30) + 22
        y0 = ptop + panel_h
        out.append(f'<g class="panel" data-pipeline="{_e(name)}">')
        total = {c: _num(a.get(c)) or 0 for c in causes}
        wrong = _num(a.get("wrong")) or 0
        headline = f"{name}: {wrong:.0f} wrong — " + ", ".join(f"{v:.0f} {_CAUSE_NAMES[c]}"
                                                               for c, v in total.items() if v)
        desc_parts.append(headline)
        out.append(f'<text class="panel-title" x="{left}" y="{_f(ptop - 8)}">{_e(headline)}</text>')
        for k in range(0, int(y_max) + 1, step):
            yy = y0 - k / y_max * panel_h
            out.append(f'<line class="gridline" x1="{left}" x2="{_f(left + plot_w)}" y1="{_f(yy)}" y2="{_f(yy)}"/>'
                       f'<text class="tick" x="{left - 8}" y="{_f(yy + 4)}" text-anchor="end">{k}</text>')
        for ti, t in enumerate(types):
            cx = left + (ti + 0.5) * group_w
            yy = y0
            c = counts(a, t)
            for cause in causes:
                v = c[cause]
                if v <= 0:
                    continue
                h = v / y_max * panel_h
                yy -= h
                out.append(f'<rect class="seg seg-{cause}" data-pipeline="{_e(name)}" data-type="{_e(t)}" '
                           f'x="{_f(cx - bar_w / 2)}" y="{_f(yy)}" width="{_f(bar_w)}" height="{_f(h)}" '
                           f'fill="{CAUSE_COLOURS[cause]}"><title>{_e(name)} · {_e(t)}: {v:.0f} {_CAUSE_NAMES[cause]} '
                           f'of {sum(c.values()):.0f} attributed</title></rect>')
            if sum(c.values()):
                out.append(f'<text class="value" x="{_f(cx)}" y="{_f(yy - 4)}" text-anchor="middle">'
                           f'{sum(c.values()):.0f}</text>')
            out.append(_category_label(t, cx, y0, rotate))
        out.append(f'<line class="axis" x1="{left}" x2="{_f(left + plot_w)}" y1="{_f(y0)}" y2="{_f(y0)}"/>')
        out.append(f'<text class="axis-title" transform="translate(16 {_f(ptop + panel_h / 2)}) rotate(-90)" '
                   f'text-anchor="middle">wrong answers</text>')
        out.append("</g>")
    head = _svg_open("plot-attribution", "Telephone-loss attribution: wrong answers by type and cause",
                     "; ".join(desc_parts), width, height)
    return head + legend + "".join(out) + "</svg>"


_CSS = """
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --grid: #eef0f3; --bg: #f6f7f9; --card: #fff;
  --accent: #4c78a8; --good: #2f7d32; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e5e7eb; --muted: #9ca3af; --line: #374151; --grid: #2b3340; --bg: #111418; --card: #1a1f26;
    --accent: #8fb3de; --good: #7cc47f; }
}
* { box-sizing: border-box; }
html { background: var(--bg); }
body { margin: 0; color: var(--fg); font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
  Arial, "Noto Sans", "Liberation Sans", sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 32px 24px 64px; }
header h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
header p { margin: 0; color: var(--muted); }
h2 { font-size: 19px; margin: 40px 0 12px; }
h3 { font-size: 15px; margin: 20px 0 8px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 14px; margin-top: 24px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; }
.card .name { font-weight: 600; display: flex; align-items: center; gap: 8px; overflow-wrap: anywhere; }
.card .dot { width: 10px; height: 10px; border-radius: 50%; flex: none; }
.card .big { font-size: 30px; font-weight: 650; margin: 4px 0 0; font-variant-numeric: tabular-nums; }
.card .sub { color: var(--muted); font-size: 13px; font-variant-numeric: tabular-nums; }
figure { background: var(--card); border: 1px solid var(--line); border-radius: 10px; margin: 0 0 16px;
  padding: 16px; overflow-x: auto; }
figure svg { display: block; margin: 0 auto; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 8px; }
.plot text { fill: var(--fg); font: 12px system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", sans-serif; }
.plot .tick { fill: var(--muted); font-size: 11px; font-variant-numeric: tabular-nums; }
.plot .value { fill: var(--muted); font-size: 10px; font-variant-numeric: tabular-nums; }
.plot .axis-title { fill: var(--muted); font-size: 12px; }
.plot .cat.total, .plot .panel-title, .plot .point-label .name { font-weight: 600; }
.plot .grid line, .plot .gridline { stroke: var(--grid); stroke-width: 1; }
.plot .axis { stroke: var(--muted); stroke-width: 1; }
.plot .separator { stroke: var(--line); stroke-dasharray: 3 3; }
.plot .bar:hover, .plot .seg:hover { opacity: 0.8; }
.plot .pareto { fill: none; stroke: var(--fg); stroke-width: 1.5; stroke-dasharray: 6 4; opacity: 0.55; }
.plot .point { fill-opacity: 0.25; stroke-width: 2.5; }
.plot .point.front { fill-opacity: 1; }
table { border-collapse: collapse; width: 100%; background: var(--card); border: 1px solid var(--line);
  border-radius: 10px; overflow: hidden; font-size: 14px; margin: 0 0 16px; }
caption { text-align: left; font-weight: 600; padding: 0 0 8px; }
th, td { padding: 7px 12px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 13px; background: var(--bg); }
tbody th { background: transparent; color: var(--fg); font-size: 14px; }
tr.total th, tr.total td { border-top: 2px solid var(--line); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:last-child td { border-bottom: none; }
td.bar { background-color: rgb(76 120 168 / calc(var(--v) * 0.30)); }
td.best { font-weight: 650; }
td.total { font-weight: 650; }
td.significant { font-weight: 650; }
.note { color: var(--muted); font-size: 13px; margin: -8px 0 16px; }
.examples { table-layout: fixed; }
.examples td { overflow-wrap: anywhere; }
.examples .c-item { width: 14%; } .examples .c-type { width: 13%; } .examples .c-q { width: 43%; }
.examples .c-pred, .examples .c-ref { width: 15%; }
.examples td.pred { color: #b42318; }
@media (prefers-color-scheme: dark) { .examples td.pred { color: #f08c84; } }
details { margin: 0 0 12px; }
summary { cursor: pointer; font-weight: 600; margin: 8px 0; }
footer { color: var(--muted); font-size: 12px; margin-top: 48px; }
code { font-size: 13px; }
"""


def _html_table(table: Table, cls: str = "") -> str:
    out = [f'<table class="{_e(cls)}">' if cls else "<table>"]
    if table.title:
        out.append(f"<caption>{_e(table.title)}</caption>")
    num = ' class="num"'
    out.append("<thead><tr>" + "".join(
        f'<th scope="col"{num if table.numeric(i) else ""}>{_e(h)}</th>'
        for i, h in enumerate(table.headers)) + "</tr></thead><tbody>")
    for row in table.rows:
        cells = []
        for i, c in enumerate(row):
            cell = c if isinstance(c, Cell) else Cell(c)
            classes = [cell.cls] if cell.cls else []
            style = ""
            if table.numeric(i):
                classes.append("num")
            if cell.bar is not None and _num(cell.bar) is not None:
                classes.append("bar")
                style = f' style="--v: {max(0.0, min(1.0, float(cell.bar))):.3f}"'
            attrs = f' class="{" ".join(classes)}"' if classes else ""
            tag = "th" if i == 0 else "td"
            scope = ' scope="row"' if i == 0 else ""
            cells.append(f"<{tag}{scope}{attrs}{style}>{_e(cell.text)}</{tag}>")
        first = row[0] if row else None
        out.append('<tr class="total">' if isinstance(first, Cell) and first.cls == "total" else "<tr>")
        out.append("".join(cells) + "</tr>")
    out.append("</tbody></table>")
    if table.note:
        out.append(f'<p class="note">{_e(table.note)}</p>')
    return "".join(out)


def _cards(summary: dict[str, Any]) -> str:
    colours = _colours(summary)
    out = ['<section class="cards" aria-label="pipelines">']
    for name, p in _pipelines(summary).items():
        n, correct = p.get("n"), p.get("correct")
        sub = f"{_int(correct)} of {_int(n)} right" if n is not None and correct is not None else f"n={_int(n)}"
        if (_num(p.get("errors")) or 0) > 0:
            sub += f" · {_int(p.get('errors'))} errors"
        out.append(f'<div class="card"><div class="name"><span class="dot" style="background:{colours[name]}"></span>'
                   f'{_e(name)}</div><div class="big">{_pct(p.get("accuracy"))}</div><div class="sub">{_e(sub)}</div>'
                   f'<div class="sub">p50 {_e(_secs(p.get("latency_p50_s")))} · p95 {_e(_secs(p.get("latency_p95_s")))}'
                   f' · {_e(_mb(p.get("peak_rss_mb")))}</div></div>')
    out.append("</section>")
    return "".join(out)


def render_html(summary: dict[str, Any], rows: Sequence[dict[str, Any]] = ()) -> str:
    """`report.html`: one self-contained page (no script, nothing fetched) with the three plots and
    the tables of `report.md`."""
    body = [f"<header><h1>{_e(_title(summary))}</h1><p>{_e(_meta_line(summary))}</p></header>", _cards(summary)]

    body.append('<section><h2>Accuracy by type</h2><figure>' + svg_by_type(summary) +
                '<figcaption>Share of items answered correctly, per item type and overall ("all"); hover a bar '
                'for its numbers.</figcaption></figure>' + _html_table(_untitled(_by_type_table(summary))) + "</section>")

    pareto = svg_pareto(summary)
    body.append("<section><h2>Accuracy and cost</h2>" + (
        '<figure>' + pareto + '<figcaption>Each pipeline at its median latency per item. The dashed line joins the '
        'Pareto front: the pipelines no other beats on both speed and accuracy (filled points).</figcaption>'
        '</figure>' if pareto else '<p class="note">No latencies to plot.</p>') +
        _html_table(_untitled(_cost_table(summary))) + "</section>")

    for table in (_metrics_table(summary), _pope_table(summary)):
        if table:
            body.append(f"<section><h2>{_e(table.title)}</h2>{_html_table(_untitled(table))}</section>")

    comps = _comparison_table(summary)
    if comps:
        parts = [f"<section><h2>Paired comparisons</h2>{_html_table(_untitled(comps))}"]
        for c in summary.get("comparisons") or []:
            if isinstance(c, dict) and (t := _comparison_type_table(c)):
                parts.append(f"<details><summary>{_e(t.title)}</summary>{_html_table(_untitled(t))}</details>")
        body.append("".join(parts) + "</section>")

    attribution = _attribution(summary)
    if attribution:
        plot = svg_attribution(summary)
        body.append(
            "<section><h2>Telephone-loss attribution</h2>"
            '<p class="note" style="margin:0 0 12px">For each item a pipeline got wrong: was the fact the answer '
            "needs in the text its tools wrote (caption, OCR, transcript)? Absent: <b>perception</b> loss, the "
            "tools never passed it on. Present: <b>reasoning</b> loss, the answering model had it and still "
            "missed.</p>" +
            ('<figure>' + plot + "<figcaption>Wrong answers per type, split by cause; hover a segment for its count."
             "</figcaption></figure>" if plot else
             '<p class="note">No wrong answers to attribute.</p>') +
            "".join(_html_table(_attribution_table(name, att)) for name, att in attribution.items()) + "</section>")

    examples = _examples(summary, rows)
    if examples:
        parts = ["<section><h2>Example failures</h2>"]
        for name, cause, items in examples:
            table_rows = "".join(
                f"<tr><td><code>{_e(e.get('item_id'))}</code></td><td>{_e(e.get('type') or '')}</td>"
                f"<td>{_e(_clip(e.get('question'), 400))}</td><td class=\"pred\">{_e(_clip(e.get('prediction'), 400))}"
                f"</td><td>{_e(_clip(_reference(e.get('reference')), 400))}</td></tr>" for e in items)
            parts.append(f"<details open><summary>{_e(name)}: {_e(cause)}</summary><table class=\"examples\">"
                         "<thead><tr><th class=\"c-item\">item</th><th class=\"c-type\">type</th><th class=\"c-q\">question</th>"
                         "<th class=\"c-pred\">prediction</th><th class=\"c-ref\">reference</th>"
                         f"</tr></thead><tbody>{table_rows}</tbody></table></details>")
        body.append("".join(parts) + "</section>")

    body.append("<footer>Written by <code>mmagent eval</code>. Numbers: <code>summary.json</code>; every answer: "
                "<code>results.jsonl</code>.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            # No script, no fetch: a report is data, and must not run or load anything.
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            f"<title>{_e(_title(summary))}</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")


# --------------------------------------------------------------------------------------------
# The CLI's table


def render_table(summary: dict[str, Any], width: int = WIDTH) -> str:
    """Types × pipelines, accuracy and n, an "all" line and median latency per pipeline, in plain
    text no wider than `width` (pipelines that do not fit go to a further block)."""
    pipes = _pipelines(summary)
    types = _types(summary)
    type_w = min(max([len("latency p50"), *(len(one_line(t)) for t in types)]), 24)

    def cell(stats: dict[str, Any] | None) -> str:
        if not stats or _num(stats.get("accuracy")) is None:
            return "–"
        return f"{_pct(stats['accuracy'])} ({_int(stats.get('n'))})"

    columns = []
    for name, p in pipes.items():
        cells = [cell((p.get("by_type") or {}).get(t)) for t in types] + [cell(p), _secs(p.get("latency_p50_s"))]
        label = one_line(name, 20)
        columns.append((label, cells, max(len(label), *(len(c) for c in cells))))
    labels = [one_line(t, type_w) for t in types] + ["all", "latency p50"]
    blocks: list[list[tuple[str, list[str], int]]] = [[]]
    used = type_w
    for column in columns:
        if blocks[-1] and used + 2 + column[2] > width:
            blocks.append([])
            used = type_w
        blocks[-1].append(column)
        used += 2 + column[2]
    out = []
    for block in blocks:
        if out:
            out.append("")
        out.append(("type".ljust(type_w) + "".join("  " + c[0].rjust(c[2]) for c in block)).rstrip())
        for i, label in enumerate(labels):
            if label == "all":
                out.append("-" * min(width, type_w + sum(2 + c[2] for c in block)))
            out.append((label.ljust(type_w) + "".join("  " + c[1][i].rjust(c[2]) for c in block)).rstrip())
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# --compare A B


def _run_rows(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--compare: {folder} is not a folder (expected an eval output folder)")
    path = folder / RESULTS
    if not path.is_file():
        raise InputError(f"--compare: {folder} has no {RESULTS} (not an mmagent eval output folder)")
    return read_rows(path)


def _type(row: dict[str, Any]) -> str:
    t = row.get("type")
    return UNTYPED if t is None else str(t)


def _correct(row: dict[str, Any]) -> bool:
    return bool(row.get("correct"))


def _accuracy(rows: list[dict[str, Any]]) -> float | None:
    """The mean score, as in summary.json (a row without a score, an error, scores 0)."""
    return sum(_num(r.get("score")) or 0.0 for r in rows) / len(rows) if rows else None


def _side(rows: list[dict[str, Any]]) -> dict[str, Any]:
    # Latency over the rows without an error, as in summary.json.
    seconds = [v for v in (_num(r.get("seconds")) for r in rows if not r.get("error")) if v is not None]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_type.setdefault(_type(r), []).append(r)
    return {"n": len(rows), "accuracy": _accuracy(rows),
            "latency_p50_s": statistics.median(seconds) if seconds else None,
            "latency_p95_s": _quantile(seconds, 0.95),
            "by_type": {t: {"n": len(rs), "accuracy": _accuracy(rs)} for t, rs in sorted(by_type.items())}}


def _quantile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    values = sorted(values)
    pos = q * (len(values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def compare_runs(dir_a: str | os.PathLike[str], dir_b: str | os.PathLike[str]) -> dict[str, Any]:
    """Two eval output folders diffed. For each pipeline in both: accuracy and latency in A and in B
    (all of each run's rows), accuracy on the items both answered and its change, per type, and the
    items whose correctness flipped (matched on (item_id, pipeline)). Raises InputError when a folder
    is missing or holds no results.jsonl."""
    sides = {}
    for key, folder in (("a", dir_a), ("b", dir_b)):
        by_key: dict[tuple[str, str], dict[str, Any]] = {}
        for row in _run_rows(folder):
            by_key[(str(row["item_id"]), str(row["pipeline"]))] = row  # a doubled key: the later row stands
        sides[key] = by_key
    a_rows, b_rows = sides["a"], sides["b"]
    names_a = list(dict.fromkeys(p for _, p in a_rows))
    names_b = list(dict.fromkeys(p for _, p in b_rows))
    pipelines = {}
    for name in (n for n in names_a if n in names_b):
        rows_a = [r for (i, p), r in a_rows.items() if p == name]
        rows_b = [r for (i, p), r in b_rows.items() if p == name]
        common = [(a_rows[k], b_rows[k]) for k in a_rows if k[1] == name and k in b_rows]
        side_a, side_b = _side(rows_a), _side(rows_b)
        acc_ca, acc_cb = _accuracy([a for a, _ in common]), _accuracy([b for _, b in common])
        flipped = []
        for ra, rb in common:
            if _correct(ra) != _correct(rb):
                flipped.append({"item_id": str(ra["item_id"]), "type": _type(rb), "question": rb.get("question"),
                                "reference": rb.get("reference"), "correct_a": _correct(ra), "correct_b": _correct(rb),
                                "prediction_a": ra.get("prediction") if not ra.get("error") else f"error: {ra['error']}",
                                "prediction_b": rb.get("prediction") if not rb.get("error") else f"error: {rb['error']}"})
        flipped.sort(key=lambda f: (f["correct_b"], f["type"], f["item_id"]))  # what broke first
        types = sorted({*side_a["by_type"], *side_b["by_type"]})
        lat_a, lat_b = side_a["latency_p50_s"], side_b["latency_p50_s"]
        pipelines[name] = {
            "n_a": side_a["n"], "n_b": side_b["n"], "accuracy_a": side_a["accuracy"], "accuracy_b": side_b["accuracy"],
            "n_common": len(common), "common_accuracy_a": acc_ca, "common_accuracy_b": acc_cb,
            "diff": _sub(acc_cb, acc_ca),
            "latency_p50_a": lat_a, "latency_p50_b": lat_b,
            "latency_p95_a": side_a["latency_p95_s"], "latency_p95_b": side_b["latency_p95_s"],
            "latency_ratio": (lat_b / lat_a) if lat_a and lat_b is not None else None,
            "by_type": {t: {"n_a": side_a["by_type"].get(t, {}).get("n", 0),
                            "accuracy_a": side_a["by_type"].get(t, {}).get("accuracy"),
                            "n_b": side_b["by_type"].get(t, {}).get("n", 0),
                            "accuracy_b": side_b["by_type"].get(t, {}).get("accuracy")} for t in types},
            "fixed": sum(f["correct_b"] for f in flipped), "broken": sum(not f["correct_b"] for f in flipped),
            "flipped": flipped,
        }
    suites = {k: sorted({str(r.get("suite")) for r in rows.values() if r.get("suite")}) for k, rows in sides.items()}
    return {"a": str(dir_a), "b": str(dir_b), "suite_a": suites["a"], "suite_b": suites["b"],
            "pipelines": pipelines, "only_in_a": [n for n in names_a if n not in names_b],
            "only_in_b": [n for n in names_b if n not in names_a]}


def render_compare(diff: dict[str, Any], max_flipped: int = 20) -> str:
    """A `compare_runs` result as text: per pipeline the accuracy and latency in A and B, the change
    per type, and the flipped items (at most `max_flipped` listed per pipeline)."""
    out = [f"A: {one_line(diff.get('a', ''))}", f"B: {one_line(diff.get('b', ''))}"]
    if diff.get("suite_a") != diff.get("suite_b"):
        out.append(f"note: different suites (A: {', '.join(diff.get('suite_a') or ['?'])}; "
                   f"B: {', '.join(diff.get('suite_b') or ['?'])})")
    for key, side in (("only_in_a", "A"), ("only_in_b", "B")):
        if diff.get(key):
            out.append(f"only in {side}: {', '.join(one_line(n) for n in diff[key])}")
    pipelines = diff.get("pipelines") or {}
    if not pipelines:
        out.append("no pipeline is in both runs: nothing to compare")
        return "\n".join(out) + "\n"
    for name, p in pipelines.items():
        out.append("")
        out.append(f"{one_line(name)}: accuracy {_pct(p.get('accuracy_a'))} (n={p.get('n_a')}) → "
                   f"{_pct(p.get('accuracy_b'))} (n={p.get('n_b')}); change on the {p.get('n_common')} items in both: "
                   f"{_pt(p.get('diff'))} pt")
        out.append(f"  latency p50 {_secs(p.get('latency_p50_a'))} → {_secs(p.get('latency_p50_b'))}"
                   + (f" ({_ratio(p['latency_ratio'])}×)" if _num(p.get("latency_ratio")) is not None else "")
                   + f", p95 {_secs(p.get('latency_p95_a'))} → {_secs(p.get('latency_p95_b'))}")
        by_type = p.get("by_type") or {}
        if by_type:
            type_w = min(max(len("type"), *(len(one_line(t)) for t in by_type)), 24)
            cells = [(one_line(t, type_w), f"{_pct(s.get('accuracy_a'))} ({s.get('n_a')})",
                      f"{_pct(s.get('accuracy_b'))} ({s.get('n_b')})",
                      _pt(_sub(s.get("accuracy_b"), s.get("accuracy_a")))) for t, s in by_type.items()]
            wa = max(len("A"), *(len(c[1]) for c in cells))
            wb = max(len("B"), *(len(c[2]) for c in cells))
            out.append(f"  {'type'.ljust(type_w)}  {'A'.rjust(wa)}  {'B'.rjust(wb)}  Δ pt")
            out += [f"  {t.ljust(type_w)}  {a.rjust(wa)}  {b.rjust(wb)}  {d.rjust(5)}" for t, a, b, d in cells]
        flipped = p.get("flipped") or []
        out.append(f"  flipped: {len(flipped)} ({p.get('fixed', 0)} now right, {p.get('broken', 0)} now wrong)")
        for f in flipped[:max_flipped]:
            mark = "+" if f.get("correct_b") else "-"
            out.append(f"  {mark} {one_line(f.get('item_id'), 40)} [{one_line(f.get('type'), 24)}] "
                       f"{one_line(repr(_text(f.get('prediction_a'))), 60)} → {one_line(repr(_text(f.get('prediction_b'))), 60)}")
        if len(flipped) > max_flipped:
            out.append(f"  … and {len(flipped) - max_flipped} more (compare_runs has them all)")
    return "\n".join(out) + "\n"


def _text(value: Any) -> str:
    return "" if value is None else str(value)
