"""mmagent eval's runner: user data with bad rows, batching under unchanged graphs, results.jsonl
row by row, --resume after a kill, errors as rows, the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from mmagent.backends.results import ChatResult
from mmagent.errors import InputError
from mmagent.eval.data import load_data
from mmagent.eval.results import read_rows
from mmagent.eval.runner import run_eval
from mmagent.testing import ScriptedCaptioner, ScriptedLLM, ScriptedOCR, ScriptedVLM, scripted_toolbox


class CountingVLM(ScriptedVLM):
    """Answers "N shapes" where N is the image's width / 10; `batch` records its batch sizes."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.batch_sizes: list[int] = []
        self.single = 0
        self.lock = threading.Lock()

    @staticmethod
    def _answer(messages) -> str:
        from mmagent.content.parts import ImagePart

        images = [p for m in messages if not isinstance(m.content, str) for p in m.content if isinstance(p, ImagePart)]
        return f"There are {images[0].width // 10} shapes." if images else "no image"

    def chat(self, messages, **kwargs) -> ChatResult:
        with self.lock:
            self.single += 1
        return ChatResult(self._answer(messages))

    def batch(self, requests, *, max_tokens=256, temperature=0.0, stop=None):
        with self.lock:
            self.batch_sizes.append(len(requests))
        return [self._answer(m) for m in requests]


def write_items(folder: Path, n: int, bad: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        Image.new("RGB", (10 * (i % 5 + 1), 16), (200, 40, 40)).save(folder / f"{i}.png")
        lines.append({"id": f"q{i}", "image": f"{i}.png", "question": "How many shapes are there?",
                      "answer": str(i % 5 + 1), "type": "count" if i % 2 else "other"})
    text = "\n".join(json.dumps(x) for x in lines) + "\n"
    if bad:
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        text += "\n".join([
            json.dumps({"id": "nofile", "image": "missing.png", "question": "q?", "answer": "1"}),
            json.dumps({"id": "broken", "image": "broken.png", "question": "q?", "answer": "1"}),
            json.dumps({"id": "noanswer", "image": "0.png", "question": "q?"}),
            "{not json",
            json.dumps({"id": "q0", "image": "0.png", "question": "dup?", "answer": "1"}),
            json.dumps(["a", "list"]),
        ]) + "\n"
    path = folder / "items.jsonl"
    path.write_text(text)
    return path


def test_bad_rows_are_reported_with_their_line_and_skipped(tmp_path):
    data = write_items(tmp_path / "d", 3, bad=True)
    loaded = load_data(str(data), media_dir=tmp_path / "m")
    assert [i.id for i in loaded.items] == ["q0", "q1", "q2"]
    reasons = {s.where: s.reason for s in loaded.skipped}
    assert set(reasons) == {f"items.jsonl:{n}" for n in range(4, 10)}
    assert "not found" in reasons["items.jsonl:4"] and "missing.png" in reasons["items.jsonl:4"]
    assert "unusable" in reasons["items.jsonl:5"]
    assert "answer" in reasons["items.jsonl:6"]
    assert "invalid JSON" in reasons["items.jsonl:7"]
    assert "duplicate" in reasons["items.jsonl:8"]
    assert "object" in reasons["items.jsonl:9"]
    assert Path(loaded.items[0].images[0]).is_absolute()


def test_answers_may_be_lists_vqa_objects_or_fields(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rows = [{"id": 1, "image": "a.png", "question": "q", "answers": [{"answer": "two"}, {"answer": "2"}]},
            {"id": 2, "image": ["a.png"], "question": "q", "answer": {"shop": "X", "total": 9.75}},
            {"id": 3, "image": "a.png", "question": "q", "answer": 7}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    items = load_data(str(tmp_path / "d.jsonl"), media_dir=tmp_path / "m").items
    assert [i.answer for i in items] == [["two", "2"], {"shop": "X", "total": 9.75}, ["7"]]


def test_batching_answers_b_items_in_one_call_with_the_same_rows(tmp_path):
    data = write_items(tmp_path / "d", 8)
    one, many = CountingVLM(), CountingVLM()
    a = run_eval(data=str(data), pipelines=["adapter"], out=tmp_path / "b1", toolbox=scripted_toolbox(vlm=one))
    b = run_eval(data=str(data), pipelines=["adapter"], out=tmp_path / "b4", batch_size=4,
                 toolbox=scripted_toolbox(vlm=many))
    assert one.batch_sizes == [] and one.single == 8
    assert many.single == 0 and sum(many.batch_sizes) == 8 and max(many.batch_sizes) == 4
    key = lambda r: (r["item_id"], r["prediction"], r["score"], r["correct"])  # noqa: E731
    assert sorted(map(key, a.rows)) == sorted(map(key, b.rows))
    assert a.summary["pipelines"]["adapter"]["accuracy"] == 1.0
    assert len(read_rows(tmp_path / "b4" / "results.jsonl")) == 8


def test_rows_carry_stages_and_the_intermediate_texts(tmp_path):
    data = write_items(tmp_path / "d", 2)
    toolbox = scripted_toolbox(ocr=ScriptedOCR(["TOTAL 9.75"]), caption=ScriptedCaptioner("a red square"),
                               llm=ScriptedLLM("There are 1 shapes."))
    run = run_eval(data=str(data), pipelines=["tools"], out=tmp_path / "o", toolbox=toolbox)
    row = run.rows[0]
    assert row["intermediates"]["ocr"] == "TOTAL 9.75"
    assert row["intermediates"]["caption"] == "a red square"
    assert {"ocr", "caption", "llm"} <= set(row["stages"])  # seconds per role
    assert row["prediction"] == "There are 1 shapes." and row["pipeline"] == "tools"
    assert set(run.reports) >= {"summary", "markdown", "html"} or (tmp_path / "o" / "report.html").exists()
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["pipelines"]["tools"]["n"] == 2


class DyingVLM(CountingVLM):
    def __init__(self, after: int, **kw):
        super().__init__(**kw)
        self.after = after

    def chat(self, messages, **kwargs):
        if self.single >= self.after:
            raise KeyboardInterrupt  # what Ctrl-C (or a kill) does mid-run
        return super().chat(messages, **kwargs)


def test_a_killed_run_resumes_with_nothing_lost_and_nothing_doubled(tmp_path):
    data = write_items(tmp_path / "d", 6)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_eval(data=str(data), pipelines=["adapter"], out=out, toolbox=scripted_toolbox(vlm=DyingVLM(3)))
    assert [r["item_id"] for r in read_rows(out / "results.jsonl")] == ["q0", "q1", "q2"]
    with open(out / "results.jsonl", "ab") as fh:  # and a row torn half-way by the kill
        fh.write(b'{"item_id": "q3", "pipeline": "adap')
    with pytest.raises(InputError, match="--resume"):
        run_eval(data=str(data), pipelines=["adapter"], out=out, toolbox=scripted_toolbox(vlm=CountingVLM()))
    with pytest.raises(InputError, match="seed"):
        run_eval(data=str(data), pipelines=["adapter"], out=out, resume=True, seed=5,
                 toolbox=scripted_toolbox(vlm=CountingVLM()))
    vlm = CountingVLM()
    run = run_eval(data=str(data), pipelines=["adapter"], out=out, resume=True, toolbox=scripted_toolbox(vlm=vlm))
    assert vlm.single == 3 and run.new_rows == 3
    ids = [r["item_id"] for r in read_rows(out / "results.jsonl")]
    assert sorted(ids) == [f"q{i}" for i in range(6)]
    assert run.summary["pipelines"]["adapter"]["n"] == 6


class FailingVLM(CountingVLM):
    def chat(self, messages, **kwargs):
        if "q1" in str(messages) or self.single == 1:
            self.single += 1
            raise RuntimeError("model exploded")
        return super().chat(messages, **kwargs)


def test_an_item_that_fails_is_a_row_with_its_error_and_the_run_goes_on(tmp_path):
    data = write_items(tmp_path / "d", 3)
    run = run_eval(data=str(data), pipelines=["adapter"], out=tmp_path / "o", toolbox=scripted_toolbox(vlm=FailingVLM()))
    errors = [r for r in run.rows if r["error"]]
    assert len(errors) == 1 and "model exploded" in errors[0]["error"] and errors[0]["score"] == 0
    assert run.summary["pipelines"]["adapter"]["errors"] == 1 and len(run.rows) == 3


def test_bad_arguments_are_input_errors(tmp_path):
    data = write_items(tmp_path / "d", 1)
    with pytest.raises(InputError, match="--suite"):
        run_eval(out=tmp_path / "o")
    with pytest.raises(InputError, match="unknown pipeline"):
        run_eval(data=str(data), pipelines=["nope"], out=tmp_path / "o")
    with pytest.raises(InputError, match="pipeline 'unified' cannot run here: its unified role is unavailable"):
        run_eval(data=str(data), pipelines=["adapter", "unified"], out=tmp_path / "o",
                 toolbox=scripted_toolbox(vlm=CountingVLM()))
    assert not (tmp_path / "o" / "results.jsonl").exists()
    with pytest.raises(InputError, match="no such file"):
        run_eval(data=str(tmp_path / "missing.jsonl"), pipelines=["adapter"], out=tmp_path / "o")
    with pytest.raises(InputError, match="unknown suite"):
        run_eval(suite="nope", out=tmp_path / "o")
    with pytest.raises(InputError, match="batch-size"):
        run_eval(data=str(data), pipelines=["adapter"], out=tmp_path / "o", batch_size=0)


GRAPH = '''
from langgraph.graph import END, START, MessagesState, StateGraph
from langchain_core.messages import AIMessage

def answer(state):
    q = state["messages"][-1]
    text = q.content if isinstance(q.content, str) else " ".join(b.get("text", "") for b in q.content if b.get("type") == "text")
    return {"messages": [AIMessage("3" if "shapes" in text else "no")]}

builder = StateGraph(MessagesState)
builder.add_node("answer", answer)
builder.add_edge(START, "answer")
builder.add_edge("answer", END)
graph = builder.compile()
'''


def test_cli_runs_a_user_graph_on_user_data_and_reports(tmp_path):
    from mmagent.cli import build_cli

    data = write_items(tmp_path / "d", 5, bad=True)
    (tmp_path / "g.py").write_text(GRAPH)
    out = tmp_path / "o"
    result = CliRunner().invoke(build_cli(), ["eval", "--data", str(data), "--pipelines", f"{tmp_path / 'g.py'}:graph",
                                              "--out", str(out), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "skipped items.jsonl:6" in result.output and "report:" in result.output
    rows = read_rows(out / "results.jsonl")
    assert len(rows) == 5 and sum(r["correct"] for r in rows) == 1  # only the "3" items are right
    assert (out / "report.html").exists() and (out / "skipped.jsonl").exists()
    again = CliRunner().invoke(build_cli(), ["eval", "--data", str(data), "--pipelines", f"{tmp_path / 'g.py'}:graph",
                                             "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output and "Traceback" not in again.output
    missing = CliRunner().invoke(build_cli(), ["eval", "--pipelines", "tools"])
    assert missing.exit_code == 2 and "--suite" in missing.output


def test_hook_register_suites(tmp_path):
    import mmagent
    from mmagent.eval import EvalItem, Suite, get_suites
    from mmagent.plugin_manager import get_plugins

    def shapes(limit, seed, media_dir):
        media_dir.mkdir(parents=True, exist_ok=True)
        for i in range(limit or 4):
            path = media_dir / f"{i}.png"
            Image.new("RGB", (10 * (i + 1), 10)).save(path)
            yield EvalItem(id=f"s{seed}-{i}", question="How many shapes are there?", answer=[str(i + 1)],
                           images=[str(path)], type="count")

    class Plugin:
        @mmagent.hookimpl
        def register_suites(self, register):
            register(Suite("my-shapes", "widths as counts", shapes, metric="contains", pipelines=("adapter",)))
            register(Suite("scenes-vqa", "a hijack", shapes))

    info = get_plugins().add(Plugin(), "my-suites")
    assert get_suites().owners["scenes-vqa"] == "eval"  # a plugin cannot replace a built-in
    assert "suite my-shapes" in info.provides and any("already registered" in e for e in info.errors)
    run = run_eval(suite="my-shapes", out=tmp_path / "o", limit=3, toolbox=scripted_toolbox(vlm=CountingVLM()))
    assert [r["item_id"] for r in run.rows] == ["s0-0", "s0-1", "s0-2"]
    assert run.summary["pipelines"]["adapter"]["accuracy"] == 1.0


def test_hook_register_metrics(tmp_path):
    import mmagent
    from mmagent.eval import Metric, get_metrics
    from mmagent.plugin_manager import get_plugins

    def shouting(prediction, item):
        return {"score": float(prediction.isupper()), "length": float(len(prediction))}

    class Plugin:
        @mmagent.hookimpl
        def register_metrics(self, register):
            register(Metric("shouting", "all capitals", shouting))
            register("not a metric")

    info = get_plugins().add(Plugin(), "my-metrics")
    assert get_metrics().get("shouting").threshold == 1.0
    assert "metric shouting" in info.provides and any("not an mmagent.eval.Metric" in e for e in info.errors)
    data = write_items(tmp_path / "d", 2)
    run = run_eval(data=str(data), pipelines=["adapter"], metric="shouting", out=tmp_path / "o",
                   toolbox=scripted_toolbox(vlm=ScriptedVLM("LOUD")))
    assert run.summary["metric"] == "shouting" and run.summary["pipelines"]["adapter"]["accuracy"] == 1.0
    assert run.rows[0]["metrics"]["length"] == 4.0


def test_the_intent_embedder_is_batched_too(tmp_path):
    from mmagent.testing import ScriptedEmbedder

    class CountingEmbedder(ScriptedEmbedder):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.calls: list[int] = []

        def embed(self, texts):
            self.calls.append(len(texts))
            return super().embed(texts)

    data = write_items(tmp_path / "d", 8)
    # eight different questions (a repeated question is remembered, not embedded again)
    lines = [json.loads(line) for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps({**x, "question": f"How many shapes are in picture {i}?"}) + "\n"
                            for i, x in enumerate(lines)))
    embedder, vlm = CountingEmbedder(), CountingVLM()
    run = run_eval(data=str(data), pipelines=["adapter"], out=tmp_path / "o", batch_size=4,
                   toolbox=scripted_toolbox(vlm=vlm, embed=embedder))
    questions = [n for n in embedder.calls if n <= 4]  # the example phrasings are one bigger call, once
    assert sum(questions) == 8 and max(questions) == 4 and len(questions) == 2
    assert all(r["stages"].get("embed") is not None for r in run.rows) and run.summary["pipelines"]["adapter"]["accuracy"] == 1.0


def test_a_resume_does_not_decode_finished_items_again(tmp_path, monkeypatch):
    import mmagent.eval.data as data_module

    data = write_items(tmp_path / "d", 4)
    run_eval(data=str(data), pipelines=["adapter"], out=tmp_path / "o", limit=3,
             toolbox=scripted_toolbox(vlm=CountingVLM()))
    checked = []
    real = data_module.check_item_media
    monkeypatch.setattr(data_module, "check_item_media", lambda item: checked.append(item.id) or real(item))
    run = run_eval(data=str(data), pipelines=["adapter"], out=tmp_path / "o", resume=True,
                   toolbox=scripted_toolbox(vlm=CountingVLM()))
    assert checked == ["q3"] and run.new_rows == 1 and len(run.rows) == 4
