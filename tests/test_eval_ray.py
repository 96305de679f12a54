"""`mmagent eval --engine ray`: the same rows as the local engine, over a local Ray cluster.

The pipeline is a user graph costing nothing (it upper-cases the question and appends each image's
size, so a row shows that the worker read the item's image). One Ray cluster (2 CPUs) serves the
module's tests and is shut down after them; the CLI test starts and stops its own through
`ray_rows`.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from mmagent.errors import BackendError, InputError  # noqa: E402
from mmagent.eval.core import EvalItem, Suite, get_metrics  # noqa: E402
from mmagent.eval.ray_engine import RayWorker, pack_media, ray_rows, worker_env  # noqa: E402
from mmagent.eval.results import read_rows  # noqa: E402
from mmagent.eval.runner import run_eval  # noqa: E402

GRAPH = textwrap.dedent('''
    import os
    import time

    from langchain_core.messages import AIMessage
    from langgraph.graph import END, START, MessagesState, StateGraph


    def answer(state):
        content = state["messages"][-1].content
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        text = " ".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")
        sizes = [f"{b['extras']['width']}x{b['extras']['height']}" for b in blocks
                 if isinstance(b, dict) and b.get("type") == "image"]
        crash = os.environ.get("MMAGENT_TEST_CRASH_ON")
        if crash and crash in text:
            os._exit(3)  # a worker process dying mid-chunk
        if os.environ.get("MMAGENT_TEST_PIDS"):  # a slow item that leaves its process id behind
            with open(os.path.join(os.environ["MMAGENT_TEST_PIDS"], str(os.getpid())), "w"):
                pass
            time.sleep(2)
        return {"messages": [AIMessage(" ".join([text.upper(), *sizes]))]}


    builder = StateGraph(MessagesState)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    graph = builder.compile()
''')

COMPARED = ("item_id", "pipeline", "type", "prediction", "score", "correct", "reference", "prompt", "metrics",
            "intermediates", "error")


@pytest.fixture(scope="module", autouse=True)
def _ray_down_after_module():
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def cluster():
    """A local 2-CPU Ray cluster shared by the tests that take it."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    return ray


@pytest.fixture
def no_cluster():
    """No Ray running: the code under test has to start (and stop) its own."""
    if ray.is_initialized():
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def task(tmp_path):
    """(graph pipeline, data file): 12 items, each with its own PNG (sizes differ)."""
    from PIL import Image

    graph = tmp_path / "upper_graph.py"
    graph.write_text(GRAPH)
    media = tmp_path / "data" / "imgs"
    media.mkdir(parents=True)
    lines = []
    for k in range(12):
        Image.new("RGB", (8 + k, 6 + k), (20 * k, 100, 200)).save(media / f"img{k}.png")
        question = f"what is shape {k}"
        # even items: the answer the graph gives (correct); odd ones: something it never says
        answer = f"WHAT IS SHAPE {k} {8 + k}x{6 + k}" if k % 2 == 0 else f"circle-{k}"
        lines.append(json.dumps({"id": f"q{k}", "image": f"imgs/img{k}.png", "question": question, "answer": answer,
                                 "type": "even" if k % 2 == 0 else "odd"}))
    data = tmp_path / "data" / "items.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return f"{graph}:graph", data


def _by_key(rows):
    keyed = {(r["item_id"], r["pipeline"]): r for r in rows}
    assert len(keyed) == len(rows), "a (item, pipeline) row is doubled"
    return keyed


def _assert_same_rows(ray_rows_, local_rows):
    ray_keyed, local_keyed = _by_key(ray_rows_), _by_key(local_rows)
    assert ray_keyed.keys() == local_keyed.keys()
    for key, local in local_keyed.items():
        row = ray_keyed[key]
        assert {k: row[k] for k in COMPARED} == {k: local[k] for k in COMPARED}, key
        assert set(row) - {"worker"} == set(local), key


def test_ray_engine_rows_match_the_local_engine(cluster, task, tmp_path):
    pipeline, data = task
    local = run_eval(data=str(data), pipelines=[pipeline], out=tmp_path / "local", engine="local")
    remote = run_eval(data=str(data), pipelines=[pipeline], out=tmp_path / "ray", engine="ray", workers=2)
    rows = read_rows(tmp_path / "ray" / "results.jsonl")
    assert len(rows) == 12 and remote.new_rows == 12
    _assert_same_rows(rows, read_rows(tmp_path / "local" / "results.jsonl"))
    # the graph saw each item's own image, and the scores are mixed (not all trivially right or wrong)
    assert all(r["prediction"].endswith(f"{8 + int(r['item_id'][1:])}x{6 + int(r['item_id'][1:])}") for r in rows)
    assert sum(r["correct"] for r in rows) == 6
    # two workers, both used; each reports its own peak memory
    assert {r["worker"] for r in rows} == {0, 1}
    assert all(r["peak_rss_mb"] > 10 for r in rows)
    assert remote.summary["pipelines"][pipeline]["accuracy"] == local.summary["pipelines"][pipeline]["accuracy"]
    assert ray.is_initialized(), "a cluster the caller started is left running"


def test_ray_engine_resume_adds_only_the_missing_rows(cluster, task, tmp_path):
    pipeline, data = task
    out = tmp_path / "run"
    first = run_eval(data=str(data), pipelines=[pipeline], out=out, engine="ray", workers=2, limit=6)
    assert first.new_rows == 6
    done = {r["item_id"] for r in read_rows(out / "results.jsonl")}
    second = run_eval(data=str(data), pipelines=[pipeline], out=out, engine="ray", workers=2, resume=True)
    assert second.new_rows == 6
    rows = read_rows(out / "results.jsonl")
    assert len(_by_key(rows)) == 12
    assert {r["item_id"] for r in rows[6:]} == {f"q{k}" for k in range(12)} - done
    local = run_eval(data=str(data), pipelines=[pipeline], out=tmp_path / "local")
    _assert_same_rows(rows, local.rows)


def test_a_dead_worker_loses_only_its_chunk_and_resume_redoes_it(cluster, task, tmp_path, monkeypatch):
    pipeline, data = task
    out = tmp_path / "run"
    monkeypatch.setenv("MMAGENT_TEST_CRASH_ON", "shape 5")  # the workers get MMAGENT_* variables
    with pytest.raises(BackendError, match=r"ray worker [01] died: .*4 item\(s\) not done: --resume"):
        run_eval(data=str(data), pipelines=[pipeline], out=out, engine="ray", workers=2)
    rows = read_rows(out / "results.jsonl")
    # chunks of 4: q4-q7 died with its worker; the survivor finished the queue
    assert {r["item_id"] for r in rows} == {f"q{k}" for k in (0, 1, 2, 3, 8, 9, 10, 11)}
    monkeypatch.delenv("MMAGENT_TEST_CRASH_ON")
    again = run_eval(data=str(data), pipelines=[pipeline], out=out, engine="ray", workers=2, resume=True)
    assert again.new_rows == 4
    assert len(_by_key(read_rows(out / "results.jsonl"))) == 12


def test_ctrl_c_kills_the_workers_and_is_re_raised(cluster, task, tmp_path, monkeypatch):
    import _thread
    import os
    import threading
    import time

    pipeline, data = task
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv("MMAGENT_TEST_PIDS", str(pids))

    def interrupt_when_both_work():
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_both_work, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_eval(data=str(data), pipelines=[pipeline], out=tmp_path / "run", engine="ray", workers=2)
    workers = [int(p.name) for p in pids.iterdir()]
    assert len(workers) == 2

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "the workers were not killed"
    assert read_rows(tmp_path / "run" / "results.jsonl") == []  # each was in its first (slow) chunk


def test_a_worker_on_another_node_uses_the_shipped_media(cluster, task, tmp_path):
    """A worker whose node lacks the driver's files (simulated: the files are gone once packed)
    writes the shipped bytes under its temp dir, and its rows are the same; so does the graph file."""
    pipeline, data = task
    local = run_eval(data=str(data), pipelines=[pipeline], out=tmp_path / "local")
    from mmagent.eval.data import load_data

    items = load_data(str(data), media_dir=tmp_path / "m").items[:4]
    suite, metric = local.suite, get_metrics().get("contains")
    media = ray.put(pack_media(items))
    graph_file, attr = pipeline.rsplit(":", 1)
    source = Path(graph_file).read_bytes()
    for path in [*(p for i in items for p in i.images), graph_file]:
        Path(path).rename(path + ".away")
    actor = ray.remote(RayWorker).options(num_cpus=0.5, runtime_env={"env_vars": worker_env()}).remote(
        0, pipeline, suite, metric, batch_size=1, seed=0, extra_metrics=[], cwd=str(tmp_path), graph_file=source)
    try:
        assert ray.get(actor.ready.remote())["failure"] is None
        rows = ray.get(actor.run.remote(items, [media]))
    finally:
        ray.get(actor.close.remote(), timeout=30)
        ray.kill(actor)
    expected = [r for r in local.rows if r["item_id"] in {i.id for i in items}]
    _assert_same_rows(rows, expected)
    assert all(r["error"] is None for r in rows)


def test_shipped_media_keep_their_file_names_and_missing_media_fail_as_locally(task, tmp_path):
    """RayWorker in this process (no Ray): the copy keeps the name; two files of one name in two
    folders stay apart; a path shipped by no one stays as it was, so the item errors as locally."""
    pipeline, data = task
    from mmagent.eval.data import load_data
    from mmagent.eval.runner import resolve_suite

    items = load_data(str(data), media_dir=tmp_path / "m").items[:2]
    worker = RayWorker(1, pipeline, resolve_suite(None, str(data), None), get_metrics().get("contains"),
                       batch_size=1, seed=0, extra_metrics=[], cwd=None)
    assert worker.failure is None
    a, b = tmp_path / "a" / "same.png", tmp_path / "b" / "same.png"
    a.parent.mkdir(), b.parent.mkdir()
    a.write_bytes(b"A"), b.write_bytes(b"B")
    shipped = {str(a): b"A", str(b): b"B"}
    a.unlink(), b.unlink()
    box = [shipped]
    copy_a, copy_b = worker._local_path(str(a), box), worker._local_path(str(b), box)
    assert Path(copy_a).name == Path(copy_b).name == "same.png" and copy_a != copy_b
    assert Path(copy_a).read_bytes() == b"A" and Path(copy_b).read_bytes() == b"B"
    gone = replace_images(items[0], [str(tmp_path / "nowhere.png")])
    [row] = worker.run([gone], [{}])
    assert row["error"] and "nowhere.png" in row["error"] and row["worker"] == 1 and row["score"] == 0
    worker.close()
    assert not Path(copy_a).parent.parent.exists(), "close() removes the worker's copies"


def replace_images(item: EvalItem, images: list[str]) -> EvalItem:
    from dataclasses import replace

    return replace(item, images=images)


def test_a_worker_that_cannot_start_is_a_clear_error(cluster, tmp_path):
    graph = tmp_path / "broken.py"
    graph.write_text("raise RuntimeError('no model here')\n")
    suite = Suite(name="s", description="", source="unused.jsonl", metric="contains")
    items = [EvalItem(id="a", question="q", answer=["x"])]
    with pytest.raises(BackendError, match=r"ray worker 0 could not start: InputError: .*no model here"):
        list(ray_rows(f"{graph}:graph", suite, get_metrics().get("contains"), items, workers=1))


def test_bad_input_and_missing_ray(monkeypatch):
    suite = Suite(name="s", description="", source="unused.jsonl", metric="contains")
    items = [EvalItem(id="a", question="q", answer=["x"])]
    with pytest.raises(InputError, match="--workers"):
        list(ray_rows("adapter", suite, get_metrics().get("contains"), items, workers=0))
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match=r"pip install 'mmagent\[eval\]'"):
        list(ray_rows("adapter", suite, get_metrics().get("contains"), items))


def test_worker_env_passes_mmagent_and_hf_variables_only():
    env = worker_env({"MMAGENT_HOME": "/h", "HF_HUB_OFFLINE": "1", "PATH": "/bin", "SECRET_TOKEN": "x",
                      "XDG_CONFIG_HOME": "/c"})
    assert env == {"MMAGENT_HOME": "/h", "HF_HUB_OFFLINE": "1", "XDG_CONFIG_HOME": "/c"}


def test_cli_ray_engine_starts_and_stops_its_own_cluster(no_cluster, task, tmp_path):
    from click.testing import CliRunner

    from mmagent.cli import build_cli

    pipeline, data = task
    out = tmp_path / "cli"
    result = CliRunner().invoke(build_cli(), ["eval", "--data", str(data), "--pipelines", pipeline, "--engine", "ray",
                                              "--workers", "2", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    rows = read_rows(out / "results.jsonl")
    assert len(_by_key(rows)) == 12 and {r["worker"] for r in rows} == {0, 1}
    assert sum(r["correct"] for r in rows) == 6
    assert not ray.is_initialized(), "the cluster ray_rows started is shut down"


def test_two_pipelines_share_one_cluster_start(no_cluster, task, tmp_path, monkeypatch):
    pipeline, data = task
    graph_file = pipeline.rsplit(":", 1)[0]
    with open(graph_file, "a") as fh:
        fh.write("\ngraph2 = graph\n")
    inits = []
    real_init = ray.init
    monkeypatch.setattr(ray, "init", lambda *a, **k: inits.append(1) or real_init(*a, **k))
    run = run_eval(data=str(data), pipelines=[pipeline, f"{graph_file}:graph2"], out=tmp_path / "o", engine="ray",
                   workers=2, limit=4)
    assert len(run.rows) == 8 and len(inits) == 1  # one cluster for both pipelines
    assert not ray.is_initialized()
