"""The vision tower of an adapter: mmagent's own trained encoder, or a pretrained one.

`load_tower(source)` reads either a folder written by `mmagent train encoder` (its `vision/`
CLIP tower, 64 px, preprocessed as `scene_data.preprocess` does) or any CLIP, SigLIP or DINOv2
vision model, by Hugging Face id or local path (`--vision-encoder`), with its own image
processor. It says how LLaVA must read the tower: the feature-select strategy ("default" drops
the CLS token that CLIP and DINOv2 put first; SigLIP has none, so "full"), how many image tokens
one image becomes, and the processor to preprocess images with — so training and inference
preprocess identically.

The tower is frozen; `unfreeze_last(model, n)` lets the last `n` transformer layers (and the
final norm) train with the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

#: model_type -> (vision model class name in transformers, feature-select strategy, tokens before the patches)
FAMILIES: dict[str, tuple[str, str, int]] = {
    "clip": ("CLIPVisionModel", "default", 1),
    "clip_vision_model": ("CLIPVisionModel", "default", 1),
    "siglip": ("SiglipVisionModel", "full", 0),
    "siglip_vision_model": ("SiglipVisionModel", "full", 0),
    "dinov2": ("Dinov2Model", "default", 1),
}


@dataclass
class Tower:
    model: Any  # the vision model (torch module)
    image_processor: Any
    strategy: str  # LLaVA's vision_feature_select_strategy
    extra_tokens: int  # tokens before the patch tokens (CLS), dropped by "default"
    image_size: int
    patch_size: int
    family: str  # "mmagent" for mmagent's own encoder, else the model_type
    source: str

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def own(self) -> bool:
        return self.family == "mmagent"


def _quietly(load, *args, **kwargs):
    """`load(...)` without transformers' report of the weights it leaves out (expected here)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return load(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(level)


def own_tower(encoder_dir: Path) -> Tower:
    """mmagent's own encoder (`mmagent train encoder --out DIR`): DIR/vision, 64 px, mean/std 0.5;
    LLaVA drops its CLS token unless the encoder's config says "full" (`mmagent_feature_select`)."""
    from transformers import CLIPImageProcessorPil, CLIPVisionModel

    from .scene_data import MEAN, STD

    if not (Path(encoder_dir) / "vision" / "config.json").is_file():
        raise InputError(f"{encoder_dir} holds no trained encoder (expected {encoder_dir}/vision/config.json)")
    vision = _quietly(CLIPVisionModel.from_pretrained, Path(encoder_dir) / "vision")  # drops the contrastive head
    size = vision.config.image_size
    processor = CLIPImageProcessorPil(size={"height": size, "width": size}, do_center_crop=False,
                                      image_mean=list(MEAN), image_std=list(STD), resample=3)
    # "full" when the encoder taught its CLS token something the LLM reads (counts, `answer_counts`)
    strategy = getattr(vision.config, "mmagent_feature_select", "default")
    return Tower(vision, processor, strategy, 1, size, vision.config.patch_size, "mmagent", str(encoder_dir))


def pretrained_tower(source: str) -> Tower:
    """A pretrained CLIP / SigLIP / DINOv2 vision model and its image processor (HF id or path)."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor

    where = locate(source, "--vision-encoder")
    try:
        config = AutoConfig.from_pretrained(where)
    except (OSError, ValueError) as exc:
        raise InputError(f"--vision-encoder {source}: not a transformers model folder or id ({exc})") from None
    family = config.model_type
    if family not in FAMILIES:
        raise InputError(f"--vision-encoder {source}: a {family!r} model; supported: CLIP, SigLIP, DINOv2 "
                         f"({', '.join(sorted(FAMILIES))})")
    class_name, strategy, extra = FAMILIES[family]
    model = _quietly(getattr(transformers, class_name).from_pretrained, where)
    vision_config = model.config
    try:
        processor = AutoImageProcessor.from_pretrained(where)
    except (OSError, ValueError) as exc:
        raise InputError(f"--vision-encoder {source}: no image processor (preprocessor_config.json) beside the "
                         f"weights ({exc})") from None
    size = int(vision_config.image_size)
    crop = getattr(processor, "crop_size", None)
    if getattr(processor, "do_center_crop", False) and isinstance(crop, dict) and crop.get("height"):
        size = int(crop["height"])  # what reaches the model is the crop
    return Tower(model, processor, strategy, extra, size, int(vision_config.patch_size), family, source)


def locate(source: str, flag: str) -> str:
    """A local folder as is; a hub id as its cached snapshot, or the id when the hub answers; else
    one clear error at once, naming `flag` (from_pretrained would retry for a minute)."""
    from ..hf_hub import cached_snapshot, hub_unreachable_reason

    path = Path(source).expanduser()
    if path.is_absolute() or source.startswith((".", "~")) or path.exists():
        if not path.is_dir():
            raise InputError(f"{flag} {source}: no such folder")
        return str(path)
    snapshot = cached_snapshot(source)
    if snapshot is not None:
        return str(snapshot)
    reason = hub_unreachable_reason()
    if reason is not None:
        raise InputError(f"{flag} {source}: not a local folder, not in the Hugging Face cache, and the "
                         f"hub cannot be reached ({reason})")
    return source


def load_tower(encoder_dir: Path | None = None, vision_encoder: str | None = None) -> Tower:
    if (encoder_dir is None) == (vision_encoder is None):
        raise InputError("give a trained encoder folder (--encoder) or a pretrained one (--vision-encoder), not both")
    return own_tower(encoder_dir) if encoder_dir is not None else pretrained_tower(vision_encoder)


def preprocess(tower: Tower, images) -> Any:
    """PIL images -> the pixel tensor the tower reads (its own processor; mmagent's encoder: exactly
    `scene_data.preprocess`, which the shipped model was trained with)."""
    if tower.own:
        from .scene_data import preprocess as scene_preprocess

        return scene_preprocess(images)
    return tower.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]


def layers_of(vision_model: Any) -> list:
    """The transformer layers of a CLIP / SigLIP / DINOv2 vision model, in order."""
    for path in ("vision_model.encoder.layers", "encoder.layers", "encoder.layer"):
        node = vision_model
        for name in path.split("."):
            node = getattr(node, name, None)
            if node is None:
                break
        if node is not None:
            return list(node)
    raise InputError(f"cannot find the layers of {type(vision_model).__name__} to unfreeze")


def unfreeze_last(vision_model: Any, n: int) -> int:
    """Let the last `n` layers (and the final norm) of the tower train; returns the parameters freed."""
    if n <= 0:
        return 0
    layers = layers_of(vision_model)
    if n > len(layers):
        raise InputError(f"--unfreeze-vision-layers {n}: the vision encoder has {len(layers)} layers")
    params = [p for layer in layers[-n:] for p in layer.parameters()]
    for name in ("post_layernorm", "layernorm"):
        for holder in (vision_model, getattr(vision_model, "vision_model", None)):
            norm = getattr(holder, name, None) if holder is not None else None
            if norm is not None:
                params += list(norm.parameters())
    for p in params:
        p.requires_grad = True
    return sum(p.numel() for p in params)
