"""Captioning and object detection on transformers, plus a helper that draws detections.

Captioners: BLIP, GIT and VisionEncoderDecoder (e.g. ViT + GPT-2). Detectors: DETR (closed set,
names from `config.id2label`) and OWL-ViT (zero-shot: the caller's `labels`). No offline weights
exist for these: give a Hugging Face id (with network) or a local folder saved by transformers.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmagent import hookimpl
from mmagent.backends import Backend, Captioner, Detection, ObjectDetector
from mmagent.content import ImagePart, load_media
from mmagent.errors import BackendError, InputError

from ._hf import hub_options, model_source, open_rgb

CAPTION_TYPES = ("blip", "git", "vision-encoder-decoder")
ZERO_SHOT_TYPES = ("owlvit",)
DETECT_TYPES = ("detr", *ZERO_SHOT_TYPES)


@dataclass(frozen=True)
class Loaded:
    """What `load_model()` returns: the model and how to feed it."""

    model: Any
    processor: Any  # image processor; the full processor (text + image) for zero-shot detectors
    tokenizer: Any
    device: str
    kind: str  # config.model_type


def _prepare(backend: Backend, types: tuple[str, ...]) -> tuple[str, str, Any, str]:
    """(source, device, torch dtype, model type) for a backend, refusing unsupported model types."""
    from transformers import AutoConfig

    from mmagent.backends.devices import resolve_device, resolve_dtype

    what = f"{backend.role}/{backend.name}"
    source = model_source(backend.model_id, what, hub_options(backend).get("revision"))
    device = resolve_device(backend.device)
    kind = AutoConfig.from_pretrained(source, **hub_options(backend)).model_type
    if kind not in types:
        raise BackendError(f"{what} does not support model type {kind!r} of {backend.model_id!r} "
                           f"(supported: {', '.join(types)})")
    return source, device, resolve_dtype(backend.dtype, device), kind


def _to(inputs: dict, loaded: Loaded) -> dict:
    """Tensors on the model's device; floating ones in its dtype."""
    dtype = loaded.model.dtype
    return {k: (v.to(loaded.device, dtype) if v.is_floating_point() else v.to(loaded.device))
            if hasattr(v, "is_floating_point") else v for k, v in inputs.items()}


class _HubBackend(Backend):
    """The model cache tells revisions of one hub id apart."""

    @property
    def cache_key(self) -> tuple:
        return (*super().cache_key, hub_options(self).get("revision"))


class TransformersCaptioner(_HubBackend, Captioner):
    """Greedy captions; `prompt` is a text prefix the caption continues (kept in the result).

    Options: `max_new_tokens` (30), `revision` (for a hub id).
    """

    name = "transformers"
    description = "Image captioning via transformers: BLIP, GIT, VisionEncoderDecoder (HF id or local path)"
    default_model = "Salesforce/blip-image-captioning-base"
    requires = ("torch", "transformers", "PIL")

    def load_model(self) -> Loaded:
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        source, device, dtype, kind = _prepare(self, CAPTION_TYPES)
        hub = hub_options(self)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, **hub).to(device).eval()
        return Loaded(model, AutoImageProcessor.from_pretrained(source, **hub),
                      AutoTokenizer.from_pretrained(source, **hub), device, kind)

    def caption(self, image: ImagePart, *, prompt: str | None = None) -> str:
        import torch

        loaded = self.model
        max_new_tokens = int(self.options.get("max_new_tokens", 30))
        try:
            inputs = _to(dict(loaded.processor(images=open_rgb(image), return_tensors="pt")), loaded)
            if prompt and prompt.strip():
                inputs.update(_prompt_inputs(loaded, prompt.strip()))
            with torch.inference_mode():
                out = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        except Exception as exc:
            raise BackendError(f"caption/{self.name} failed: {type(exc).__name__}: {exc}") from exc
        return loaded.tokenizer.decode(out[0], skip_special_tokens=True).strip()


def _prompt_inputs(loaded: Loaded, prompt: str) -> dict:
    """The prompt as each architecture takes a caption prefix."""
    import torch

    tokenizer, config = loaded.tokenizer, loaded.model.config
    if loaded.kind == "blip":  # [CLS] prompt [SEP]: BLIP puts its BOS first and drops the [SEP]
        return {"input_ids": torch.tensor([tokenizer(prompt).input_ids], device=loaded.device)}
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    if loaded.kind == "git":
        return {"input_ids": torch.tensor([[config.bos_token_id, *ids]], device=loaded.device)}
    return {"decoder_input_ids": torch.tensor([[config.decoder_start_token_id, *ids]], device=loaded.device)}


class TransformersDetector(_HubBackend, ObjectDetector):
    """Boxes in pixels of the original image, best first. DETR keeps only `labels` when given;
    OWL-ViT needs them (it finds what it is asked for; long labels are cut to its text length).

    Options: `revision` (for a hub id; the default model uses its timm-free "no_timm" branch).
    """

    name = "transformers"
    description = "Object detection via transformers: DETR (closed set), OWL-ViT (zero-shot labels)"
    default_model = "facebook/detr-resnet-50"
    default_revision = "no_timm"  # its main branch needs timm (and torchvision); this one does not
    requires = ("torch", "transformers", "PIL")

    def load_model(self) -> Loaded:
        from transformers import (
            AutoImageProcessor,
            AutoModelForObjectDetection,
            AutoModelForZeroShotObjectDetection,
            AutoProcessor,
        )

        source, device, dtype, kind = _prepare(self, DETECT_TYPES)
        hub = hub_options(self)
        if kind in ZERO_SHOT_TYPES:
            model_cls, processor = AutoModelForZeroShotObjectDetection, AutoProcessor.from_pretrained(source, **hub)
        else:
            model_cls, processor = AutoModelForObjectDetection, AutoImageProcessor.from_pretrained(source, **hub)
        model = model_cls.from_pretrained(source, dtype=dtype, **hub).to(device).eval()
        return Loaded(model, processor, None, device, kind)

    def detect(self, image: ImagePart, *, labels: Sequence[str] | None = None,
               threshold: float = 0.5) -> list[Detection]:
        if not 0.0 <= threshold <= 1.0:
            raise InputError(f"detect/{self.name}: threshold must be between 0 and 1, not {threshold}")
        wanted = [labels] if isinstance(labels, str) else list(labels or ())
        wanted = [w.strip() for w in wanted if w and w.strip()]
        loaded = self.model
        zero_shot = loaded.kind in ZERO_SHOT_TYPES
        if zero_shot and not wanted:
            raise InputError(f"detect/{self.name}: {loaded.kind} is zero-shot; pass the labels to look for")
        picture = open_rgb(image)
        try:
            found = self._run(loaded, picture, wanted if zero_shot else None, threshold)
        except Exception as exc:
            raise BackendError(f"detect/{self.name} failed: {type(exc).__name__}: {exc}") from exc
        keep = {w.casefold() for w in wanted}
        detections = [Detection(name, round(score, 4), _clamp(box, picture.width, picture.height))
                      for name, score, box in found if zero_shot or not keep or name.casefold() in keep]
        return sorted(detections, key=lambda d: -d.score)

    @staticmethod
    def _run(loaded: Loaded, picture, queries: list[str] | None, threshold: float) -> list[tuple]:
        """(label, score, box) triples from one forward pass and the processor's post-processing."""
        import torch

        sizes = [(picture.height, picture.width)]
        if queries is None:
            inputs = loaded.processor(images=picture, return_tensors="pt")
        else:
            limit = loaded.model.config.text_config.max_position_embeddings  # long labels are cut
            inputs = loaded.processor(text=[queries], images=picture, return_tensors="pt", padding="max_length",
                                      truncation=True, max_length=limit)
        with torch.inference_mode():
            outputs = loaded.model(**_to(dict(inputs), loaded))
        outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
        if queries is None:
            result = loaded.processor.post_process_object_detection(outputs, threshold=threshold,
                                                                    target_sizes=sizes)[0]
            id2label = loaded.model.config.id2label
            names = [id2label.get(int(i), str(int(i))) for i in result["labels"]]
        else:
            result = loaded.processor.post_process_grounded_object_detection(
                outputs, threshold=threshold, target_sizes=sizes, text_labels=[queries])[0]
            names = list(result["text_labels"])
        return list(zip(names, result["scores"].tolist(), result["boxes"].tolist()))


def _clamp(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return (round(min(max(x0, 0.0), width), 2), round(min(max(y0, 0.0), height), 2),
            round(min(max(x1, 0.0), width), 2), round(min(max(y1, 0.0), height), 2))


_PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")


def draw_detections(image: ImagePart, detections: Sequence[Detection]) -> ImagePart:
    """A copy of `image` with each box and "label score" drawn on it, stored as a PNG part."""
    from PIL import ImageDraw, ImageFont

    canvas = open_rgb(image)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    line = max(1, round(min(canvas.size) / 200))
    for det in detections:
        colour = _PALETTE[zlib.crc32(det.label.encode()) % len(_PALETTE)]
        x0, x1 = sorted((det.box[0], det.box[2]))
        y0, y1 = sorted((det.box[1], det.box[3]))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        text = f"{det.label} {det.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        ty = y0 - (bottom - top) - 2 if y0 >= bottom - top + 2 else y0  # above the box, else inside
        draw.rectangle((x0, ty, x0 + right - left + 2, ty + bottom - top + 2), fill=colour)
        draw.text((x0 + 1 - left, ty + 1 - top), text, fill="white", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return load_media(buffer.getvalue(), expect="image")


@hookimpl
def register_backends(register):
    register(TransformersCaptioner)
    register(TransformersDetector)
