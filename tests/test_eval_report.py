"""The reports of `mmagent eval`: summary.json, report.md, report.html (checked in a real headless
chromium: plots drawn, nothing fetched, no script run), the CLI table and `--compare`."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mmagent.errors import InputError
from mmagent.eval import report
from mmagent.eval.report import compare_runs, pareto_front, render_compare, render_table, write_reports
from mmagent.eval.results import ResultsWriter

SVG = "{http://www.w3.org/2000/svg}"
EVIL_QUESTION = "What does <script>window.__pwned = 1; alert(1)</script> say?"
EVIL_PIPELINE = 'g.py:<b onmouseover="x">&graph'
TYPES = ["colour", "count", "position"]
CHROMIUM = Path("/usr/bin/chromium")


def pipe(acc, n, lat, by_type, **extra):
    return {"accuracy": acc, "n": n, "correct": round(acc * n), "errors": extra.pop("errors", 0),
            "latency_p50_s": lat, "latency_p95_s": lat * 1.6,
            "stages": extra.pop("stages", {"vlm": {"p50_s": lat * 0.9, "p95_s": lat * 1.4}}),
            "peak_rss_mb": extra.pop("peak_rss_mb", 812.4), "metrics": extra.pop("metrics", {}),
            "by_type": {t: {"accuracy": a, "n": k, "latency_p50_s": lat} for t, (a, k) in by_type.items()}, **extra}


@pytest.fixture
def summary():
    """A hand-built summary: three pipelines, a POPE block, comparisons, attribution for the tool chain.
    The tool chain is slow and reads words; `EVIL_PIPELINE` is fast and bad; adapter in between:
    the Pareto front is EVIL_PIPELINE then adapter (tools is beaten by adapter on both)."""
    return {
        "suite": "scenes-vqa", "metric": "vqa", "n_items": 30,
        "pipelines": {
            "tools": pipe(0.3, 30, 9.1, {"colour": (0.5, 10), "count": (0.2, 10), "position": (0.2, 10)},
                          stages={"caption": {"p50_s": 4.0, "p95_s": 6.0}, "llm": {"p50_s": 5.0, "p95_s": 7.5}},
                          peak_rss_mb=2400.0),
            "adapter": pipe(0.8, 30, 0.27, {"colour": (1.0, 10), "count": (0.9, 10), "position": (0.5, 10)},
                            pope={"n": 10, "yes_ratio": 0.7, "precision": 0.71, "recall": 1.0, "f1": 0.83,
                                  "accuracy": 0.8, "unanswered": 0}),
            # No "position" items: a missing bar, not a zero one; a zero bar for "count".
            EVIL_PIPELINE: pipe(0.1, 20, 0.05, {"colour": (0.2, 10), "count": (0.0, 10)}, errors=2,
                                metrics={"wer": 0.31}),
        },
        "comparisons": [
            {"a": "tools", "b": "adapter", "n": 30, "accuracy_a": 0.3, "accuracy_b": 0.8, "diff": -0.5,
             "ci95": [-0.68, -0.31], "a_only": 1, "b_only": 16, "mcnemar_p": 0.0003,
             "by_type": {t: {"n": 10, "accuracy_a": a, "accuracy_b": b}
                         for t, a, b in (("colour", 0.5, 1.0), ("count", 0.2, 0.9), ("position", 0.2, 0.5))}},
            {"a": "tools", "b": EVIL_PIPELINE, "n": 20, "accuracy_a": 0.35, "accuracy_b": 0.1, "diff": 0.25,
             "ci95": [0.05, 0.45], "a_only": 6, "b_only": 1, "mcnemar_p": 0.125, "by_type": {}},
        ],
        "attribution": {
            "tools": {"wrong": 21, "perception": 12, "reasoning": 6, "unknown": 3, "no_intermediates": 0, "error": 0,
                      "by_type": {
                          "colour": {"wrong": 5, "perception": 2, "reasoning": 3, "unknown": 0,
                                     "no_intermediates": 0, "error": 0},
                          "count": {"wrong": 8, "perception": 6, "reasoning": 2, "unknown": 0,
                                    "no_intermediates": 0, "error": 0},
                          "position": {"wrong": 8, "perception": 4, "reasoning": 1, "unknown": 3,
                                       "no_intermediates": 0, "error": 0}},
                      "examples": {"perception": [{"item_id": "s1-q1", "question": EVIL_QUESTION,
                                                   "prediction": "<img src=x onerror=alert(2)>", "reference": ["3"]}],
                                   "reasoning": [], "unknown": [], "no_intermediates": [], "error": []}},
        },
    }


def row(item_id, pipeline, correct, type_="count", prediction="3", seconds=1.0, **extra):
    return {"item_id": item_id, "pipeline": pipeline, "type": type_, "question": f"How many in {item_id}?",
            "prediction": prediction, "reference": ["3"], "score": float(correct), "correct": correct,
            "seconds": seconds, "stages": {"vlm": seconds}, "intermediates": {}, "error": None,
            "suite": "scenes-vqa", **extra}


@pytest.fixture
def rows():
    return [row("s1-q1", "tools", False, prediction="2"), row("s1-q1", "adapter", True),
            row("s1-q2", "adapter", False, type_="position", prediction="left"),
            row("s1-q3", EVIL_PIPELINE, False, question=EVIL_QUESTION, prediction="</td><script>x()</script>")]


def svg(html_text: str, plot_id: str) -> ET.Element:
    """The plot's <svg> element, parsed as XML (which also proves it well-formed)."""
    match = re.search(rf'<svg id="{plot_id}".*?</svg>', html_text, re.S)
    assert match, f"no svg #{plot_id}"
    return ET.fromstring(match.group(0))


def by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(SVG + tag) if cls in (e.get("class") or "").split()]


# --------------------------------------------------------------------------------------------


def test_write_reports_writes_the_three_files_and_nothing_else(tmp_path, summary, rows):
    out = tmp_path / "run" / "deep"
    paths = write_reports(out, summary, rows)
    assert {k: p.name for k, p in paths.items()} == {"summary": "summary.json", "markdown": "report.md",
                                                      "html": "report.html"}
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md", "summary.json"]  # no temp left
    assert json.loads(paths["summary"].read_text()) == summary
    # Rewriting replaces the files whole.
    summary["suite"] = "second"
    write_reports(out, summary, rows)
    assert json.loads(paths["summary"].read_text())["suite"] == "second"
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md", "summary.json"]


def test_summary_json_has_no_nan(tmp_path, summary):
    summary["pipelines"]["tools"]["latency_p95_s"] = float("nan")
    path = write_reports(tmp_path, summary)["summary"]
    assert json.loads(path.read_text())["pipelines"]["tools"]["latency_p95_s"] is None


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, summary, monkeypatch):
    paths = write_reports(tmp_path, summary)
    before = paths["html"].read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.os, "fsync", broken_fsync)
    summary["suite"] = "changed"
    with pytest.raises(OSError, match="No space"):
        write_reports(tmp_path, summary)
    assert paths["html"].read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md", "summary.json"]


def test_write_reports_rejects_what_is_not_a_summary(tmp_path):
    with pytest.raises(InputError, match="pipelines"):
        write_reports(tmp_path, {"pipelines": [1, 2]})


def test_markdown_tables(tmp_path, summary, rows):
    md = write_reports(tmp_path, summary, rows)["markdown"].read_text()
    evil = r'g.py:\<b onmouseover="x"\>\&graph'
    assert f"| type | tools | adapter | {evil} |" in md
    assert "| colour | 50.0% (n=10) | **100.0% (n=10)** | 20.0% (n=10) |" in md
    assert "| position | 20.0% (n=10) | **50.0% (n=10)** | – |" in md  # a pipeline without the type
    assert "| **all** | 30.0% (n=30) | **80.0% (n=30)** | 10.0% (n=20) |" in md
    # The cost line: latency p50/p95 and peak memory.
    assert "| tools | 30.0% (n=30) | 9 | 0 | 9.10 s | 14.6 s | 2.34 GB | caption 4.00 s, llm 5.00 s |" in md
    assert "| adapter | 80.0% (n=30) | 24 | 0 | 270 ms | 432 ms | 812 MB | vlm 243 ms |" in md
    # POPE, other metrics, comparisons with their CI and McNemar p, attribution per type.
    assert "| adapter | 10 | 70.0% | 71.0% | 100.0% | 83.0% | 80.0% | 0 |" in md
    assert "| wer |" in md and "0.310" in md
    assert "| tools vs adapter | 30 | 30.0% | 80.0% | **-50.0 pt [-68.0, -31.0]** | 1 | 16 | **<0.001** |" in md
    assert "| tools vs " + evil + " | 20 | 35.0% | 10.0% | +25.0 pt [+5.0, +45.0] | 6 | 1 | 0.12 |" in md
    assert "| count | 10 | 20.0% | 90.0% | -70.0 |" in md
    assert "| count | 8 | 6 (75%) | 2 (25%) | 0 |" in md
    assert "| **all** | 21 | 12 (57%) | 6 (29%) | 3 (14%) |" in md
    # Example failures, with user text escaped (no raw tag survives).
    assert "## Example failures" in md and "### tools: perception" in md
    assert r"\<script\>window.\_\_pwned = 1; alert(1)\</script\>" in md
    assert re.search(r"(?<!\\)<[A-Za-z/!?]", md) is None  # every tag-like "<" is backslash-escaped


def test_html_is_self_contained_and_escaped(tmp_path, summary, rows):
    text = write_reports(tmp_path, summary, rows)["html"].read_text()
    assert "<script" not in text.lower()
    assert "&lt;script&gt;window.__pwned" in text
    assert "&lt;img src=x onerror=alert(2)&gt;" in text
    assert "&lt;/td&gt;&lt;script&gt;x()&lt;/script&gt;" in text
    assert "<b onmouseover" not in text and "g.py:&lt;b onmouseover=&quot;x&quot;&gt;&amp;graph" in text
    # Nothing to fetch: no URL of any kind but the SVG namespace, no link/img/iframe.
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+[^\s\"'<>)]*", text))
    assert urls == {"http://www.w3.org/2000/svg"}
    for tag in ("<link", "<img", "<iframe", "<object", "<embed", "@import", "url("):
        assert tag not in text.lower()
    assert "default-src 'none'" in text  # and a CSP that would refuse anything anyway


def test_html_plots_have_the_right_marks(tmp_path, summary, rows):
    text = write_reports(tmp_path, summary, rows)["html"].read_text()
    # 1. Accuracy by type: a bar per (type or "all", pipeline) that has the type: 3 + 3 + 2 types + 3 "all".
    plot = svg(text, "plot-by-type")
    assert plot.find(SVG + "title").text == "Accuracy by type per pipeline" and plot.get("aria-label")
    bars = by_class(plot, "rect", "bar")
    assert len(bars) == 11
    assert {(b.get("data-pipeline"), b.get("data-type")) for b in bars} == (
        {(p, t) for p in ("tools", "adapter") for t in (*TYPES, "all")} |
        {(EVIL_PIPELINE, t) for t in ("colour", "count", "all")})
    heights = {(b.get("data-pipeline"), b.get("data-type")): float(b.get("height")) for b in bars}
    assert heights[("adapter", "colour")] == pytest.approx(2 * heights[("adapter", "position")])
    assert 0 < heights[(EVIL_PIPELINE, "count")] <= 2  # a zero is a sliver, still drawn
    legend = [t.text for t in plot.iter(SVG + "text") if t.text in summary["pipelines"]]
    assert legend[:3] == list(summary["pipelines"])
    assert any(t.text == "accuracy" for t in plot.iter(SVG + "text"))  # axis titles
    assert any(t.text == "item type" for t in plot.iter(SVG + "text"))

    # 2. Accuracy vs latency: a point per pipeline, the front (EVIL_PIPELINE, adapter) as a line.
    plot = svg(text, "plot-pareto")
    points = by_class(plot, "circle", "point")
    assert len(points) == 3
    assert {p.get("data-pipeline") for p in by_class(plot, "circle", "front")} == {EVIL_PIPELINE, "adapter"}
    line = [p for p in by_class(plot, "path", "pareto")]
    assert len(line) == 1 and line[0].get("d").count("L") == 1
    labels = "".join("".join(t.itertext()) for t in by_class(plot, "text", "point-label"))
    assert all(name in labels for name in summary["pipelines"])
    assert any("log scale" in (t.text or "") for t in plot.iter(SVG + "text"))  # 0.05 s .. 9.1 s

    # 3. Loss attribution: a stacked segment per non-zero (type, cause) of the tool chain.
    plot = svg(text, "plot-attribution")
    segments = by_class(plot, "rect", "seg")
    assert len(segments) == 2 + 2 + 3
    per_type = {}
    for s in segments:
        per_type[s.get("data-type")] = per_type.get(s.get("data-type"), 0) + float(s.get("height"))
    assert per_type["count"] == pytest.approx(per_type["position"]) and per_type["count"] > per_type["colour"]
    assert len(by_class(plot, "rect", "seg-perception")) == 3


def test_pareto_front():
    points = [("slow-bad", 9.0, 0.3), ("fast-bad", 0.05, 0.1), ("mid", 0.27, 0.8), ("tie-slower", 0.5, 0.8),
              ("best", 2.0, 0.9)]
    assert [p[0] for p in pareto_front(points)] == ["fast-bad", "mid", "best"]
    assert pareto_front([]) == []


def test_plots_degrade_on_thin_summaries(tmp_path):
    """One pipeline, no types, no latency, no attribution: a valid page, the bar plot still drawn."""
    thin = {"suite": None, "metric": None, "n_items": 2,
            "pipelines": {"only": {"accuracy": 0.5, "n": 2, "by_type": {}, "latency_p50_s": None}}}
    text = write_reports(tmp_path, thin)["html"].read_text()
    assert len(by_class(svg(text, "plot-by-type"), "rect", "bar")) == 1
    assert 'id="plot-pareto"' not in text and "No latencies to plot" in text
    assert 'id="plot-attribution"' not in text
    assert "| **all** | 50.0% (n=2) |" in (tmp_path / "report.md").read_text()


def test_render_table(summary):
    text = render_table(summary)
    lines = text.splitlines()
    assert lines[0].split() == ["type", "tools", "adapter", "g.py:<b", "onmouseov..."]  # long names cut to 20
    assert lines[1].split() == ["colour", "50.0%", "(10)", "100.0%", "(10)", "20.0%", "(10)"]
    assert lines[3].split() == ["position", "20.0%", "(10)", "50.0%", "(10)", "–"]
    assert [l for l in lines if l.startswith("all")][0].split() == ["all", "30.0%", "(30)", "80.0%", "(30)",
                                                                    "10.0%", "(20)"]
    assert lines[-1].split() == ["latency", "p50", "9.10", "s", "270", "ms", "50", "ms"]
    assert max(map(len, lines)) <= 100


def test_render_table_wraps_many_pipelines_within_100_columns(summary):
    many = {f"pipeline-with-a-long-name-{i}": summary["pipelines"]["tools"] for i in range(12)}
    text = render_table({"pipelines": many})
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    assert sum(l.startswith("type") for l in lines) > 1  # several blocks
    assert sum(l.split()[:1] == ["colour"] for l in lines) == sum(l.startswith("type") for l in lines)
    # Every pipeline is shown once (names are cut to 20 characters).
    header_cells = [c for l in lines if l.startswith("type") for c in l.split()[1:]]
    assert len(header_cells) == 12


# --------------------------------------------------------------------------------------------
# --compare


def write_run(folder: Path, rows: list[dict]) -> Path:
    with ResultsWriter(folder) as writer:
        for r in rows:
            writer.write(r)
    (folder / "summary.json").write_text("{}")
    return folder


def test_compare_runs_finds_the_flipped_items(tmp_path):
    a = write_run(tmp_path / "a", [
        row("q1", "tools", True, prediction="3", seconds=2.0), row("q2", "tools", False, prediction="4", seconds=2.0),
        row("q3", "tools", True, type_="colour", prediction="red", seconds=4.0),
        row("q1", "adapter", True, seconds=0.3), row("q2", "adapter", True, seconds=0.3),
        row("q1", "old-only", True)])
    b = write_run(tmp_path / "b", [
        row("q1", "tools", True, prediction="three", seconds=1.0),
        row("q2", "tools", True, prediction="3", seconds=1.0),           # fixed
        row("q3", "tools", False, type_="colour", prediction="blue\x1b[2J", seconds=2.0),  # broken
        row("q4", "tools", True, seconds=1.0),                           # only in B
        row("q1", "adapter", True, seconds=0.3), row("q2", "adapter", True, seconds=0.3),
        row("q1", "new-only", True)])
    diff = compare_runs(a, b)
    assert list(diff["pipelines"]) == ["tools", "adapter"]
    assert diff["only_in_a"] == ["old-only"] and diff["only_in_b"] == ["new-only"]
    tools = diff["pipelines"]["tools"]
    assert (tools["n_a"], tools["n_b"], tools["n_common"]) == (3, 4, 3)
    assert tools["accuracy_a"] == pytest.approx(2 / 3) and tools["accuracy_b"] == pytest.approx(3 / 4)
    assert tools["diff"] == pytest.approx(0.0)  # on the three items in both: 2 right, and 2 right
    assert (tools["latency_p50_a"], tools["latency_p50_b"]) == (2.0, 1.0) and tools["latency_ratio"] == 0.5
    assert tools["by_type"]["colour"] == {"n_a": 1, "accuracy_a": 1.0, "n_b": 1, "accuracy_b": 0.0}
    assert tools["by_type"]["count"]["n_b"] == 3
    assert (tools["fixed"], tools["broken"]) == (1, 1)
    assert [(f["item_id"], f["type"], f["prediction_a"], f["prediction_b"], f["correct_b"])
            for f in tools["flipped"]] == [("q3", "colour", "red", "blue\x1b[2J", False), ("q2", "count", "4", "3", True)]
    assert diff["pipelines"]["adapter"]["flipped"] == []

    text = render_compare(diff)
    assert "tools: accuracy 66.7% (n=3) → 75.0% (n=4)" in text
    assert "latency p50 2.00 s → 1.00 s (0.50×)" in text
    assert "flipped: 2 (1 now right, 1 now wrong)" in text
    assert "- q3 [colour] 'red' → 'blue\\x1b[2J'" in text and "+ q2 [count] '4' → '3'" in text
    assert "\x1b" not in text  # a prediction cannot drive the terminal
    assert "only in A: old-only" in text and "only in B: new-only" in text


def test_compare_runs_rejects_what_is_not_a_run(tmp_path):
    with pytest.raises(InputError, match="is not a folder"):
        compare_runs(tmp_path / "missing", tmp_path)
    (tmp_path / "empty").mkdir()
    write_run(tmp_path / "ok", [row("q1", "tools", True)])
    with pytest.raises(InputError, match="has no results.jsonl"):
        compare_runs(tmp_path / "ok", tmp_path / "empty")


def test_compare_runs_with_nothing_in_common(tmp_path):
    a = write_run(tmp_path / "a", [row("q1", "tools", True)])
    b = write_run(tmp_path / "b", [row("q1", "adapter", True)])
    diff = compare_runs(a, b)
    assert diff["pipelines"] == {}
    assert "nothing to compare" in render_compare(diff)


def test_reports_from_stats_summarize(tmp_path):
    """The contract with the statistics module: its summary of real-shaped rows renders."""
    stats = pytest.importorskip("mmagent.eval.stats")
    rows = []
    for i in range(12):
        t = TYPES[i % 3]
        rows.append(row(f"q{i}", "tools", i % 3 == 0, type_=t, seconds=5.0,
                        intermediates={"caption": "three red circles" if i % 2 else "shapes"}))
        rows.append(row(f"q{i}", "adapter", i % 4 != 0, type_=t, seconds=0.3))
    summary = stats.summarize(rows, suite="scenes-vqa", metric="vqa")
    text = write_reports(tmp_path, summary, rows)["html"].read_text()
    assert len(by_class(svg(text, "plot-by-type"), "rect", "bar")) == 2 * 4
    assert len(by_class(svg(text, "plot-pareto"), "circle", "point")) == 2
    assert by_class(svg(text, "plot-attribution"), "rect", "seg")
    assert "all" in render_table(summary)


# --------------------------------------------------------------------------------------------
# A real browser


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed")
def test_report_in_headless_chromium(tmp_path, summary, rows):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright comes with the dev extra")
    path = write_reports(tmp_path / "run", summary, rows)["html"]
    url = path.resolve().as_uri()
    requests, console, errors = [], [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, wait_until="load")
            page.wait_for_load_state("networkidle")
            assert requests == [url]  # the report itself, nothing else
            assert errors == [] and [c for c in console if c.startswith(("error", "warning"))] == []
            assert page.evaluate("window.__pwned === undefined")  # the question's script did not run
            assert page.evaluate("document.scripts.length") == 0
            assert page.title() == "mmagent eval: scenes-vqa"
            for plot_id, mark in (("plot-by-type", "rect.bar"), ("plot-pareto", "circle.point"),
                                  ("plot-attribution", "rect.seg")):
                plot = page.locator(f"svg#{plot_id}")
                box = plot.bounding_box()
                assert box and box["width"] > 300 and box["height"] > 200, plot_id
                drawn = page.evaluate(
                    """([id, mark]) => [...document.querySelectorAll(`#${id} ${mark}`)].map(e => {
                           const r = e.getBoundingClientRect(); return [r.width, r.height]; })""", [plot_id, mark])
                assert drawn and all(w > 0 and h > 0 for w, h in drawn), (plot_id, drawn)
                assert page.evaluate(f"document.querySelectorAll('#{plot_id} rect, #{plot_id} circle, "
                                     f"#{plot_id} path').length") > 0
            assert len(page.evaluate("[...document.querySelectorAll('#plot-by-type rect.bar')]")) == 11
            # The pareto line is drawn (a path with a real length on screen).
            assert page.evaluate("document.querySelector('#plot-pareto path.pareto').getTotalLength()") > 10
            # The tables are there, the escaped question shown as text.
            assert page.locator("table").count() >= 5
            assert page.get_by_text("<script>window.__pwned = 1; alert(1)</script>", exact=False).count() == 2
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000  # a drawn page (run with --basetemp to keep it and look)
        finally:
            browser.close()
