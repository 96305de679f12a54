"""The Hugging Face hub as seen from here, checked cheaply and without loading anything: is a
model id in the local cache, and can the hub be reached at all?

Core owns these so that the CLI can fail fast on a model that cannot be had (`mmagent run -m`)
without importing a plugin; the Hugging Face plugins use them before `from_pretrained`, which
would otherwise retry for a minute before saying the hub is out of reach. huggingface_hub is
imported only when a function is called.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

#: How long the one reachability check of the hub may take, DNS lookup included.
HUB_CHECK_SECONDS = 3.0
_hub_checks: dict[str, str | None] = {}
_hub_lock = threading.Lock()


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
