"""Text-to-image on diffusers with a tiny random Stable Diffusion pipeline saved to a local folder
(no real weights exist offline: this tests the plumbing, not the pictures)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

from mmagent.backends import BackendRegistry, get_backend  # noqa: E402
from mmagent.errors import BackendError, InputError  # noqa: E402
from mmagent.plugins import diffusers_t2i  # noqa: E402

PROMPT = "a red cube on a table"


@pytest.fixture(autouse=True)
def diffusers_plugin():
    """The plugin registered like a built-in (until it is listed in BUILTIN_PLUGINS)."""
    from mmagent.backends.registry import reset_registry
    from mmagent.plugin_manager import get_plugins

    plugins = get_plugins()
    if "diffusers_t2i" not in plugins.infos:
        plugins.add(diffusers_t2i, "diffusers_t2i", source="builtin")
    reset_registry()


def clip_tokenizer():
    """CLIP's byte-level alphabet without merges, BOS/EOS last."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for ch in ByteLevel.alphabet():
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)


def tiny_pipeline():
    """Stable Diffusion with a 2-level UNet, a 2-block VAE, a 1-layer CLIP text model, DDIM."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tok = clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        sample_size=32)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, projection_dim=16, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> tuple[Path, bytes]:
    """(folder, the PNG the in-memory pipeline makes of PROMPT at 64x64, 2 steps, seed 1)."""
    import torch

    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    image = pipe(PROMPT, width=64, height=64, num_inference_steps=2, guidance_scale=7.5,
                 generator=torch.Generator("cpu").manual_seed(1)).images[0]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    folder = tmp_path_factory.mktemp("tiny-sd")
    pipe.save_pretrained(folder)
    return folder, buffer.getvalue()


def generator(folder: Path, dtype: str = "float32"):
    return get_backend("image_gen", "diffusers", model=str(folder), device="cpu", dtype=dtype)


def test_plugin_imports_without_heavy_libraries():
    code = ("import sys, mmagent.plugins.diffusers_t2i; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_register_backends_adds_the_diffusers_generator():
    registry = BackendRegistry()
    diffusers_t2i.register_backends(lambda cls: registry.register(cls, plugin="diffusers_t2i"))
    assert [(e.role, e.name) for e in registry.list()] == [("image_gen", "diffusers")]


def test_reloaded_pipeline_reproduces_the_saved_one(sd_dir, home):
    folder, expected = sd_dir
    backend = generator(folder)
    image = backend.generate(PROMPT, width=64, height=64, steps=2, seed=1)
    assert (image.width, image.height, image.mime_type) == (64, 64, "image/png")
    assert image.read_bytes() == expected  # same weights, scheduler and seed after save -> load
    assert image.path().is_relative_to(home) and image.extras["seed"] == 1
    pipe, device = backend.model
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.safety_checker is None and device == "cpu"


def test_seed_and_negative_prompt_change_the_image(sd_dir, home):
    backend = generator(sd_dir[0])
    first = backend.generate(PROMPT, width=64, height=64, steps=2, seed=2).read_bytes()
    assert backend.generate(PROMPT, width=64, height=64, steps=2, seed=2).read_bytes() == first
    assert backend.generate(PROMPT, width=64, height=64, steps=2, seed=3).read_bytes() != first
    negative = backend.generate(PROMPT, width=64, height=64, steps=2, seed=2, negative_prompt="blurry")
    assert negative.read_bytes() != first
    unseeded = backend.generate(PROMPT, width=64, height=64, steps=2)
    assert isinstance(unseeded.extras["seed"], int)


def test_bfloat16_generates_a_non_square_image(sd_dir, home):
    import torch

    backend = generator(sd_dir[0], "bfloat16")
    image = backend.generate(PROMPT, width=64, height=32, steps=2, guidance=1.0, seed=1)
    assert (image.width, image.height) == (64, 32)
    assert backend.model[0].unet.dtype == torch.bfloat16


@pytest.mark.parametrize("size", [(60, 64), (64, 0), (64, -8)])
def test_sizes_must_be_positive_multiples_of_8(sd_dir, size):
    backend = generator(sd_dir[0])
    with pytest.raises(InputError, match="multiple of 8"):
        backend.generate(PROMPT, width=size[0], height=size[1], steps=2)


def test_empty_prompt_and_zero_steps_are_input_errors(sd_dir):
    backend = generator(sd_dir[0])
    with pytest.raises(InputError, match="prompt"):
        backend.generate("  ", width=64, height=64)
    with pytest.raises(InputError, match="steps"):
        backend.generate(PROMPT, width=64, height=64, steps=0)


def test_missing_model_folder_is_a_backend_error_naming_it(tmp_path):
    backend = generator(tmp_path / "no-such-pipeline")
    with pytest.raises(BackendError, match="no-such-pipeline"):
        backend.generate(PROMPT, width=64, height=64, steps=2)


def test_only_the_torchvision_fallback_notice_is_silenced():
    import logging

    from mmagent.plugins._hf import quiet_torchvision_fallback

    quiet_torchvision_fallback()
    quiet_torchvision_fallback()  # idempotent
    logger = logging.getLogger("transformers.utils.import_utils")

    def record(msg: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, None, None)

    notice = "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil`"
    assert not logger.filter(record(notice))
    assert logger.filter(record("Some weights of the model were not initialized"))
    assert sum(type(f).__name__ == "_NoTorchvisionFallbackNotice" for f in logger.filters) == 1
