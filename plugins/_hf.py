"""Helpers shared by the Hugging Face plugins (vision, diffusers_t2i); not a plugin itself."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from mmagent.errors import BackendError

if TYPE_CHECKING:
    from PIL.Image import Image

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


#: How long the one reachability check of the hub may take, DNS lookup included.
HUB_CHECK_SECONDS = 3.0
_hub_checks: dict[str, str | None] = {}
_hub_lock = threading.Lock()


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


def cached_snapshot(model_id: str, revision: str | None = None) -> Path | None:
    """The local snapshot folder of hub id `model_id` when its config.json (a model) or
    model_index.json (a diffusers pipeline) is cached, else None. Reads the disk only."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("config.json", "model_index.json"):
        try:
            found = try_to_load_from_cache(model_id, filename, revision=revision)
        except Exception:  # not a valid repo id (HFValidationError), an unreadable cache
            return None
        if isinstance(found, str) and Path(found).is_file():
            return Path(found).parent
    return None


def hub_unreachable_reason(timeout: float = HUB_CHECK_SECONDS) -> str | None:
    """None when the Hugging Face hub answers, else why not: offline mode is on, or the one request
    to the endpoint failed or took over `timeout` seconds (a hung DNS lookup included). Asked
    once per process and endpoint; any HTTP answer counts as reachable."""
    if hf_offline_mode():
        return "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import constants, get_session
    except ImportError:
        return "huggingface_hub is not installed"
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    with _hub_lock:
        if endpoint not in _hub_checks:
            answers: list[str | None] = []

            def probe() -> None:
                try:
                    get_session().head(endpoint, timeout=timeout)
                    answers.append(None)
                except Exception as exc:  # DNS failure, refused connection, proxy refusal, timeout
                    answers.append(f"{endpoint}: {type(exc).__name__}: {' '.join(str(exc).split())}")

            thread = threading.Thread(target=probe, name="mmagent-hub-check", daemon=True)
            thread.start()
            thread.join(timeout + 0.5)
            _hub_checks[endpoint] = answers[0] if answers else f"{endpoint}: no answer within {timeout:g} s"
        return _hub_checks[endpoint]


def hf_offline_mode() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, now or at its import."""
    if any(os.environ.get(var, "").strip().lower() in ("1", "on", "yes", "true")
           for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def open_rgb(image: ImagePart) -> Image:
    """The stored image decoded as an RGB PIL image."""
    from PIL import Image

    with Image.open(image.path()) as img:
        return img.convert("RGB")


class _NoTorchvisionFallbackNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back" not in record.getMessage()


def quiet_torchvision_fallback() -> None:
    """Drop transformers' notice that an image processor falls back to its PIL variant without
    torchvision (diffusers triggers it on every pipeline load); other messages are kept."""
    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _NoTorchvisionFallbackNotice) for f in logger.filters):
        logger.addFilter(_NoTorchvisionFallbackNotice())
