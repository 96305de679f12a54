"""Helpers shared by the Hugging Face plugins (vision, vlm, transformers_llm, diffusers_t2i); not a
plugin itself. Plugins share code through public helpers here, never another plugin's private names."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmagent.errors import BackendError
from mmagent.hf_hub import cached_snapshot, hub_unreachable_reason

if TYPE_CHECKING:
    from collections.abc import Sequence

    from PIL.Image import Image

    from mmagent.backends import Backend
    from mmagent.content import ImagePart


def model_source(model_id: str | None, what: str, revision: str | None = None) -> str:
    """A zoo model's folder, a local folder (checked to exist) or a Hugging Face id, as
    `from_pretrained` takes it (`hub_source`: offline, a cached id's snapshot folder, and an
    uncached id fails at once). Call it before importing torch, so that fails in a moment."""
    if not model_id:
        raise BackendError(f"{what}: no model configured")
    from mmagent.zoo import get_zoo

    zoo = get_zoo()
    if model_id in zoo.specs:  # an offline model mmagent builds (e.g. the scene-world VLM)
        return str(zoo.ensure(model_id))
    path = Path(model_id).expanduser()
    if path.is_absolute() or model_id.startswith((".", "~")) or path.exists():
        if not path.is_dir():
            raise BackendError(f"{what}: model folder {model_id!r} does not exist")
        return str(path)
    return hub_source(model_id, what, revision)


def hub_source(model_id: str, what: str, revision: str | None = None) -> str:
    """What `from_pretrained` gets for hub id `model_id`: the id itself when the hub can be
    reached (it downloads or updates), the cached snapshot folder when it cannot (no request is
    made), and a one-line `BackendError` at once when it cannot and the id is not cached;
    `from_pretrained` would retry for a minute before failing."""
    snapshot = cached_snapshot(model_id, revision)
    reason = hub_unreachable_reason()
    if reason is None:
        return model_id
    if snapshot is not None:
        return str(snapshot)
    at = f" (revision {revision!r})" if revision else ""
    raise BackendError(f"{what}: {model_id!r}{at} is not in the local Hugging Face cache and the hub "
                       f"cannot be reached ({reason})")


def open_rgb(image: ImagePart) -> Image:
    """The stored image decoded as an RGB PIL image (16-bit and float images scaled to 8 bits,
    not clipped: see `mmagent.content.guard.to_8bit`)."""
    from PIL import Image

    from mmagent.content.guard import to_8bit

    with Image.open(image.path()) as img:
        return to_8bit(img).convert("RGB")


class _NoTorchvisionFallbackNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back" not in record.getMessage()


def quiet_torchvision_fallback() -> None:
    """Drop transformers' notice that an image processor falls back to its PIL variant without
    torchvision (diffusers triggers it on every pipeline load); other messages are kept."""
    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _NoTorchvisionFallbackNotice) for f in logger.filters):
        logger.addFilter(_NoTorchvisionFallbackNotice())


def hub_options(backend: Backend) -> dict[str, str]:
    """`from_pretrained` keywords: the `revision` option, else the default model's own revision."""
    revision = backend.options.get("revision")
    if not revision and backend.model_id == backend.default_model:
        revision = getattr(backend, "default_revision", None)
    return {"revision": revision} if revision else {}


def first_stop(text: str, stop: Sequence[str] | None) -> int | None:
    """Where the earliest of the `stop` strings begins in `text`, or None."""
    positions = [text.find(s) for s in stop or () if s and s in text]
    return min(positions) if positions else None


def pad_id(tokenizer) -> int:
    """The pad token, else the end token (SmolLM2-style tokenizers may have no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def generate_options(tokenizer, *, max_tokens: int, temperature: float, stop: Sequence[str] | None) -> dict:
    """`generate` keywords of every local generate call (chat, stream, batch; LLMs and VLMs):
    greedy at temperature 0, stop strings."""
    options: dict[str, Any] = dict(max_new_tokens=max_tokens, pad_token_id=pad_id(tokenizer))
    if temperature > 0:
        options.update(do_sample=True, temperature=temperature)
    else:
        options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if stop:
        options.update(stop_strings=list(stop), tokenizer=tokenizer)
    return options
