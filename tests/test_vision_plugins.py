"""Captioners (BLIP, GIT, ViT+GPT-2) and detectors (DETR, OWL-ViT) on tiny random models saved to
local folders, and `draw_detections`. No real weights exist offline: these test the plumbing."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from mmagent.backends import BackendRegistry, Detection, get_backend  # noqa: E402
from mmagent.content import load_media  # noqa: E402
from mmagent.errors import BackendError, InputError  # noqa: E402
from mmagent.plugins import vision  # noqa: E402

WORDS = "a an the cat dog on of in red blue photo picture sitting table".split()
PROMPT = "a photo of"


@pytest.fixture(autouse=True)
def vision_plugin():
    """The plugin registered like a built-in (until it is listed in BUILTIN_PLUGINS)."""
    from mmagent.runtime import get_runtime
    from mmagent.plugin_manager import get_plugins

    plugins = get_plugins()
    if "vision" not in plugins.infos:
        plugins.add(vision, "vision", source="builtin")
    get_runtime().refresh()


def scene():
    """A 48x40 RGB picture: a red square and a blue disc on grey."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (48, 40), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    draw.rectangle((4, 4, 20, 20), fill=(220, 30, 30))
    draw.ellipse((26, 14, 44, 34), fill=(30, 30, 220))
    return img


@pytest.fixture
def photo(home):
    buffer = io.BytesIO()
    scene().save(buffer, format="PNG")
    return load_media(buffer.getvalue(), expect="image")


# -- tiny models: built from configs, saved, expected outputs computed before saving -------------


def bert_tokenizer():
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    return BertTokenizer(vocab={t: i for i, t in enumerate(specials + WORDS)}, bos_token="[DEC]")


def gpt2_tokenizer():
    """A byte-level BPE trained on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(WORDS), "a photo of a cat sitting on the table"], trainer)
    end = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=end, eos_token=end, pad_token=end)


def clip_tokenizer():
    """CLIP's byte-level alphabet without merges; BOS/EOS last (OWL-ViT reads id 0 as padding)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for ch in ByteLevel.alphabet():
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)


TINY_VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                   image_size=32, patch_size=8)
TINY_TEXT = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                 max_position_embeddings=64)


def build_blip():
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil

    tok = bert_tokenizer()
    config = BlipConfig(vision_config=TINY_VISION, projection_dim=32, text_config=dict(
        TINY_TEXT, vocab_size=len(tok), bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
        sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id))
    return BlipForConditionalGeneration(config), BlipImageProcessorPil(size={"height": 32, "width": 32}), tok


def build_git():
    from transformers import CLIPImageProcessorPil, GitConfig, GitForCausalLM

    tok = bert_tokenizer()
    config = GitConfig(vision_config=TINY_VISION, vocab_size=len(tok), bos_token_id=tok.cls_token_id,
                       eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id, **TINY_TEXT)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return GitForCausalLM(config), processor, tok


def build_vit_gpt2():
    import torch
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
    )

    tok = gpt2_tokenizer()
    end = tok.eos_token_id
    decoder = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64, bos_token_id=end,
                         eos_token_id=end)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(**TINY_VISION), decoder)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = end
    model = VisionEncoderDecoderModel(config=config)
    with torch.no_grad():  # a zero (tied) embedding for the end token: the caption does not stop at once
        model.decoder.get_input_embeddings().weight[end].zero_()
    return model, ViTImageProcessorPil(size={"height": 32, "width": 32}), tok


CAPTIONERS = {"blip": build_blip, "git": build_git, "vit-gpt2": build_vit_gpt2}


@pytest.fixture(scope="module", params=sorted(CAPTIONERS))
def captioner_dir(request, tmp_path_factory) -> tuple[Path, str]:
    """(folder, the caption the in-memory model gives `scene()` in 8 greedy tokens)."""
    import torch

    torch.manual_seed(0)
    model, processor, tok = CAPTIONERS[request.param]()
    model.eval()
    with torch.inference_mode():
        out = model.generate(pixel_values=processor(images=scene(), return_tensors="pt").pixel_values,
                             max_new_tokens=8, do_sample=False)
    folder = tmp_path_factory.mktemp(request.param)
    for part in (model, processor, tok):
        part.save_pretrained(folder)
    return folder, tok.decode(out[0], skip_special_tokens=True).strip()


def build_detr(folder: Path) -> None:
    """DETR on a native tiny ResNet; every query says "cat" (p≈0.96) at cx,cy,w,h = .25,.5,.5,.5."""
    import torch
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessorPil, ResNetConfig

    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_features=["stage2"])
    config = DetrConfig(backbone_config=backbone, d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, num_queries=5, id2label={0: "cat", 1: "dog"},
                        label2id={"cat": 0, "dog": 1})
    model = DetrForObjectDetection(config)
    with torch.no_grad():
        model.class_labels_classifier.weight.zero_()
        model.class_labels_classifier.bias.copy_(torch.tensor([4.0, 0.0, 0.0]))  # cat, dog, no-object
        last = model.bbox_predictor.layers[-1]
        last.weight.zero_()
        last.bias.copy_(torch.logit(torch.tensor([0.25, 0.5, 0.5, 0.5])))
    model.save_pretrained(folder)
    DetrImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 64}).save_pretrained(folder)


def build_owlvit(folder: Path) -> None:
    """OWL-ViT whose box head predicts only its prior: one box per patch of a 4x4 grid."""
    import torch
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessorPil, OwlViTProcessor

    tok = clip_tokenizer()
    config = OwlViTConfig(vision_config=TINY_VISION, projection_dim=32, text_config=dict(
        TINY_TEXT, vocab_size=len(tok), max_position_embeddings=16, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model = OwlViTForObjectDetection(config)
    with torch.no_grad():
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    size = {"height": 32, "width": 32}
    OwlViTProcessor(image_processor=OwlViTImageProcessorPil(size=size, crop_size=size), tokenizer=tok) \
        .save_pretrained(folder)
    model.save_pretrained(folder)


@pytest.fixture(scope="module")
def detr_dir(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    build_detr(folder := tmp_path_factory.mktemp("detr"))
    return folder


@pytest.fixture(scope="module")
def owlvit_dir(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    build_owlvit(folder := tmp_path_factory.mktemp("owlvit"))
    return folder


# -- registration and import cost ------------------------------------------------------------------


def test_plugin_imports_without_heavy_libraries():
    code = ("import sys, mmagent.plugins.vision; "
            "print(sorted(m for m in ('torch', 'transformers', 'PIL', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_register_backends_adds_a_captioner_and_a_detector():
    registry = BackendRegistry()
    vision.register_backends(lambda cls: registry.register(cls, plugin="vision"))
    assert sorted((e.role, e.name) for e in registry.list()) == [("caption", "transformers"),
                                                                  ("detect", "transformers")]


# -- captioners ------------------------------------------------------------------------------------


def test_captioner_reloads_the_saved_model_exactly(captioner_dir, photo):
    folder, expected = captioner_dir
    captioner = get_backend("caption", "transformers", model=str(folder), device="cpu", dtype="float32",
                            max_new_tokens=8)
    assert captioner.caption(photo) == expected


def test_captioner_in_bfloat16_continues_the_prompt(captioner_dir, photo):
    import torch

    folder, _ = captioner_dir
    captioner = get_backend("caption", "transformers", model=str(folder), device="cpu", dtype="bfloat16",
                            max_new_tokens=4)
    text = captioner.caption(photo, prompt=PROMPT)
    assert isinstance(text, str) and text.startswith(PROMPT)
    assert captioner.caption(photo, prompt=PROMPT) == text  # greedy
    assert captioner.model.model.dtype == torch.bfloat16 and captioner.model.device == "cpu"


def test_max_new_tokens_bounds_the_caption(captioner_dir, photo):
    folder, _ = captioner_dir
    captioner = get_backend("caption", "transformers", model=str(folder), device="cpu", max_new_tokens=2)
    ids = captioner.model.tokenizer(captioner.caption(photo), add_special_tokens=False).input_ids
    assert 1 <= len(ids) <= 2


def test_captioner_refuses_a_detector_model(detr_dir, photo):
    captioner = get_backend("caption", "transformers", model=str(detr_dir), device="cpu")
    with pytest.raises(BackendError, match="model type 'detr'"):
        captioner.caption(photo)


def test_default_detr_uses_its_timm_free_revision(tmp_path):
    assert vision.hub_options(get_backend("detect", "transformers")) == {"revision": "no_timm"}
    assert vision.hub_options(get_backend("detect", "transformers", model=str(tmp_path))) == {}
    chosen = get_backend("detect", "transformers", revision="abc123")
    assert vision.hub_options(chosen) == {"revision": "abc123"}
    assert chosen.cache_key != get_backend("detect", "transformers").cache_key  # cached apart


@pytest.mark.parametrize("role", ["caption", "detect"])
def test_missing_model_folder_is_a_backend_error_naming_it(role, tmp_path, photo):
    missing = tmp_path / "no-such-model"
    backend = get_backend(role, "transformers", model=str(missing), device="cpu")
    with pytest.raises(BackendError, match="no-such-model"):
        backend.caption(photo) if role == "caption" else backend.detect(photo)


# -- detectors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_detr_boxes_are_in_original_pixels_with_config_labels(detr_dir, photo, dtype):
    detector = get_backend("detect", "transformers", model=str(detr_dir), device="cpu", dtype=dtype)
    found = detector.detect(photo)
    assert len(found) == 5 and all(isinstance(d, Detection) for d in found)  # one per query
    for det in found:  # cx,cy,w,h = .25,.5,.5,.5 of a 48x40 image
        assert det.label == "cat" and det.score == pytest.approx(0.965, abs=0.01)
        assert det.box == pytest.approx((0, 10, 24, 30), abs=0.5)
    assert str(detector.model.model.dtype) == f"torch.{dtype}"


def test_detr_threshold_and_label_filter(detr_dir, photo):
    detector = get_backend("detect", "transformers", model=str(detr_dir), device="cpu")
    assert detector.detect(photo, threshold=0.99) == []
    assert detector.detect(photo, labels=["dog"]) == []
    assert len(detector.detect(photo, labels=["CAT"])) == 5
    with pytest.raises(InputError, match="threshold"):
        detector.detect(photo, threshold=1.5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_owlvit_finds_the_asked_labels_on_its_patch_grid(owlvit_dir, photo, dtype):
    detector = get_backend("detect", "transformers", model=str(owlvit_dir), device="cpu", dtype=dtype)
    found = detector.detect(photo, labels=["a red square", "a blue disc"], threshold=0.0)
    assert {d.label for d in found} <= {"a red square", "a blue disc"} and len(found) == 16
    assert all(0.0 <= d.score <= 1.0 for d in found)
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    # OWL-ViT's box prior: a patch-sized box centred on each patch's far corner, in 48x40 pixels
    cells = sorted((12 * i + 6, 10 * j + 5, min(12 * i + 18, 48), min(10 * j + 15, 40))
                   for i in range(4) for j in range(4))
    assert sorted(tuple(round(v) for v in d.box) for d in found) == cells
    assert detector.detect(photo, labels=["a red square"], threshold=1.0) == []


def test_owlvit_cuts_labels_longer_than_its_text_window(owlvit_dir, photo):
    detector = get_backend("detect", "transformers", model=str(owlvit_dir), device="cpu")
    long = "a small red square drawn on a grey background " * 3
    found = detector.detect(photo, labels=[long, "disc"], threshold=0.0)
    assert len(found) == 16 and {d.label for d in found} <= {long.strip(), "disc"}


def test_zero_shot_detector_needs_labels(owlvit_dir, photo):
    detector = get_backend("detect", "transformers", model=str(owlvit_dir), device="cpu")
    with pytest.raises(InputError, match="labels"):
        detector.detect(photo)
    with pytest.raises(InputError, match="labels"):
        detector.detect(photo, labels=["  "])


# -- drawing ---------------------------------------------------------------------------------------


def test_draw_detections_marks_the_box_on_a_new_image(photo):
    from PIL import Image

    boxes = [Detection("cat", 0.9, (10.0, 8.0, 40.0, 36.0))]
    drawn = vision.draw_detections(photo, boxes)
    assert (drawn.width, drawn.height) == (photo.width, photo.height) and drawn.ref != photo.ref
    before = Image.open(photo.path()).convert("RGB")
    after = Image.open(drawn.path()).convert("RGB")
    assert after.getpixel((40, 20)) != before.getpixel((40, 20))  # the box's right edge
    assert after.getpixel((2, 38)) == before.getpixel((2, 38))  # outside the box and its label
    assert vision.draw_detections(photo, []).width == photo.width
