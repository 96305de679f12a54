"""Text-to-image on diffusers with tiny random Stable Diffusion, SDXL and Flux pipelines saved to local
folders (no real weights exist offline: this tests the plumbing, not the pictures)."""

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
    from mmagent.runtime import get_runtime
    from mmagent.plugin_manager import get_plugins

    plugins = get_plugins()
    if "diffusers_t2i" not in plugins.infos:
        plugins.add(diffusers_t2i, "diffusers_t2i", source="builtin")
    get_runtime().refresh()


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


def t5_tokenizer():
    """A T5 unigram vocabulary of single letters (pad, </s>, unk first, as T5 has them), no sentencepiece file."""
    from transformers import T5Tokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + c, -2.5) for c in letters] + [(c, -3.0) for c in letters]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def tiny_clip_config(tok):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=16, projection_dim=16,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)


def tiny_vae(**extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                         sample_size=32, **extra)


def tiny_sdxl_pipeline():
    """SDXL: two 1-layer CLIP encoders (the second with projection), a 2-level UNet conditioned on both
    (text_time), a 2-block VAE, Euler."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tok, tok_2 = clip_tokenizer(), clip_tokenizer()
    text, text_2 = CLIPTextModel(tiny_clip_config(tok)), CLIPTextModelWithProjection(tiny_clip_config(tok_2))
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=2, use_linear_projection=True, norm_num_groups=4,
        cross_attention_dim=16 + 16,  # both encoders' hidden states side by side
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 16)  # 6 size/crop ids embedded + the pooled projection
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(vae=tiny_vae(), text_encoder=text, text_encoder_2=text_2, tokenizer=tok,
                                     tokenizer_2=tok_2, unet=unet, scheduler=scheduler, add_watermarker=False)


def tiny_flux_pipeline():
    """Flux: a 1+1-block transformer with guidance embedding (like FLUX.1-dev), a 1-layer CLIP (pooled) and a
    1-layer T5 (sequence) encoder, a 2-block VAE whose 4 latent channels pack 2x2 into 16, flow-match Euler."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    tok, tok_2 = clip_tokenizer(), t5_tokenizer()
    text = CLIPTextModel(tiny_clip_config(tok))
    text_2 = T5EncoderModel(T5Config(  # no dropout: a freshly built model is in training mode
        vocab_size=len(tok_2), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, dropout_rate=0.0,
        relative_attention_num_buckets=8, pad_token_id=tok_2.pad_token_id, eos_token_id=tok_2.eos_token_id,
        decoder_start_token_id=tok_2.pad_token_id))
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * 4, num_layers=1, num_single_layers=1, num_attention_heads=2,
        attention_head_dim=8, axes_dims_rope=(2, 2, 4),  # rope axes sum to the head dim
        joint_attention_dim=16, pooled_projection_dim=16, guidance_embeds=True)  # T5 d_model, CLIP hidden size
    vae = tiny_vae(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text, tokenizer=tok,
                        text_encoder_2=text_2, tokenizer_2=tok_2, transformer=transformer)


def saved_with_reference(pipe, folder: Path, size: int, **call) -> tuple[Path, bytes]:
    """(folder, the PNG the in-memory pipeline makes of PROMPT at size x size, 2 steps, guidance 7.5, seed 1)."""
    import torch

    pipe.set_progress_bar_config(disable=True)
    image = pipe(PROMPT, width=size, height=size, num_inference_steps=2, guidance_scale=7.5,
                 generator=torch.Generator("cpu").manual_seed(1), **call).images[0]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pipe.save_pretrained(folder)
    return folder, buffer.getvalue()


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory) -> tuple[Path, bytes]:
    return saved_with_reference(tiny_sdxl_pipeline(), tmp_path_factory.mktemp("tiny-sdxl"), 64)


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory) -> tuple[Path, bytes]:
    return saved_with_reference(tiny_flux_pipeline(), tmp_path_factory.mktemp("tiny-flux"), 32)


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


@pytest.mark.parametrize(("kind", "size", "pipeline"), [("sdxl", 64, "StableDiffusionXLPipeline"),
                                                        ("flux", 32, "FluxPipeline")])
def test_sdxl_and_flux_folders_load_as_their_pipelines_and_reproduce(kind, size, pipeline, request, home):
    folder, expected = request.getfixturevalue(f"{kind}_dir")
    backend = generator(folder)
    image = backend.generate(PROMPT, width=size, height=size, steps=2, seed=1)
    assert type(backend.model[0]).__name__ == pipeline  # AutoPipelineForText2Image picked the class
    assert (image.width, image.height, image.mime_type) == (size, size, "image/png")
    assert image.read_bytes() == expected  # same weights, tokenizers, scheduler and seed after save -> load
    again = backend.generate(PROMPT, width=size, height=size, steps=2, seed=1).read_bytes()
    assert again == expected
    assert backend.generate(PROMPT, width=size, height=size, steps=2, seed=2).read_bytes() != expected
    negative = backend.generate(PROMPT, width=size, height=size, steps=2, seed=1, negative_prompt="blurry")
    assert negative.read_bytes() != expected  # Flux: only through true CFG (true_cfg_scale = guidance)


def test_flux_guidance_is_embedded_and_sizes_need_not_be_square(flux_dir, home):
    backend = generator(flux_dir[0])
    expected = flux_dir[1]  # guidance 7.5
    assert backend.generate(PROMPT, width=32, height=32, steps=2, seed=1, guidance=3.5).read_bytes() != expected
    # guidance <= 1 turns true CFG off, as it turns CFG off for Stable Diffusion: the negative prompt is unused
    plain = backend.generate(PROMPT, width=32, height=32, steps=2, seed=1, guidance=1.0).read_bytes()
    negative = backend.generate(PROMPT, width=32, height=32, steps=2, seed=1, guidance=1.0, negative_prompt="blurry")
    assert negative.read_bytes() == plain
    wide = backend.generate(PROMPT, width=48, height=32, steps=2, seed=1)
    assert (wide.width, wide.height) == (48, 32)


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
