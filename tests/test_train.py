"""Training the scene-world VLM, on tiny settings: the loop resumes exactly, the encoder and the
adapter train and save, and the result loads through the vlm plugin and the zoo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mmagent.train.loop import run_loop  # noqa: E402


def _loop(out: Path, steps: int, kill_at: int | None = None, resume: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))

    def step(i: int) -> dict:
        if i == kill_at:
            raise KeyboardInterrupt
        x = data[torch.randperm(64, generator=torch.Generator().manual_seed(i))[:8]]
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    try:
        run_loop(out, steps, step, modules={"m": model}, optimizer=opt, resume=resume, checkpoint_every=5, quiet=True)
    except KeyboardInterrupt:
        pass
    return model


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    straight = _loop(tmp_path / "a", 12)
    _loop(tmp_path / "b", 12, kill_at=8)  # killed after the step-5 checkpoint
    resumed = _loop(tmp_path / "b", 12, resume=True)
    assert torch.equal(straight.weight, resumed.weight) and torch.equal(straight.bias, resumed.bias)
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log][-7:] == list(range(6, 13))  # steps 6.. re-run after the kill


def test_logged_seconds_adds_up_the_runs_of_a_resumed_stage(tmp_path):
    from mmagent.train.loop import logged_seconds

    log = tmp_path / "log.jsonl"
    # 3 steps (10 s), killed; the resumed run's clock starts again from 0 (5 more s).
    log.write_text("".join(json.dumps({"step": i + 1, "seconds": s}) + "\n" for i, s in enumerate([2, 6, 10, 1.5, 5])))
    assert logged_seconds(log) == 15.0
    assert logged_seconds(tmp_path / "missing.jsonl") == 0.0


def test_stage_three_asks_every_question_type_equally_often():
    from collections import Counter

    from mmagent.scenes import generate_scene
    from mmagent.train.adapter import QA_TYPES, examples

    scenes = [generate_scene("balance", i) for i in range(40)]
    mixed = Counter(e.type for e in examples(scenes, "mixed"))
    balanced = Counter(e.type for e in examples(scenes, "balanced"))
    assert mixed["colour"] < mixed["existence"]  # the natural mix is lopsided
    assert {balanced[t] for t in QA_TYPES} == {max(mixed[t] for t in QA_TYPES)}
    assert balanced["caption"] == mixed["caption"]


def test_position_answers_say_where_each_object_is_before_the_answer():
    """Stage 4 trains position answered with its reasons: each object's column (left/right
    questions) or row (above/below) in the description's words, then the answer — which the
    scorer reads, so a reply in that form scores as its final yes or no."""
    import re

    from mmagent.scenes import generate_scene
    from mmagent.scenes.scoring import is_correct

    seen = 0
    for i in range(60):
        scene = generate_scene("explained", i)
        by_name = {f"the {o.colour} {o.kind}": o for o in scene.objects}
        by_name |= {f"the {o.size} {o.colour} {o.kind}": o for o in scene.objects}
        for q in scene.questions:
            if q.type != "position":
                assert q.explained == ""
                continue
            seen += 1
            a, relation, b = re.match(r"Is (the .+?) (to the left of|to the right of|above|below) (the .+)\?$",
                                      q.question).groups()
            said = ((lambda o: o.column(scene.size)) if relation.startswith("to the") else (lambda o: o.row(scene.size)))
            assert q.explained == (f"{a.capitalize()} is at the {said(by_name[a])} and {b} is at the {said(by_name[b])}, "
                                   f"so {q.answer}.")
            assert is_correct(q.explained, q.answer, "position")
            assert not is_correct(q.explained, "no" if q.answer == "yes" else "yes", "position")
    assert seen >= 30


def test_stage_four_is_the_relation_types_with_position_explained():
    from collections import Counter

    from mmagent.scenes import generate_scene
    from mmagent.train.adapter import QA_TYPES, relation_examples, scene_captions, scene_questions

    scenes = [generate_scene("relations", i) for i in range(60)]
    items = relation_examples(scene_captions(scenes), scene_questions(scenes, explained=True), QA_TYPES)
    n = Counter(e.type for e in items)
    plain = Counter(q.type for q in scene_questions(scenes))
    assert n["position"] == 3 * plain["position"] and n["comparison"] == plain["comparison"]
    assert n["count"] == plain["count"]
    others = sum(v for t, v in n.items() if t not in ("position", "comparison", "count"))
    assert 0.25 < others / len(items) <= 0.3
    assert all(e.answer.endswith((", so yes.", ", so no.")) for e in items if e.type == "position")
    assert {e.answer for e in items if e.type == "existence"} <= {"yes", "no"}
    assert items == relation_examples(scene_captions(scenes), scene_questions(scenes, explained=True), QA_TYPES)


def test_stage_four_with_a_position_share_teaches_the_place_read_first():
    """`position_share`: every position question once (with its reasons), the rest drawn from every
    other type — comparison and count included — so that position is that share of the whole."""
    from collections import Counter

    from mmagent.errors import InputError
    from mmagent.scenes import generate_scene
    from mmagent.train.adapter import QA_TYPES, relation_examples, scene_captions, scene_questions

    scenes = [generate_scene("relations", i) for i in range(200)]
    captions, explained = scene_captions(scenes), scene_questions(scenes, explained=True)
    items = relation_examples(captions, explained, QA_TYPES, position_share=0.8)
    n = Counter(e.type for e in items)
    assert n["position"] == Counter(q.type for q in explained)["position"]
    assert 0.78 < n["position"] / len(items) <= 0.81
    assert {"comparison", "count", "existence"} <= set(n)  # the trained types are kept up, not left out
    assert all(e.answer.endswith((", so yes.", ", so no.")) for e in items if e.type == "position")
    only = relation_examples(captions, explained, QA_TYPES, position_share=1.0)
    assert {e.type for e in only} == {"position"}
    assert items == relation_examples(captions, explained, QA_TYPES, position_share=0.8)
    for bad in (0.0, 1.5):
        with pytest.raises(InputError, match="a fraction in"):
            relation_examples(captions, explained, QA_TYPES, position_share=bad)


def test_a_bad_position_share_stops_a_run_before_it_starts(tmp_path):
    from mmagent.errors import InputError
    from mmagent.train.adapter import AdapterRecipe, train_adapter

    with pytest.raises(InputError, match="a fraction in"):
        train_adapter(None, tmp_path / "o", AdapterRecipe(position_share=1.5), quiet=True)
    assert not (tmp_path / "o").exists()  # nothing written, stages 1-3 not run


def test_lora_modules_must_be_known():
    from mmagent.errors import InputError
    from mmagent.train.adapter import add_lora

    with pytest.raises(InputError, match="lora_modules must be one of attention, all"):
        add_lora(torch.nn.Linear(2, 2), 4, "everything")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory, zoo_model):
    from mmagent.train.encoder import EncoderRecipe, train_encoder

    zoo_model("all-minilm-l6-v2")
    out = tmp_path_factory.mktemp("encoder")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMAGENT_HOME", str(zoo_model("all-minilm-l6-v2").parent.parent))
        metrics = train_encoder(out, EncoderRecipe(train_scenes=64, eval_scenes=32, steps=4, batch_size=16,
                                                   hidden_size=32, layers=1, heads=2), quiet=True)
    return out, metrics


@pytest.mark.slow
def test_encoder_reports_retrieval_zero_shot_and_attributes(tiny_encoder):
    out, metrics = tiny_encoder
    for key in ("retrieval_r_at_1", "zero_shot_accuracy", "presence_accuracy", "count_accuracy", "total_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["retrieval_candidates"] == 32
    from transformers import CLIPVisionModelWithProjection

    vision = CLIPVisionModelWithProjection.from_pretrained(out / "vision")
    assert vision.config.projection_dim == 384 and vision.config.image_size == 64
    assert len((out / "log.jsonl").read_text().splitlines()) == 4


@pytest.fixture
def scene_image():  # function scope: media lives in each test's own MMAGENT_HOME
    import io

    from mmagent.content import load_media
    from mmagent.scenes import generate_scene, render

    buf = io.BytesIO()
    render(generate_scene("t", 0)).save(buf, "PNG")
    return load_media(buf.getvalue(), expect="image")


@pytest.mark.slow
@pytest.mark.parametrize("projector, lora_rank, model_type", [
    ("linear", 0, "llava"), ("mlp", 4, "llava"), ("resampler", 0, "mmagent_llava"), ("qformer", 4, "mmagent_llava")])
def test_adapter_trains_into_a_folder_the_vlm_plugin_and_the_zoo_load(tiny_encoder, tiny_llama, scene_image, tmp_path,
                                                                      monkeypatch, projector, lora_rank, model_type):
    from mmagent.backends import Message, get_backend
    from mmagent.content import TextPart
    from mmagent.train.adapter import AdapterRecipe, train_adapter

    encoder_dir, _ = tiny_encoder
    recipe = AdapterRecipe(llm=str(tiny_llama), train_scenes=16, eval_scenes=4, probe_scenes=32,
                           caption_steps=2, qa_steps=2, focus_steps=1, relations_steps=1,
                           batch_size=4, projector=projector, lora_rank=lora_rank)
    metrics = train_adapter(encoder_dir, tmp_path / "adapter", recipe, quiet=True)
    assert metrics["questions"] > 0 and set(metrics) >= {"existence", "count"}
    # LLaVA's MLP starts grounded (a probe on the patch tokens -> word embeddings); the rest calibrated.
    assert ("probe_patch_accuracy" in metrics["calibration"]) == (projector == "mlp")
    folder = tmp_path / "adapter" / "model"
    assert json.loads((folder / "config.json").read_text())["model_type"] == model_type
    ask = [Message("user", [scene_image, TextPart("Is there a red circle?")])]
    reply = get_backend("vlm", "transformers", model=str(folder), device="cpu").chat(ask, max_tokens=3)
    assert isinstance(reply.text, str) and reply.usage["completion_tokens"] >= 1
    small = tmp_path / "adapter" / "small"
    # stages 2-3's LoRA, then stage 4's (a fresh one over the merged model), folded in in that order
    expected = {"vision", "projector.safetensors", "recipe.json", "metrics.json"} | (
        {"lora", "lora-1"} if lora_rank else set())
    assert {p.name for p in small.iterdir()} == expected
    assert sum(p.stat().st_size for p in small.rglob("*") if p.is_file()) < 5_000_000

    # The zoo re-assembles the same model (LoRA folded in) from the small export.
    import mmagent.plugins.scene_vlm as scene_vlm
    from mmagent.zoo import ModelSpec, Zoo

    monkeypatch.setattr(scene_vlm, "WEIGHTS", small)
    zoo = Zoo(tmp_path / "zoo")
    zoo.add(ModelSpec("scene-vlm", "vlm", "", "test", scene_vlm.build))
    rebuilt = get_backend("vlm", "transformers", model=str(zoo.ensure("scene-vlm")), device="cpu")
    assert rebuilt.chat(ask, max_tokens=3).text == reply.text


@pytest.mark.slow
def test_adapter_training_resumes_after_a_kill(tiny_encoder, tiny_llama, tmp_path):
    from mmagent.train.adapter import AdapterRecipe, train_adapter

    encoder_dir, _ = tiny_encoder
    recipe = AdapterRecipe(llm=str(tiny_llama), train_scenes=16, eval_scenes=2, probe_scenes=32,
                           caption_steps=3, qa_steps=4, focus_steps=2, relations_steps=2,
                           batch_size=2, lora_rank=4, checkpoint_every=2)
    train_adapter(encoder_dir, tmp_path / "a", recipe, quiet=True)
    # A run killed during stage 2 keeps stage 1 and the step-2 checkpoint of stage 2; --resume completes
    # it and stage 3, exactly as the uninterrupted run did.
    import mmagent.train.adapter as adapter_module

    calls = {"n": 0}
    real = adapter_module.answer_loss

    def dies_in_stage_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # 3 caption steps, then the 4th stage-2 step
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(adapter_module, "answer_loss", dies_in_stage_two)
        with pytest.raises(KeyboardInterrupt):
            train_adapter(encoder_dir, tmp_path / "b", recipe, quiet=True)
    assert not (tmp_path / "b" / "model").exists()
    assert len((tmp_path / "b" / "qa" / "log.jsonl").read_text().splitlines()) == 3
    resumed = train_adapter(encoder_dir, tmp_path / "b", recipe, resume=True, quiet=True)
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert {k: v for k, v in resumed.items() if not k.endswith("seconds")} == {
        k: v for k, v in a.items() if not k.endswith("seconds")}
    from safetensors.torch import load_file

    pa, pb = (load_file(tmp_path / d / "small" / "projector.safetensors") for d in ("a", "b"))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    la, lb = (load_file(tmp_path / d / "small" / "lora-1" / "adapter_model.safetensors") for d in ("a", "b"))
    assert la.keys() == lb.keys() and all(torch.equal(la[k], lb[k]) for k in la)  # stage 4's fresh LoRA too


@pytest.mark.slow
def test_a_run_can_start_from_a_trained_model(tiny_encoder, tiny_llama, scene_image, tmp_path, monkeypatch):
    """`init`: a small export's encoder, projector and LoRA folded in; only the stages asked for run;
    the new small export carries every LoRA in order and the history of the runs before it."""
    from mmagent.backends import Message, get_backend
    from mmagent.content import TextPart
    from mmagent.errors import InputError
    from mmagent.train.adapter import AdapterRecipe, load_small, train_adapter

    base = dict(llm=str(tiny_llama), train_scenes=16, eval_scenes=4, probe_scenes=32, batch_size=4, lora_rank=4)
    train_adapter(tiny_encoder[0], tmp_path / "a", AdapterRecipe(caption_steps=1, qa_steps=2, focus_steps=0,
                                                                 relations_steps=1, **base), quiet=True)
    first = tmp_path / "a" / "small"
    then = AdapterRecipe(caption_steps=0, qa_steps=0, focus_steps=0, relations_steps=2, init=str(first), **base)
    metrics = train_adapter(None, tmp_path / "b", then, quiet=True)
    assert metrics["calibration"] == {"init": str(first)} and set(metrics["recipe"]) >= {"init"}
    assert "relations_seconds" in metrics and "qa_seconds" not in metrics
    small = tmp_path / "b" / "small"
    assert sorted(p.name for p in small.glob("lora*")) == ["lora", "lora-1", "lora-2"]
    recipe = json.loads((small / "recipe.json").read_text())
    assert [r["qa_steps"] for r in recipe["earlier"]] == [2] and recipe["adapter"]["init"] == str(first)
    assert json.loads((small / "metrics.json").read_text())["earlier"][0]["questions"] > 0
    # the small export assembles into the model the run saved
    ask = [Message("user", [scene_image, TextPart("Is the red circle to the left of the blue square?")])]
    saved = get_backend("vlm", "transformers", model=str(tmp_path / "b" / "model"), device="cpu")
    model, processor = load_small(small)
    model.save_pretrained(tmp_path / "rebuilt")
    processor.save_pretrained(tmp_path / "rebuilt")
    rebuilt = get_backend("vlm", "transformers", model=str(tmp_path / "rebuilt"), device="cpu")
    assert rebuilt.chat(ask, max_tokens=12).text == saved.chat(ask, max_tokens=12).text
    # A run without stage 4 still gives the replies room for position with its reasons: a model it
    # starts from may have been trained to answer that way.
    import mmagent.train.adapter as adapter_module

    limits = []
    real = adapter_module.evaluate_qa
    monkeypatch.setattr(adapter_module, "evaluate_qa",
                        lambda *a, **k: limits.append(k["new_tokens"]) or real(*a, **k))
    train_adapter(None, tmp_path / "d", AdapterRecipe(caption_steps=0, qa_steps=1, focus_steps=0, relations_steps=0,
                                                      init=str(small), **base), quiet=True)
    assert limits and limits[0] > 12  # "The red circle is at the left and the blue square is at the right, so no."
    with pytest.raises(InputError, match="was trained with projector mlp; this run asks for linear"):
        train_adapter(None, tmp_path / "c", AdapterRecipe(projector="linear", init=str(first), caption_steps=0,
                                                          qa_steps=0, focus_steps=0, relations_steps=1,
                                                          **base), quiet=True)


def test_cli_adapter_without_a_trained_encoder_is_one_line(tmp_path):
    import subprocess
    import sys

    mm = str(Path(sys.executable).with_name("mmagent"))
    (tmp_path / "empty").mkdir()
    out = subprocess.run([mm, "train", "adapter", "--encoder", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds no trained encoder" in lines[0], out.stderr
    assert not (tmp_path / "o").exists()
    for args, says in ((["--init", str(tmp_path / "empty")], "is not a trained adapter's small export"),
                       (["--data", str(tmp_path / "d.jsonl"), "--relations-steps", "5"], "--relations-steps is the scene"),
                       (["--data", str(tmp_path / "d.jsonl"), "--position-share", "0.8"], "--position-share is the scene"),
                       # before an encoder is trained on the data (minutes), not after
                       (["--data", str(tmp_path / "d.jsonl"), "--llm", str(tmp_path / "no-llm")], "--llm")):
        out = subprocess.run([mm, "train", "adapter", "--out", str(tmp_path / "o"), *args], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode != 0 and out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr
        assert says in out.stderr and not (tmp_path / "o").exists()
    bad = subprocess.run([mm, "train", "adapter", "--encoder", str(tmp_path / "empty"), "--out", str(tmp_path / "o"),
                          "--projector", "transformer"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "transformer" in bad.stderr
    bad = subprocess.run([mm, "train", "adapter", "--encoder", str(tmp_path / "empty"), "--out", str(tmp_path / "o"),
                          "--position-share", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--position-share" in bad.stderr


def test_query_adapters_need_a_square_number_of_queries(tiny_encoder, tiny_llama):
    from mmagent.train.adapter import AdapterRecipe, build_llava

    from mmagent.errors import InputError

    with pytest.raises(InputError, match="num_queries must be a square"):
        build_llava(tiny_encoder[0], AdapterRecipe(llm=str(tiny_llama), projector="resampler", num_queries=3))


def test_an_llm_folder_that_is_not_a_causal_lm_is_one_clear_error(tiny_encoder, tmp_path):
    from mmagent.errors import InputError
    from mmagent.train.adapter import AdapterRecipe, build_llava

    (tmp_path / "notes").mkdir()
    with pytest.raises(InputError, match="--llm .*notes: not a transformers causal LM"):
        build_llava(tiny_encoder[0], AdapterRecipe(llm=str(tmp_path / "notes")))
    with pytest.raises(InputError, match="--llm .*gone: no such folder"):
        build_llava(tiny_encoder[0], AdapterRecipe(llm=str(tmp_path / "gone")))


def test_cli_refuses_to_start_over_on_an_earlier_run(tmp_path):
    import subprocess
    import sys

    mm = str(Path(sys.executable).with_name("mmagent"))
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "checkpoint.pt").write_bytes(b"earlier run")
    out = subprocess.run([mm, "train", "encoder", "--out", str(tmp_path / "enc")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "--resume" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert (tmp_path / "enc" / "checkpoint.pt").read_bytes() == b"earlier run"


@pytest.mark.slow
def test_places_and_signs_teach_position_and_reading_and_report_pope(tmp_path, tiny_llama, zoo_model, monkeypatch):
    """The position / read-the-word recipe (not yet the shipped one): the encoder's patch tokens
    also learn their object's row and column words and the printed word over them; the adapter
    trains and is scored on read-the-word questions, starts with position and word units in its
    projector, and reports POPE's yes-ratio / precision / recall / F1 for the yes/no types."""
    from mmagent.train.adapter import AdapterRecipe, train_adapter
    from mmagent.train.encoder import EncoderRecipe, train_encoder
    from mmagent.train.scene_data import PLACES, make_scenes

    monkeypatch.setenv("MMAGENT_HOME", str(zoo_model("all-minilm-l6-v2").parent.parent))
    scenes = make_scenes("t", 40)
    worded = [i for i, s in enumerate(scenes.scenes) if s.word]
    assert worded and all(scenes.signs[i].sum() >= 1 for i in worded)  # the sign covers some patches
    assert all(scenes.signs[i].sum() == 0 for i in range(40) if i not in worded)
    assert scenes.places.sum(-1).sum(-1).tolist() == [2 * len(s.objects) for s in scenes.scenes]
    i = worded[0]
    assert scenes.signs[i].nonzero()[:, 0].min() >= 12  # the band is the bottom row of patches
    enc = tmp_path / "enc"
    metrics = train_encoder(enc, EncoderRecipe(train_scenes=64, eval_scenes=32, steps=3, batch_size=16, hidden_size=32,
                                               layers=1, heads=2, places_and_signs=True), quiet=True)
    assert 0 <= metrics["patch_places_all_correct"] <= 1 and 0 <= metrics["sign_patch_accuracy"] <= 1
    recipe = AdapterRecipe(llm=str(tiny_llama), train_scenes=24, eval_scenes=8, probe_scenes=32, caption_steps=1,
                           qa_steps=2, focus_steps=1, relations_steps=0, batch_size=4, lora_rank=2,
                           places_and_signs=True)
    out = train_adapter(enc, tmp_path / "ad", recipe, quiet=True)
    assert "read" in out and {"existence", "position"} <= set(out["pope"])
    assert set(out["pope"]["existence"]) >= {"yes_ratio", "precision", "recall", "f1"}
    assert "read" not in out["pope"] and len(PLACES) == 6
