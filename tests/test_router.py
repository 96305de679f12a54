"""The router (`--pipeline auto`): competence fitted from eval results, policies, the route node
(spoken questions, capability negotiation, the trace), copying routes in, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmagent.backends import UnifiedModel
from mmagent.config import RouterSettings, load_settings
from mmagent.errors import BackendError, ConfigError, InputError
from mmagent.routing import Competence, RouteOption, choose, fit, image_features
from mmagent.runner import DEFAULT_PIPELINE, run, stream
from mmagent.testing import (ScriptedASR, ScriptedCaptioner, ScriptedEmbedder, ScriptedLLM, ScriptedOCR,
                             ScriptedVLM, document_png, scene_png, scripted_toolbox, silent_wav, write_route_eval)

MM = str(Path(sys.executable).with_name("mmagent"))


# -- an eval folder to fit from (mmagent.testing.write_route_eval) --------------------------------------------


def write_eval(folder: Path, n: int = 12) -> Path:
    """Tools and adapter rows (colour/shape: the adapter right; read, receipt totals: the tools
    right), plus rows of the router itself, which are not a route."""
    write_route_eval(folder, n)
    with open(folder / "results.jsonl", "a") as fh:
        first = json.loads((folder / "results.jsonl").read_text().splitlines()[0])
        fh.write(json.dumps({**first, "pipeline": "auto"}) + "\n")
    return folder


@pytest.fixture
def competence_file(tmp_path, monkeypatch) -> Path:
    comp = fit([write_eval(tmp_path / "eval")], ScriptedEmbedder())
    path = tmp_path / "router.json"
    comp.save(path)
    monkeypatch.setenv("MMAGENT_ROUTER_COMPETENCE", str(path))
    monkeypatch.setenv("MMAGENT_ROUTER_ROUTES", "tools,adapter")  # the routes the eval measured
    return path


class ScriptedUnified(ScriptedLLM, UnifiedModel):
    pass


def toolbox(**more):
    backends = dict(llm=ScriptedLLM("from the llm"), vlm=ScriptedVLM("from the vlm"), ocr=ScriptedOCR(["TOTAL 9.75"]),
                    asr=ScriptedASR("what colour is the circle"), caption=ScriptedCaptioner("shapes"),
                    embed=ScriptedEmbedder())
    backends.update(more)
    return scripted_toolbox(**{k: v for k, v in backends.items() if v is not None})


@pytest.fixture
def scene(tmp_path) -> Path:
    path = tmp_path / "scene.png"
    path.write_bytes(scene_png(999))
    return path


@pytest.fixture
def receipt(tmp_path) -> Path:
    path = tmp_path / "receipt.png"
    path.write_bytes(document_png(999))
    return path


# -- competence ----------------------------------------------------------------------------------------------


def test_auto_is_the_default_pipeline_everywhere():
    from mmagent.langchain import ChatMMAgent

    assert DEFAULT_PIPELINE == "auto"
    assert ChatMMAgent()._name() == "auto"
    out = subprocess.run([MM, "run", "--help"], capture_output=True, text=True, check=True).stdout
    assert "[default: auto]" in " ".join(out.split())


def test_image_features_tell_a_scene_from_a_document():
    scene, page = image_features(scene_png(1)), image_features(document_png(1))
    names = ("log_width", "log_height", "aspect", "luma_mean", "luma_std", "saturation_mean", "saturated", "white",
             "dark", "edges", "colours")
    s, d = dict(zip(names, scene)), dict(zip(names, page))
    assert s["saturated"] > 0.1 > d["saturated"]
    assert d["white"] > 0.8 > s["white"]
    assert d["aspect"] < 0 == s["aspect"]
    with pytest.raises(ValueError, match="cannot read the image"):
        image_features(b"not an image")


def test_fit_measures_each_route_per_type_and_learns_the_type(tmp_path):
    comp = fit([write_eval(tmp_path / "eval")], ScriptedEmbedder())
    assert set(comp.routes) == {"tools", "adapter"}  # "auto" rows are not a route
    colour = comp.routes["adapter"]["types"]["colour"]
    assert (colour["n"], colour["correct"], colour["measured"]) == (12, 12, 1.0)
    assert colour["accuracy"] == pytest.approx(13 / 14, abs=1e-4)  # smoothed: (12 + 1) / (12 + 2)
    assert comp.routes["tools"]["types"]["receipt"]["measured"] == 1.0
    assert comp.routes["tools"]["latency_s"] == 2.0 and comp.routes["adapter"]["latency_s"] == 0.5
    assert comp.classes == ["colour", "read", "receipt", "shape"]
    assert comp.checks["type_accuracy_cv"] >= 0.9
    # round trip through the file
    comp.save(tmp_path / "c.json")
    again = Competence.load(tmp_path / "c.json")
    x = comp.vector(ScriptedEmbedder().embed(["What colour is the square?"])[0], [image_features(scene_png(5))],
                    has_audio=False, spoken=False)
    assert max(again.type_probabilities(x), key=again.type_probabilities(x).get) == "colour"
    assert again.type_probabilities(x) == pytest.approx(comp.type_probabilities(x), abs=1e-4)


def test_fit_refuses_what_it_cannot_learn_from(tmp_path):
    with pytest.raises(InputError, match="no results.jsonl"):
        fit([tmp_path], ScriptedEmbedder())
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.jsonl").write_text(json.dumps({"item_id": "a", "pipeline": "tools", "correct": True}) + "\n")
    with pytest.raises(InputError, match="name no media"):
        fit([old], ScriptedEmbedder())


def test_a_broken_competence_file_is_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"version\": 1}")
    with pytest.raises(InputError, match="not a competence file"):
        Competence.load(bad)
    monkeypatch.setenv("MMAGENT_ROUTER_COMPETENCE", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="no file"):
        run("hi", pipeline="auto", toolbox=toolbox())


# -- policies ------------------------------------------------------------------------------------------------


def options():
    return [RouteOption("tools", 0.60, 2.0, True, True), RouteOption("adapter", 0.58, 0.4, True, True),
            RouteOption("unified", 0.90, 1.0, True, False), RouteOption("hybrid", 0.99, 3.0, True, True, "needs image")]


def test_quality_takes_the_best_usable_route_and_names_the_runner_up():
    d = choose(options(), RouterSettings())
    assert (d.route, d.runner_up) == ("unified", "tools")
    assert d.scores["hybrid"]["unusable"] == "needs image"


def test_latency_takes_the_fastest_within_the_margin():
    d = choose(options()[:2], RouterSettings(policy="latency", margin=0.05))
    assert d.route == "adapter" and "fastest" in d.reason
    assert choose(options()[:2], RouterSettings(policy="latency", margin=0.01)).route == "tools"


def test_local_only_never_sends_data_away():
    d = choose(options(), RouterSettings(policy="local-only"))
    assert d.route == "tools" and "not local" in d.scores["unified"]["unusable"]
    with pytest.raises(BackendError, match="local-only"):
        choose([RouteOption("unified", 0.9, 1.0, True, False)], RouterSettings(policy="local-only"))


def test_a_latency_budget_narrows_the_choice():
    d = choose(options(), RouterSettings(policy="budget", latency_budget=0.5))
    assert d.route == "adapter" and "budget" in d.scores["unified"]["unusable"]
    d = choose(options()[:1], RouterSettings(policy="budget", latency_budget=0.1))
    assert d.route == "tools" and "fastest" in d.reason
    with pytest.raises(ConfigError, match="latency_budget"):
        choose(options(), RouterSettings(policy="budget"))


def test_a_route_that_extends_another_is_kept_only_where_it_helps():
    adapter, hybrid = RouteOption("adapter", 0.90, 0.5, True), RouteOption("hybrid", 0.93, 0.4, True, extends="adapter")
    d = choose([adapter, hybrid], RouterSettings(margin=0.05))
    assert d.route == "adapter" and "no measured gain" in d.scores["hybrid"]["unusable"]
    helps = RouteOption("hybrid", 0.96, 0.6, True, extends="adapter")
    assert choose([RouteOption("adapter", 0.90, 0.5, True), helps], RouterSettings(margin=0.05)).route == "hybrid"
    alone = RouteOption("hybrid", 0.5, 0.6, True, extends="adapter")  # its base cannot serve: no comparison
    assert choose([RouteOption("adapter", unusable="x"), alone], RouterSettings()).route == "hybrid"


def test_no_route_can_serve_is_one_line():
    with pytest.raises(BackendError, match="no route can answer"):
        choose([RouteOption("adapter", unusable="needs image")], RouterSettings())


def test_router_settings_are_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("MMAGENT_ROUTER_POLICY", "fastest")
    with pytest.raises(ConfigError, match="quality, latency, local-only, budget"):
        load_settings()
    monkeypatch.setenv("MMAGENT_ROUTER_POLICY", "latency")
    monkeypatch.setenv("MMAGENT_ROUTER_ROUTES", "tools,nope")
    assert load_settings().router.policy == "latency"
    with pytest.raises(ConfigError, match="nope"):
        run("hi", toolbox=toolbox())


# -- the route node --------------------------------------------------------------------------------------------


def test_auto_sends_each_request_where_it_is_answered_best(competence_file, scene, receipt):
    tb = toolbox()
    colour = run("What colour is the circle?", images=[scene], toolbox=tb)
    assert colour.pipeline == "auto" and colour.route["route"] == "adapter"
    assert colour.answer == "from the vlm"
    assert colour.route["runner_up"] == "tools"
    assert max(colour.route["question_type"], key=colour.route["question_type"].get) == "colour"
    assert colour.route["scores"]["adapter"]["accuracy"] > colour.route["scores"]["tools"]["accuracy"]
    assert colour.route["method"].startswith("learned")
    total = run("What is the total on the receipt?", images=[receipt], toolbox=tb)
    assert total.route["route"] == "tools" and total.answer == "from the llm"
    assert any(s.get("name") == "read_text" for s in total.steps)  # the OCR route
    word = run("What word is written in the image?", images=[scene], toolbox=tb)
    assert word.route["route"] == "tools"
    assert "image 1 -> text from tools" in word.route["downgrades"][0]
    text_only = run("What is the capital of France?", toolbox=tb)
    assert text_only.route["route"] == "tools"
    assert "needs image" in text_only.route["scores"]["adapter"]["unusable"]


def test_the_route_is_in_run_json_and_the_router_step_first(competence_file, scene):
    result = run("What colour is the circle?", images=[scene], toolbox=toolbox())
    data = result.to_json()
    assert data["route"]["route"] == "adapter" and data["pipeline"] == "auto"
    assert data["steps"][0]["tool"] in ("embed", "router")
    assert [s["tool"] for s in data["steps"]].count("router") == 1
    assert json.loads(json.dumps(data)) == data


def test_a_spoken_question_is_transcribed_once_and_routed_on(competence_file, scene, tmp_path):
    wav = tmp_path / "q.wav"
    wav.write_bytes(silent_wav(1.0))
    asr = ScriptedASR("what colour is the circle")
    result = run("", audio=[wav], images=[scene], toolbox=toolbox(asr=asr))
    assert result.route["spoken"] is True and result.route["question"] == "what colour is the circle"
    assert result.route["route"] == "adapter"
    assert [s["tool"] for s in result.steps].count("asr") == 1  # the route reused the transcript
    assert "audio 1 -> transcript (asr/scripted)" in result.route["downgrades"]


def test_routes_that_cannot_run_here_are_never_chosen(competence_file, scene):
    result = run("What colour is the circle?", images=[scene], toolbox=toolbox(vlm=None))
    assert result.route["route"] == "tools"
    assert "no vlm backend" in result.route["scores"]["adapter"]["unusable"]


def test_policy_from_the_settings(competence_file, scene, monkeypatch):
    monkeypatch.setenv("MMAGENT_ROUTER_POLICY", "latency")
    monkeypatch.setenv("MMAGENT_ROUTER_MARGIN", "1")
    # the read question is the tools' (slow) strength; within a margin of 1 the fast adapter wins
    result = run("What word is written in the image?", images=[scene], toolbox=toolbox())
    assert result.route["route"] == "adapter" and result.route["policy"] == "latency"


def test_a_unified_model_without_audio_gets_the_transcript(monkeypatch, tmp_path, scene):
    wav = tmp_path / "q.wav"
    wav.write_bytes(silent_wav(1.0))
    unified = ScriptedUnified("from the unified model")
    unified.accepts_here = ("text", "image")
    monkeypatch.setenv("MMAGENT_ROUTER_ROUTES", "unified")
    result = run("Answer the question in the recording.", audio=[wav], images=[scene],
                 toolbox=toolbox(unified=unified, asr=ScriptedASR("how many shapes are there")))
    assert result.route["route"] == "unified"
    assert result.route["downgrades"] == ["audio 1 -> transcript (asr/scripted)"]
    sent = unified.calls[-1]["messages"][-1].content
    kinds = [getattr(p, "type", None) for p in sent]
    assert "image" in kinds and "audio" not in kinds
    assert "how many shapes are there" in sent[-1].text
    assert result.plan["downgrades"] == ["audio -> tools (transcript)"]


def test_a_remote_route_is_skipped_by_local_only(monkeypatch, scene):
    unified = ScriptedUnified("remote")
    unified.is_local = lambda: False
    monkeypatch.setenv("MMAGENT_ROUTER_POLICY", "local-only")
    result = run("What colour is the circle?", images=[scene], toolbox=toolbox(unified=unified))
    assert result.route["route"] != "unified"
    assert result.route["scores"]["unified"]["local"] is False


def test_threads_report_only_this_turns_route(competence_file, scene):
    tb = toolbox()
    first = run("What colour is the circle?", images=[scene], toolbox=tb, thread="t1")
    assert first.route["route"] == "adapter"
    second = run("And what word is written?", toolbox=tb, thread="t1", pipeline="tools")
    assert second.route is None and second.pipeline == "tools"
    third = run("What is the total on the receipt?", toolbox=tb, thread="t1")
    assert third.route is not None and third.route["message_id"] != first.route["message_id"]


def test_streaming_sees_the_router_step(competence_file, scene):
    events = list(stream("What colour is the circle?", images=[scene], toolbox=toolbox(), tokens=True))
    steps = [v for k, v in events if k == "step"]
    assert steps[0]["tool"] in ("embed", "router") and any(s["tool"] == "router" for s in steps)
    assert any(k == "token" for k, _ in events)  # the chosen route's answer streams


def test_hybrid_gives_the_vlm_the_ocr_text(scene):
    vlm = ScriptedVLM("LAMP")
    result = run("What word is written in the image?", images=[scene], pipeline="hybrid",
                 toolbox=toolbox(vlm=vlm, ocr=ScriptedOCR(["LAMP"])))
    prompt = vlm.calls[-1]["messages"][-1].content[-1].text
    assert prompt.startswith("Text in image 1: LAMP") and prompt.endswith("What word is written in the image?")
    assert result.plan["planner"] == "hybrid" and result.plan["context"] == ["text read from image 1"]


# -- routes from plugins, and graphs the router cannot copy in -------------------------------------------------


def test_a_plugins_route_is_a_candidate_and_runs_as_a_subgraph_when_it_cannot_be_copied(monkeypatch, scene):
    from langchain_core.messages import AIMessage
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command

    from mmagent.graphs.kit import MMState, Nodes, emit
    from mmagent.graphs_registry import GraphSpec, get_graphs

    def build(tb, **_):
        nodes = Nodes(tb)

        def decide(state) -> Command:  # Command routing: the router cannot copy this graph in
            return Command(goto="speak")

        def speak(state):
            emit({"step": {"tool": "echo", "seconds": 0.0}})
            return {"answer": "echo", "messages": [AIMessage("echo")], "steps": [{"tool": "echo", "seconds": 0.0}]}

        g = StateGraph(MMState)
        g.add_node("begin", nodes.begin)
        g.add_node("decide", decide, destinations=("speak",))
        g.add_node("speak", speak)
        g.add_edge(START, "begin")
        g.add_edge("begin", "decide")
        g.add_edge("speak", END)
        return g

    get_graphs().register(GraphSpec("echo", "echoes", build, roles=("llm",), brain="llm"), "test")
    monkeypatch.setenv("MMAGENT_ROUTER_ROUTES", "echo")
    events = list(stream("hello", images=[scene], toolbox=toolbox(), tokens=False))
    result = events[-1][1]
    assert result.answer == "echo" and result.route["route"] == "echo"
    assert [s["tool"] for s in result.steps].count("echo") == 1  # not doubled by the subgraph's output
    assert any(k == "step" and v["tool"] == "echo" for k, v in events)  # its steps stream


def test_routes_are_copied_in_under_their_names():
    from mmagent.graphs_registry import get_graphs

    graph = get_graphs().get("auto").compile(toolbox())
    names = set(graph.get_graph().nodes)
    assert {"route", "tools.transcribe", "tools.answer", "adapter.see", "hybrid.read_text"} <= names
    assert "tools.begin" not in names  # a route's begin runs inside the route node (one step less)
    assert not any(n.startswith("unified.") for n in names)  # no unified backend here: not built


# -- eval and the CLI ------------------------------------------------------------------------------------------


def test_eval_rows_record_auto_s_route_and_media(competence_file, tmp_path):
    from mmagent.eval import run_eval

    data = tmp_path / "items.jsonl"
    (tmp_path / "s.png").write_bytes(scene_png(3))
    (tmp_path / "d.png").write_bytes(document_png(3))
    data.write_text(json.dumps({"id": "a", "question": "What colour is the circle?", "answer": "x",
                                "images": ["s.png"], "type": "colour"}) + "\n"
                    + json.dumps({"id": "b", "question": "What is the total on the receipt?", "answer": "9.75",
                                  "images": ["d.png"], "type": "receipt"}) + "\n")
    run_eval(data=str(data), pipelines=["auto", "tools"], out=tmp_path / "out", toolbox=toolbox())
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    auto = {r["item_id"]: r for r in rows if r["pipeline"] == "auto"}
    assert auto["a"]["route"] == "adapter" and auto["b"]["route"] == "tools"
    assert all(Path(r["images"][0]).is_file() for r in rows)
    refit = fit([tmp_path / "out"], ScriptedEmbedder())
    assert set(refit.routes) == {"tools"}  # auto is the router, not a route


def test_route_cli_fit_show_and_explain(tmp_path, home):
    eval_dir = write_eval(tmp_path / "eval", n=4)
    config = tmp_path / "mmagent.toml"
    config.write_text('[roles.embed]\nbackend = "nope"\n')
    bad = subprocess.run([MM, "route", "fit", "--from", str(eval_dir)], capture_output=True, text=True,
                         env={**_env(home), "MMAGENT_CONFIG": str(config)})
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    missing = subprocess.run([MM, "route", "fit", "--from", str(tmp_path / "nowhere")], capture_output=True,
                             text=True, env=_env(home))
    assert missing.returncode != 0 and "results.jsonl" in missing.stderr and "Traceback" not in missing.stderr
    shown = subprocess.run([MM, "route", "show", "--json"], capture_output=True, text=True, env=_env(home), check=True)
    assert json.loads(shown.stdout)["origin"] in ("shipped", "none")


def _env(home):
    import os

    return {**{k: v for k, v in os.environ.items() if not k.startswith("MMAGENT_")}, "MMAGENT_HOME": str(home)}


def test_images_unlike_any_measured_leave_every_route_unmeasured(competence_file, scene, tmp_path):
    """The routes were measured on scenes and receipt-like pages; a photo-like picture is outside
    that domain, so no measurement speaks for any route there (the trace says so)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:480, 0:640]
    photo = np.stack([x / 640 * 180 + 40, y / 480 * 120 + 60, np.sin(x / 50) * 40 + 120], -1).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    far = run("What colour is the circle?", images=[tmp_path / "photo.jpg"], toolbox=toolbox())
    assert far.route["domain"]["inside"] is False and far.route["domain"]["distance"] > far.route["domain"]["threshold"]
    assert far.route["method"].startswith("out of the measured domain")
    assert all(not s["measured"] and s["accuracy"] == 0.5 for s in far.route["scores"].values())
    near = run("What colour is the circle?", images=[scene], toolbox=toolbox())
    assert near.route["domain"]["inside"] is True and near.route["route"] == "adapter"
    again = Competence.load(competence_file)
    assert again.domain["threshold"] == far.route["domain"]["threshold"]
