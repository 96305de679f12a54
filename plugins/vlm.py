"""Vision-language chat on transformers: image-text-to-text models, the "LLM + adapter" route.

Tested architectures (tiny random models built from their configs): LLaVA, LLaVA-NeXT, BLIP-2 (OPT),
Idefics3 (SmolVLM), Qwen2-VL, Qwen2.5-VL, Mllama and PaliGemma. Other `AutoModelForImageTextToText`
models with a chat template are tried the same way. The offline default is mmagent's own scene-world
VLM (`scene-vlm`, a LLaVA folder the zoo assembles); otherwise give a Hugging Face id (with network)
or a local folder saved by transformers.

Messages become the model's own chat template, each `ImagePart` an image placeholder in place;
models without one (BLIP-2, PaliGemma base) get the prompt format of `ARCHS`. Greedy by default.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mmagent import hookimpl
from mmagent.backends import ChatResult, Message, ToolSpec, VisionLanguageModel
from mmagent.errors import BackendError, InputError

from ._hf import first_stop, generate_options, hub_options, model_source, open_rgb, quiet_torchvision_fallback
from .transformers_llm import check_context, clean_text, context_length


@dataclass(frozen=True)
class Arch:
    """What one model type needs beyond the generic path."""

    #: Prompt used when the processor has no chat template: "{images}" (one image token per image,
    #: where the processor does not add them itself) and "{text}" (the messages' text).
    prompt: str = "{images}{text}"
    needs_image: bool = False
    max_images: int | None = None
    #: The processor takes one image per prompt as a flat list (not a list of images per prompt).
    flat_images: bool = False


#: Model types that differ from the generic path (a chat template, any number of images, optional).
ARCHS: dict[str, Arch] = {
    # The processor puts the query tokens before the text itself; one image per prompt.
    "blip-2": Arch(prompt="Question: {text} Answer:", needs_image=True, max_images=1, flat_images=True),
    # "<image>"s first; the processor adds <bos> after them and the "\n" that ends the prefix.
    "paligemma": Arch(prompt="{images}{text}", needs_image=True),
}
GENERIC = Arch()


@dataclass(frozen=True)
class Loaded:
    """What `load_model()` returns."""

    model: Any
    processor: Any
    device: str
    kind: str  # config.model_type

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def arch(self) -> Arch:
        return ARCHS.get(self.kind, GENERIC)


class TransformersVLM(VisionLanguageModel):
    """Images + text in, text out, with the model's own processor and chat template.

    `chat` and `stream` take one conversation (any number of images in it); `batch` runs several
    conversations in one left-padded `generate`. Options: `revision` (for a hub id).
    """

    name = "transformers"
    description = ("Vision-language chat via transformers: LLaVA(-NeXT), BLIP-2, Idefics3/SmolVLM, "
                   "Qwen2(.5)-VL, Mllama, PaliGemma (HF id or local path)")
    default_model = "scene-vlm"  # mmagent's own, offline; e.g. HuggingFaceTB/SmolVLM-256M-Instruct with network
    requires = ("torch", "transformers", "PIL")
    supports_streaming = True

    @property
    def cache_key(self) -> tuple:
        return (*super().cache_key, hub_options(self).get("revision"))

    def load_model(self) -> Loaded:
        from transformers import AutoConfig, AutoModelForImageTextToText
        from transformers.utils import logging as hf_logging

        from mmagent.backends.devices import resolve_device, resolve_dtype

        from mmagent.train.arch import register_architectures

        hf_logging.disable_progress_bar()
        register_architectures()  # mmagent's own query-adapter LLaVA ("mmagent_llava")
        what = f"{self.role}/{self.name}"
        hub = hub_options(self)
        source = model_source(self.model_id, what, hub.get("revision"))
        device = resolve_device(self.device)
        kind = AutoConfig.from_pretrained(source, **hub).model_type
        quiet_torchvision_fallback()
        processor = load_processor(source, kind, hub)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=resolve_dtype(self.dtype, device), **hub)
        return Loaded(model.to(device).eval(), processor, device, kind)

    # -- the role's methods ------------------------------------------------------------------------

    def chat(self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None,
             max_tokens: int = 256, temperature: float = 0.0, stop: Sequence[str] | None = None) -> ChatResult:
        loaded = self.model
        inputs, prompt_tokens = self._encode(loaded, [self._prompt(loaded, messages)], max_tokens=max_tokens)
        out = self._generate(loaded, inputs, max_tokens=max_tokens, temperature=temperature, stop=stop)
        new = out[0, prompt_tokens:].tolist()
        text = loaded.tokenizer.decode(new, skip_special_tokens=True)
        cut = first_stop(text, stop)
        ended = cut is not None or len(new) < max_tokens or (bool(new) and new[-1] in _eos_ids(loaded))
        return ChatResult(text=(text if cut is None else text[:cut]).strip(), finish_reason="stop" if ended else "length",
                          usage={"prompt_tokens": prompt_tokens, "completion_tokens": len(new),
                                 "total_tokens": prompt_tokens + len(new)})

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 256, temperature: float = 0.0,
               stop: Sequence[str] | None = None) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        loaded = self.model
        inputs, _ = self._encode(loaded, [self._prompt(loaded, messages)], max_tokens=max_tokens)
        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def generate() -> None:
            try:
                self._generate(loaded, inputs, max_tokens=max_tokens, temperature=temperature, stop=stop,
                               streamer=streamer)
            except BaseException as exc:  # surfaced to the caller below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=generate, daemon=True)
        thread.start()
        emitted = ""
        for piece in streamer:
            if not piece:
                continue
            emitted += piece
            cut = first_stop(emitted, stop)
            if cut is not None:
                yield piece[: max(0, len(piece) - (len(emitted) - cut))]
                break
            yield piece
        thread.join()
        if errors:
            raise errors[0]  # an InputError or BackendError from `_generate`

    def batch(self, requests: Sequence[Sequence[Message]], *, max_tokens: int = 256, temperature: float = 0.0,
              stop: Sequence[str] | None = None) -> list[str]:
        """One answer per conversation, generated together (left padding); greedy by default."""
        if not requests:
            return []
        loaded = self.model
        prepared = [self._prompt(loaded, messages) for messages in requests]
        # Conversations with and without images do not share one processor call: one batch each.
        answers: list[str] = [""] * len(prepared)
        for with_images in (True, False):
            rows = [i for i, (_, images) in enumerate(prepared) if bool(images) == with_images]
            if not rows:
                continue
            inputs, width = self._encode(loaded, [prepared[i] for i in rows], max_tokens=max_tokens)
            out = self._generate(loaded, inputs, max_tokens=max_tokens, temperature=temperature, stop=stop)
            for i, text in zip(rows, loaded.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)):
                cut = first_stop(text, stop)
                answers[i] = (text if cut is None else text[:cut]).strip()
        return answers

    # -- prompt building ---------------------------------------------------------------------------

    def _encode(self, loaded: Loaded, prepared: Sequence[tuple[str, list]], *,
                max_tokens: int = 0) -> tuple[dict, int]:
        """Model inputs for (prompt, images) pairs, all with images or all without (left-padded),
        and the padded prompt length. A prompt (image tokens included) that leaves no room for
        `max_tokens` in the model's context is refused (PromptTooLongError)."""
        prompts, images = zip(*prepared)
        processor, arch = loaded.processor, loaded.arch
        kwargs: dict[str, Any] = {"text": list(prompts), "return_tensors": "pt"}
        if any(images):
            kwargs["images"] = [img for imgs in images for img in imgs] if arch.flat_images else list(images)
        bos = loaded.tokenizer.bos_token
        if bos and all(p.startswith(bos) for p in prompts):  # the chat template wrote it already
            kwargs["add_special_tokens"] = False
        if len(prompts) > 1:
            kwargs.update(padding=True, padding_side="left")
        try:
            encoded = dict(processor(**kwargs))
        except (InputError, BackendError):
            raise
        except Exception as exc:
            raise BackendError(f"vlm/{self.name} could not prepare the inputs for {loaded.kind}: "
                               f"{type(exc).__name__}: {exc}") from exc
        encoded.pop("labels", None)  # PaliGemma's processor adds training labels
        if "input_ids" in encoded:
            check_context(f"vlm/{self.name}", int(encoded["input_ids"].shape[1]), max_tokens,
                          context_length(loaded.tokenizer, loaded.model))
        dtype = loaded.model.dtype
        moved = {k: (v.to(loaded.device, dtype) if v.is_floating_point() else v.to(loaded.device))
                 if hasattr(v, "is_floating_point") else v for k, v in encoded.items()}
        return moved, int(moved["input_ids"].shape[1])

    def _prompt(self, loaded: Loaded, messages: Sequence[Message]) -> tuple[str, list]:
        """(prompt text, RGB images in order) for one conversation."""
        what = f"vlm/{self.name}"
        if not messages:
            raise InputError(f"{what}: no messages")
        chat, images = [], []
        for message in messages:
            # Lone surrogates (undecodable argv bytes) become U+FFFD: a tokenizer refuses them.
            parts = [{"type": "text", "text": clean_text(message.content)}] if isinstance(message.content, str) else []
            for part in () if isinstance(message.content, str) else message.content:
                if part.type == "text":
                    parts.append({"type": "text", "text": clean_text(part.text)})
                elif part.type == "image":
                    parts.append({"type": "image"})
                    images.append(part)
                else:
                    raise InputError(f"{what} reads text and images, not {part.type} parts (transcribe audio first)")
            chat.append({"role": message.role, "content": parts})
        arch = loaded.arch
        if arch.needs_image and not images:
            raise InputError(f"{what}: {loaded.kind} models need an image in the request (none was given)")
        if arch.max_images is not None and len(images) > arch.max_images:
            raise InputError(f"{what}: {loaded.kind} models take at most {arch.max_images} image(s) per request, "
                             f"not {len(images)}")
        template = loaded.processor.chat_template or loaded.tokenizer.chat_template
        if template:
            prompt = loaded.processor.apply_chat_template(chat, chat_template=template, add_generation_prompt=True,
                                                          tokenize=False)
        else:
            text = clean_text("\n".join(m.text for m in messages if m.text.strip()))
            token = getattr(loaded.processor, "image_token", "") or ""
            prompt = arch.prompt.format(images=str(token) * len(images), text=text)
        return prompt, [open_rgb(image) for image in images]

    # -- generation --------------------------------------------------------------------------------

    def _generate(self, loaded: Loaded, inputs: dict, *, max_tokens: int, temperature: float,
                  stop: Sequence[str] | None, streamer=None):
        import torch

        if max_tokens < 1:
            raise InputError(f"vlm/{self.name}: max_tokens must be at least 1, not {max_tokens}")
        tokenizer = loaded.tokenizer
        kwargs: dict[str, Any] = dict(inputs, streamer=streamer, **generate_options(
            tokenizer, max_tokens=max_tokens, temperature=temperature, stop=stop))
        try:
            with torch.inference_mode():
                return loaded.model.generate(**kwargs)
        except Exception as exc:
            raise BackendError(f"vlm/{self.name} generation failed ({loaded.kind}): "
                               f"{type(exc).__name__}: {exc}") from exc


def _eos_ids(loaded: Loaded) -> set[int]:
    eos = loaded.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids


def load_processor(source: str, kind: str, hub: dict) -> Any:
    """`AutoProcessor`, or, where it fails only for want of torchvision (a video processor that an
    image request never uses: Qwen2-VL, SmolVLM2 ... in transformers 5), the model's processor
    class without its video processor."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(source, **hub)
    except Exception:
        cls = _processor_class(kind)
        if (cls is None or "video_processor" not in cls.get_attributes()
                or importlib.util.find_spec("torchvision") is not None):
            raise
    return _without_video(cls).from_pretrained(source, **hub)


def _processor_class(kind: str) -> type | None:
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES, processor_class_from_name

    name = PROCESSOR_MAPPING_NAMES.get(kind)
    return processor_class_from_name(name) if name else None


def _without_video(cls: type) -> type:
    keep = [a for a in cls.get_attributes() if a != "video_processor"]
    return type(cls.__name__, (cls,), {"__module__": cls.__module__, "video_processor": None,
                                       "get_attributes": classmethod(lambda _: list(keep))})


@hookimpl
def register_backends(register):
    register(TransformersVLM)
