"""Turn the configured device and dtype ("auto", "cuda:1", "bfloat16" ...) into torch values.

torch is imported only when a backend that needs it resolves its device.
"""

from __future__ import annotations

from ..errors import BackendError

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_device(device: str = "auto") -> str:
    """"auto" -> "cuda" if a GPU is visible, else "mps" on Apple silicon, else "cpu"."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    kind = device.split(":", 1)[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device '{device}' was asked for but CUDA is not available")
    if kind not in ("cpu", "cuda", "mps", "xpu"):
        raise BackendError(f"unknown device '{device}' (use auto, cpu, cuda, cuda:N or mps)")
    return device


def resolve_dtype(dtype: str, device: str):
    """"auto" -> float32 on CPU; bfloat16 on GPUs that support it, else float16."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return getattr(torch, _DTYPES[dtype.lower()])
    except KeyError:
        raise BackendError(f"unknown dtype '{dtype}' (use auto, float32, float16 or bfloat16)") from None
