"""Text-to-image on diffusers: any pipeline `AutoPipelineForText2Image` loads (Stable Diffusion,
SDXL, SD-Turbo, Flux ...), by Hugging Face id or local folder. No offline weights exist."""

from __future__ import annotations

import inspect
import io
import secrets
from typing import Any

from mmagent import hookimpl
from mmagent.backends import TextToImage
from mmagent.content import ImagePart, load_media
from mmagent.errors import BackendError, InputError

from ._hf import model_source, quiet_torchvision_fallback


class DiffusersTextToImage(TextToImage):
    """Seeded (reproducible) generation; the seed used is kept in the part's `extras`.

    Options: `revision`, `variant` (e.g. "fp16" weight files), passed to `from_pretrained`.
    """

    name = "diffusers"
    description = "Text-to-image via diffusers AutoPipelineForText2Image (HF id or local path)"
    default_model = "stabilityai/sd-turbo"
    requires = ("torch", "diffusers", "transformers")

    @property
    def cache_key(self) -> tuple:
        return (*super().cache_key, self.options.get("revision"), self.options.get("variant"))

    def load_model(self) -> tuple[Any, str]:
        quiet_torchvision_fallback()  # before diffusers imports transformers' image processors
        from diffusers import AutoPipelineForText2Image

        from mmagent.backends.devices import resolve_device, resolve_dtype

        source = model_source(self.model_id, f"{self.role}/{self.name}", self.options.get("revision"))
        device = resolve_device(self.device)
        hub = {k: self.options[k] for k in ("revision", "variant") if self.options.get(k)}
        pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=resolve_dtype(self.dtype, device), **hub)
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return pipe, device

    def generate(self, prompt: str, *, width: int = 512, height: int = 512, steps: int = 30,
                 guidance: float = 7.5, seed: int | None = None,
                 negative_prompt: str | None = None) -> ImagePart:
        import torch

        _check(prompt, width, height, steps)
        pipe, _ = self.model
        seed = secrets.randbits(63) if seed is None else int(seed)
        kwargs: dict[str, Any] = dict(prompt=prompt, width=width, height=height, num_inference_steps=steps,
                                      guidance_scale=guidance, output_type="pil",
                                      generator=torch.Generator("cpu").manual_seed(seed))  # same on any device
        if negative_prompt:
            params = inspect.signature(pipe.__call__).parameters
            if "negative_prompt" not in params:
                raise InputError(f"image_gen/{self.name}: {type(pipe).__name__} takes no negative prompt")
            kwargs["negative_prompt"] = negative_prompt
            if "true_cfg_scale" in params:  # Flux, Qwen-Image: a negative prompt acts only under true CFG
                kwargs["true_cfg_scale"] = guidance
        try:
            with torch.inference_mode():
                result = pipe(**kwargs)
        except Exception as exc:
            raise BackendError(f"image_gen/{self.name} failed: {type(exc).__name__}: {exc}") from exc
        extras: dict[str, Any] = {"seed": seed}
        if any(getattr(result, "nsfw_content_detected", None) or ()):  # only with a safety checker
            extras["nsfw_content_detected"] = True
        buffer = io.BytesIO()
        result.images[0].save(buffer, format="PNG")
        return load_media(buffer.getvalue(), expect="image", extras=extras)


def _check(prompt: str, width: int, height: int, steps: int) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("image_gen/diffusers: the prompt is empty")
    for label, size in (("width", width), ("height", height)):
        if not isinstance(size, int) or size <= 0 or size % 8:
            raise InputError(f"image_gen/diffusers: {label} must be a positive multiple of 8, not {size!r}")
    if not isinstance(steps, int) or steps < 1:
        raise InputError(f"image_gen/diffusers: steps must be a positive integer, not {steps!r}")


@hookimpl
def register_backends(register):
    register(DiffusersTextToImage)
