"""Device and dtype checks for backends on onnxruntime (no torch): shared by OCR and TTS."""

from __future__ import annotations

from mmagent.errors import BackendError

_FLOAT32 = ("auto", "float32", "fp32")


def use_cuda(device: str, backend: str) -> bool:
    """Whether to run on CUDA: "auto" uses it when onnxruntime has the CUDA provider, "cpu" never,
    "cuda"/"cuda:N" always (a BackendError when the provider is missing)."""
    import onnxruntime

    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    kind = device.split(":", 1)[0]
    if device == "auto":
        return has_cuda
    if kind == "cpu":
        return False
    if kind == "cuda":
        if not has_cuda:
            raise BackendError(f"{backend}: device '{device}' needs onnxruntime-gpu (the CUDA provider is missing)")
        return True
    raise BackendError(f"{backend}: unknown device '{device}' for onnxruntime (use auto, cpu or cuda)")


def check_float32(dtype: str, backend: str) -> None:
    """The packaged ONNX models are float32; refuse other dtypes rather than ignore them."""
    if dtype.lower() not in _FLOAT32:
        raise BackendError(f"{backend}: dtype '{dtype}' is not supported (these ONNX models run in float32)")
