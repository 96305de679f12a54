"""Training on the user's own data and on pretrained vision encoders, with tiny random models:
`mmagent train encoder|adapter --data`, `--vision-encoder` (CLIP, SigLIP, DINOv2 built from
config), the whole recipe from --data alone, held-out accuracy per type, bad rows reported, and
the result a LLaVA folder the vlm plugin loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

from mmagent.cli import build_cli  # noqa: E402
from mmagent.train.adapter import AdapterRecipe, answer_matches, train_adapter  # noqa: E402
from mmagent.train.toydata import write_toy_dataset  # noqa: E402

TINY = dict(qa_steps=2, focus_steps=1, caption_steps=1, batch_size=4, lora_rank=2, checkpoint_every=1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "data", n_images=12, seed=3, size=32).jsonl


def _tower(kind: str, folder: Path) -> Path:
    """A tiny random vision tower of `kind` saved with an image processor, as a user's would be."""
    import transformers as tf

    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8)
    if kind == "clip":
        model = tf.CLIPVisionModel(tf.CLIPVisionConfig(image_size=32, **small))
        processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    elif kind == "siglip":
        model = tf.SiglipVisionModel(tf.SiglipVisionConfig(image_size=32, **small))
        processor = tf.SiglipImageProcessor(size={"height": 32, "width": 32})
    else:
        model = tf.Dinov2Model(tf.Dinov2Config(image_size=32, **small))
        processor = tf.BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                         do_center_crop=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_the_answer_scorer_reads_the_start_of_the_reply():
    assert answer_matches("Pink.", "pink") and answer_matches("the heart", "heart")
    assert answer_matches("Yes, there is one.", "yes") and not answer_matches("No.", "yes")
    assert not answer_matches("orange or pink", "pink") and not answer_matches("", "pink")
    assert answer_matches("2", "2") and not answer_matches("12", "2")


@pytest.mark.slow
@pytest.mark.parametrize("kind, strategy", [("clip", "default"), ("siglip", "full"), ("dinov2", "default")])
def test_a_pretrained_vision_encoder_trains_on_user_data_into_a_loadable_llava(kind, strategy, toy, tiny_llama,
                                                                               tmp_path):
    from PIL import Image

    from mmagent.backends import Message, get_backend
    from mmagent.content import TextPart, load_media

    tower = _tower(kind, tmp_path / kind)
    recipe = AdapterRecipe(llm=str(tiny_llama), vision_encoder=str(tower), data=str(toy), val_fraction=0.25,
                           unfreeze_vision_layers=1, **TINY)
    metrics = train_adapter(None, tmp_path / "out", recipe, quiet=True)
    assert metrics["questions"] > 0 and {"yes/no", "colour"} <= set(metrics)
    assert metrics["data"]["val_images"] == 3 and metrics["data"]["problems"] == 0
    folder = tmp_path / "out" / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["vision_feature_select_strategy"] == strategy and config["image_seq_length"] == 16
    assert not (tmp_path / "out" / "small").exists()  # the small export is the scene VLM's (own encoder)
    # the tower trained (its last layer was unfrozen) and the folder answers through the vlm plugin
    image = load_media(toy.parent / "images" / "000000.png", expect="image")
    reply = get_backend("vlm", "transformers", model=str(folder), device="cpu").chat(
        [Message("user", [image, TextPart("Is there a pink heart?")])], max_tokens=3)
    assert isinstance(reply.text, str) and reply.usage["completion_tokens"] >= 1
    assert Image.open(toy.parent / "images" / "000000.png").size == (32, 32)


@pytest.mark.slow
def test_the_whole_recipe_from_data_alone_with_bad_rows_reported(tmp_path, tiny_llama, zoo_model, models_home,
                                                                 monkeypatch):
    """`mmagent train adapter --data D` with no encoder: the encoder learns from D's questions
    first (OUT/encoder), then the adapter; bad rows are listed with their lines and skipped."""
    zoo_model("all-minilm-l6-v2")
    monkeypatch.setenv("MMAGENT_HOME", str(models_home))
    toy = write_toy_dataset(tmp_path / "toy", n_images=10, seed=5, size=32, bad_rows=True)
    out = tmp_path / "out"
    result = CliRunner().invoke(build_cli(), [
        "train", "adapter", "--data", str(toy.jsonl), "--out", str(out), "--llm", str(tiny_llama),
        "--encoder-steps", "2", "--caption-steps", "0", "--qa-steps", "2", "--focus-steps", "1", "--batch-size", "4",
        "--lora-rank", "0", "--val-fraction", "0.3"])
    assert result.exit_code == 0, result.output
    for line in toy.bad_lines:  # each bad row reported by its line, once (the summary is printed once)
        assert result.output.count(f"data.jsonl:{line}:") == 1, result.output
    encoder = json.loads((out / "encoder" / "metrics.json").read_text())
    assert "yes/no" in encoder["answer_accuracy"] and encoder["data"]["problems"] == len(toy.bad_lines)
    assert encoder["recipe"]["patch_size"] == 8 and (not encoder["words"] or 0 <= encoder["words_accuracy"] <= 1)
    # binding pairs need two answer words named in a held-out question: none in 10 images (None); the
    # figure on the toy set is in docs/scene-vlm.md, the loss is tested in test_train_data.py
    assert "pairs_accuracy" in encoder and (encoder["pairs_accuracy"] is None or 0 <= encoder["pairs_accuracy"] <= 1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["questions"] > 0 and metrics["data"]["val_images"] == 3
    assert "probe_pair_accuracy" in metrics["calibration"]  # the grounded probe reports them too
    assert (out / "model" / "config.json").is_file() and (out / "small" / "projector.safetensors").is_file()
    # "How many shapes are there?": the encoder's CLS token learnt the count, so LLaVA keeps it
    # ("full": 64 patches + CLS) and the grounded probe reads counts from it
    assert encoder["count_keys"] == [[]]
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["vision_feature_select_strategy"] == "full" and config["image_seq_length"] == 65
    assert 0 <= metrics["calibration"]["probe_count_accuracy"] <= 1
    from mmagent.backends import Message, get_backend
    from mmagent.content import TextPart, load_media

    image = load_media(toy.jsonl.parent / "images" / "000000.png", expect="image")
    for folder in (out / "model", _small_as_llava(out, tiny_llama, tmp_path / "again")):  # both keep the CLS token
        reply = get_backend("vlm", "transformers", model=str(folder), device="cpu").chat(
            [Message("user", [image, TextPart("How many shapes are there?")])], max_tokens=2)
        assert reply.usage["completion_tokens"] >= 1
        assert json.loads((folder / "config.json").read_text())["image_seq_length"] == 65


def _small_as_llava(out: Path, llm: Path, dest: Path) -> Path:
    """The small export rebuilt into a LLaVA folder, as the scene-VLM plugin does with its own."""
    from mmagent.train.adapter import AdapterRecipe, build_llava

    recipe = json.loads((out / "small" / "recipe.json").read_text())["adapter"]
    model, processor = build_llava(out / "small", AdapterRecipe(**recipe | {"llm": str(llm)}))
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    return dest


@pytest.mark.slow
def test_the_data_encoder_trains_on_binding_pairs_and_counts_and_reports_them(tmp_path, zoo_model, models_home,
                                                                              monkeypatch):
    """With enough questions to name answer words ("What colour is the heart?"), the encoder's steps
    include the binding loss and its held-out metrics the pairs' accuracy; with questions answered
    by a number, its CLS token learns the counts and the saved tower tells LLaVA to keep it."""
    from mmagent.train.encoder import EncoderRecipe, train_encoder_on_data
    from mmagent.train.vision import own_tower

    zoo_model("all-minilm-l6-v2")
    monkeypatch.setenv("MMAGENT_HOME", str(models_home))
    toy = write_toy_dataset(tmp_path / "toy", n_images=40, seed=3, size=32)
    metrics = train_encoder_on_data(tmp_path / "enc", EncoderRecipe.for_data(steps=2, batch_size=8), str(toy.jsonl),
                                    val_fraction=0.25, quiet=True)
    steps = [json.loads(line) for line in (tmp_path / "enc" / "log.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(row["pairs"] > 0 and row["counts"] > 0 for row in steps)
    assert metrics["words"] >= 2 and 0 <= metrics["pairs_accuracy"] <= 1
    assert metrics["count_keys"] == [[]] and 0 <= metrics["cls_count_accuracy"] <= 1
    assert own_tower(tmp_path / "enc").strategy == "full"


@pytest.mark.slow
def test_a_killed_user_data_run_resumes_to_the_same_weights(toy, tiny_llama, tmp_path, monkeypatch):
    """--resume after a kill reaches the weights an uninterrupted run reaches."""
    from safetensors.torch import load_file

    import mmagent.train.loop as loop

    tower = _tower("clip", tmp_path / "clip")
    recipe = AdapterRecipe(llm=str(tiny_llama), vision_encoder=str(tower), data=str(toy), val_fraction=0.25,
                           **{**TINY, "qa_steps": 4, "focus_steps": 0})
    train_adapter(None, tmp_path / "a", recipe, quiet=True)
    real = loop.save_checkpoint
    calls = []

    def dying(path, **state):
        real(path, **state)
        calls.append(state["step"])
        if state["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", dying)
    with pytest.raises(KeyboardInterrupt):
        train_adapter(None, tmp_path / "b", recipe, quiet=True)
    monkeypatch.setattr(loop, "save_checkpoint", real)
    train_adapter(None, tmp_path / "b", recipe, resume=True, quiet=True)
    a, b = load_file(tmp_path / "a" / "model" / "model.safetensors"), load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    cases = [
        (["train", "adapter", "--out", str(tmp_path / "a")], "give --encoder"),
        (["train", "adapter", "--encoder", str(tmp_path), "--vision-encoder", "x", "--out", str(tmp_path / "b")],
         "only one of --encoder, --vision-encoder and --init"),
        (["train", "adapter", "--vision-encoder", str(tmp_path / "none"), "--device", "cuda:7",
          "--out", str(tmp_path / "c")], "--device"),
    ]
    for args, fragment in cases:
        result = runner.invoke(build_cli(), args)
        assert result.exit_code != 0 and fragment in result.output, result.output
        assert "Traceback" not in result.output
    png = tmp_path / "not.jsonl"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    result = runner.invoke(build_cli(), ["train", "encoder", "--data", str(png), "--out", str(tmp_path / "d"), "--steps", "1"])
    assert result.exit_code != 0 and "not.jsonl" in result.output and "Traceback" not in result.output


def test_multi_turn_examples_are_the_chat_template_with_every_answer_labelled(tiny_llama, tmp_path):
    """Stage 2 on user data asks an image's questions as one conversation (LLaVA's multi-turn
    data): the tokens are exactly what the chat template renders for that conversation, the
    labels are each answer + <|im_end|> and nothing else, and a one-turn example costs the same
    loss through the multi-turn path as through the single-answer one."""
    from mmagent.train.adapter import (Example, _prompt, answer_loss, build_llava, encode_batch, image_tokens,
                                       stage_examples)

    tower = _tower("clip", tmp_path / "clip")
    model, processor = build_llava(None, AdapterRecipe(llm=str(tiny_llama), vision_encoder=str(tower)))
    tok = processor.tokenizer
    questions = [Example(0, None, f"Question {n}?", answer, "t") for n, answer in enumerate(["pink", "yes", "2"])]
    questions.append(Example(1, None, "Other image?", "no", "t"))
    items = stage_examples([], questions, "mixed", turns=2)
    assert [(e.scene, e.text, e.more) for e in items] == [  # as few conversations as can be, evenly long
        (0, "Question 0?", ()), (0, "Question 1? Answer with one word.", (("Question 2? Answer with one word.", "2"),)),
        (1, "Other image?", ())]
    ten = [Example(0, None, f"Q{n}?", "yes", "t") for n in range(10)]
    assert [1 + len(e.more) for e in stage_examples([], ten, "mixed", turns=4)] == [3, 3, 4]
    assert [1 + len(e.more) for e in stage_examples([], ten, "mixed", turns=12)] == [10]
    talk = Example(0, "Be brief.", "Question 0?", "pink", "t", (("Question 1?", "yes"),))
    ids, mask, labels, keep = encode_batch(processor, [talk, Example(1, None, "Q?", "no", "t")])
    assert keep is None and ids.shape == labels.shape
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Question 0?"}]},
                {"role": "assistant", "content": "pink"}, {"role": "user", "content": "Question 1?"},
                {"role": "assistant", "content": "yes"}]
    rendered = processor.apply_chat_template(messages).replace("<image>", "<image>" * image_tokens(processor))
    expected = tok(rendered.removesuffix("\n"), add_special_tokens=False)["input_ids"]
    row = ids[0][mask[0].bool()].tolist()
    assert row == expected
    labelled = labels[0][labels[0] != -100].tolist()
    assert tok.decode(labelled) == "pink<|im_end|>yes<|im_end|>"
    # one turn: the gathered-positions loss equals the last-positions loss
    single = [Example(0, None, "Q?", "pink", "t"), Example(1, "Be brief.", "Longer question here?", "no", "t")]
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = answer_loss(model, pixels, *encode_batch(processor, single))
        ids, mask, labels, keep = encode_batch(processor, single)
        full = torch.full_like(ids, -100)
        full[:, -labels.shape[1]:] = labels
        b = answer_loss(model, pixels, ids, mask, full, None)
    assert torch.allclose(a, b, atol=1e-5)
    assert _prompt(processor, None, "Q?").count("<image>") == image_tokens(processor)


def test_questions_about_one_image_answered_together_say_what_each_asked_alone_says(tiny_llama, tmp_path):
    """The held-out evaluation reads an image and its prompt once for all of its questions (the
    shared tokens' keys and values copied, each question padded in the middle): the replies are
    those of each question asked alone, unpadded — with CLS kept ("full") or dropped, and with
    questions of different lengths and system prompts."""
    from mmagent.train.adapter import Example, _prompt, answer_together, build_llava, evaluate_qa

    for kind in ("clip", "siglip"):
        tower = _tower(kind, tmp_path / kind)
        torch.manual_seed(1)
        model, processor = build_llava(None, AdapterRecipe(llm=str(tiny_llama), vision_encoder=str(tower)))
        with torch.no_grad():  # a projector that is not the calibrated start: replies vary by image
            for param in model.model.multi_modal_projector.parameters():
                param.normal_(0, 0.5)
        model.eval()
        pixels = torch.randn(2, 3, 32, 32)
        items = [Example(0, "Be brief.", q, "x", "t") for q in ("Is it?", "What colour is the long thing there?", "N?")]
        together = answer_together(model, processor, items, pixels, 5)
        tok = processor.tokenizer
        alone = []
        with torch.no_grad():
            for e in items:
                enc = tok([_prompt(processor, e.system, e.text)], return_tensors="pt", add_special_tokens=False)
                out = model.generate(**enc, pixel_values=pixels[[e.scene]], max_new_tokens=5, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
                alone.append(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
        assert together == alone and any(together), kind
        # the evaluation groups by (image, system prompt) and scores what each question got
        mixed = items + [Example(1, None, "Is it?", "x", "t"), Example(0, None, "Is it?", "x", "u")]
        shared = evaluate_qa(model, processor, mixed, pixels, score=lambda reply, answer, t: reply == together[0])
        plain = evaluate_qa(model, processor, mixed, pixels, score=lambda reply, answer, t: reply == together[0],
                            shared=False, batch_size=1)
        assert shared == plain and shared["questions"] == 5


def test_shifted_images_move_by_at_most_the_fraction_and_repeat_the_edge():
    from mmagent.train.encoder import shifted

    pixels = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    a = shifted(pixels, 0.125, torch.Generator().manual_seed(1))
    b = shifted(pixels, 0.125, torch.Generator().manual_seed(1))
    assert a.shape == pixels.shape and torch.equal(a, b)  # a function of the generator: --resume is exact
    assert shifted(pixels, 0.0, torch.Generator()) is pixels
    padded = torch.nn.functional.pad(pixels, (2, 2, 2, 2), mode="replicate")
    for i in range(2):  # each image is one 16x16 window of its edge-padded self, at most 2 px off
        windows = [(y, x) for y in range(5) for x in range(5) if torch.equal(a[i], padded[i, :, y:y + 16, x:x + 16])]
        assert windows


@pytest.mark.slow
def test_out_of_memory_splits_the_batch_and_reaches_the_same_weights(toy, tiny_llama, tmp_path, monkeypatch):
    """Batch size scaled to memory: when the device runs out of memory the step's batch goes
    through in halves (then quarters...), gradients accumulated by share — the same weights as
    the whole batch at once, up to float rounding (float32 here: bf16 rounds per piece)."""
    from safetensors.torch import load_file

    import mmagent.train.adapter as adapter_module

    tower = _tower("clip", tmp_path / "clip")
    recipe = AdapterRecipe(llm=str(tiny_llama), vision_encoder=str(tower), data=str(toy), val_fraction=0.25,
                           precision="fp32", **{**TINY, "qa_steps": 3, "focus_steps": 1})
    train_adapter(None, tmp_path / "whole", recipe, quiet=True)
    real, sizes = adapter_module.answer_loss, []

    def small_device(model, pixels, ids, *rest):
        sizes.append(len(ids))
        if len(ids) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, pixels, ids, *rest)

    monkeypatch.setattr(adapter_module, "answer_loss", small_device)
    train_adapter(None, tmp_path / "pieces", recipe, quiet=True)
    assert sizes[:3] == [4, 2, 1] and set(sizes[3:]) == {1}  # halved twice, then remembered
    a = load_file(tmp_path / "whole" / "model" / "model.safetensors")
    b = load_file(tmp_path / "pieces" / "model" / "model.safetensors")
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    changed = [k for k in a if "multi_modal_projector" in k]
    assert changed


def test_cli_recipes_scenes_learn_places_and_signs_by_default_and_data_gets_its_own(tmp_path, monkeypatch):
    """The CLI's defaults are the shipped recipes: on scenes the encoder and adapter learn places
    and signs unless --no-places-and-signs; on --data the adapter trains 300 stage-2 steps of
    conversations and no stage 3, and places and signs (a scene-world option) are off; training
    arithmetic is chosen by the device (--precision auto) unless --precision says."""
    import mmagent.train.adapter as adapter_mod
    import mmagent.train.encoder as encoder_mod

    seen = []
    monkeypatch.setattr(encoder_mod, "train_encoder", lambda out, recipe, **kw: seen.append(recipe) or {})
    monkeypatch.setattr(adapter_mod, "train_adapter", lambda enc, out, recipe, **kw: seen.append(recipe) or {})
    enc = tmp_path / "enc"
    (enc / "vision").mkdir(parents=True)
    (enc / "vision" / "config.json").write_text("{}")
    runner = CliRunner()
    for args in (["train", "encoder", "--out", str(tmp_path / "e1")],
                 ["train", "encoder", "--no-places-and-signs", "--out", str(tmp_path / "e2")],
                 ["train", "adapter", "--encoder", str(enc), "--out", str(tmp_path / "a1"), "--device", "cpu"],
                 ["train", "adapter", "--encoder", str(enc), "--data", str(tmp_path / "d.jsonl"), "--out",
                  str(tmp_path / "a2"), "--device", "cpu"]):
        result = runner.invoke(build_cli(), args)
        assert result.exit_code == 0, result.output
    scenes_enc, earlier_enc, scenes_ad, data_ad = seen
    assert scenes_enc.places_and_signs and scenes_enc.steps == 6000 and not earlier_enc.places_and_signs
    assert scenes_ad.places_and_signs and (scenes_ad.qa_steps, scenes_ad.focus_steps) == (450, 500)
    assert not data_ad.places_and_signs and (data_ad.qa_steps, data_ad.focus_steps) == (300, 0)
    assert scenes_ad.precision == data_ad.precision == "auto"
    result = runner.invoke(build_cli(), ["train", "adapter", "--encoder", str(enc), "--out", str(tmp_path / "a3"),
                                         "--precision", "fp64"])
    assert result.exit_code != 0 and "--precision" in result.output and "Traceback" not in result.output


def test_training_precision_follows_the_device_and_the_flag():
    """--precision auto trains under bf16 autocast where the device computes bf16 natively (a CPU
    with AVX512-BF16 / AMX: oneDNN says so) and in float32 elsewhere; fp32 and bf16 force one."""
    from mmagent.errors import InputError
    from mmagent.train.adapter import training_bf16

    cpu = torch.device("cpu")
    assert training_bf16("auto", cpu) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert training_bf16("bf16", cpu) and not training_bf16("fp32", cpu)
    with pytest.raises(InputError, match="--precision"):
        training_bf16("fp16", cpu)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_training_runs_in_the_precision_asked_and_says_so(precision, toy, tiny_llama, tmp_path, monkeypatch):
    """Every training step's loss is computed under bf16 autocast exactly when the run is bf16
    (the held-out answers stay float32 on the CPU, as the vlm plugin serves them), the weights
    saved are float32 either way, and metrics.json records the precision."""
    from safetensors.torch import load_file

    import mmagent.train.adapter as adapter_module

    tower = _tower("clip", tmp_path / "clip")
    real, seen = adapter_module.answer_loss, []

    def watched(*args):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return real(*args)

    monkeypatch.setattr(adapter_module, "answer_loss", watched)
    recipe = AdapterRecipe(llm=str(tiny_llama), vision_encoder=str(tower), data=str(toy), val_fraction=0.25,
                           precision=precision, device="cpu", **TINY)
    metrics = train_adapter(None, tmp_path / "ad", recipe, quiet=True)
    assert seen and set(seen) == {precision == "bf16"}
    assert metrics["precision"] == precision
    weights = load_file(tmp_path / "ad" / "model" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}


@pytest.mark.slow
def test_resume_refuses_a_recipe_other_than_the_one_the_run_began_with(toy, tiny_llama, tmp_path):
    """A run's recipe is pinned in OUT/recipe.json; --resume with other options (another precision,
    LoRA rank, data…) would give the weights of neither run, so it stops with one clear line and
    touches nothing; the same recipe (the device aside, a relative data path) resumes."""
    import dataclasses

    from mmagent.errors import InputError
    from mmagent.train.encoder import EncoderRecipe, train_encoder_on_data

    tower = _tower("clip", tmp_path / "clip")
    recipe = AdapterRecipe(llm=str(tiny_llama), vision_encoder=str(tower), data=str(toy), val_fraction=0.25,
                           precision="fp32", **{**TINY, "qa_steps": 2, "focus_steps": 0})
    train_adapter(None, tmp_path / "a", recipe, quiet=True)
    pinned = json.loads((tmp_path / "a" / "recipe.json").read_text())
    assert pinned["precision"] == "fp32" and pinned["lora_rank"] == 2
    weights = (tmp_path / "a" / "qa" / "checkpoint.pt").read_bytes()
    for change in ({"precision": "bf16"}, {"lora_rank": 4}, {"val_fraction": 0.5}):
        with pytest.raises(InputError, match=f"--resume with another recipe.*{next(iter(change))}"):
            train_adapter(None, tmp_path / "a", dataclasses.replace(recipe, **change), resume=True, quiet=True)
    assert (tmp_path / "a" / "qa" / "checkpoint.pt").read_bytes() == weights
    assert json.loads((tmp_path / "a" / "recipe.json").read_text()) == pinned
    train_adapter(None, tmp_path / "a", dataclasses.replace(recipe, device="cpu"), resume=True, quiet=True)
    # the data encoder pins its data too; a relative path to the same file is the same data
    enc = EncoderRecipe.for_data(steps=1, batch_size=4)
    train_encoder_on_data(tmp_path / "e", enc, str(toy), val_fraction=0.25, quiet=True)
    with pytest.raises(InputError, match="steps 1 -> 2"):
        train_encoder_on_data(tmp_path / "e", dataclasses.replace(enc, steps=2), str(toy), val_fraction=0.25,
                              resume=True, quiet=True)
    import os

    relative = os.path.relpath(toy)
    train_encoder_on_data(tmp_path / "e", enc, relative, val_fraction=0.25, resume=True, quiet=True)
