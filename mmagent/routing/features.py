"""Cheap request features for the router: statistics of a small thumbnail of each image (size,
brightness, colourfulness, how much is blank page or ink, edge density, palette size) — enough to
tell a synthetic scene from a receipt or a photo in well under a millisecond per image — and the
modality flags of the request."""

from __future__ import annotations

import io
import math

import numpy as np

IMAGE_FEATURES = ("log_width", "log_height", "aspect", "luma_mean", "luma_std", "saturation_mean", "saturated",
                  "white", "dark", "edges", "colours")
FLAGS = ("has_image", "has_audio", "spoken")
THUMBNAIL = 64


def image_features(data: bytes) -> np.ndarray:
    """`IMAGE_FEATURES` of an encoded image (float32). Raises ValueError when it cannot be decoded."""
    from PIL import Image

    from ..content.guard import to_8bit

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.draft("RGB", (THUMBNAIL * 2, THUMBNAIL * 2))  # JPEG: decode at a reduced scale
            small = to_8bit(image).convert("RGB").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is "not an image" here
        raise ValueError(f"cannot read the image: {exc}") from exc
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    top, bottom = rgb.max(axis=2), rgb.min(axis=2)
    saturation = np.where(top > 0, (top - bottom) / np.maximum(top, 1e-6), 0.0)
    edges = (np.abs(np.diff(luma, axis=0)).mean() + np.abs(np.diff(luma, axis=1)).mean()) / 2
    palette = len(np.unique((rgb * 7).astype(np.uint8).reshape(-1, 3), axis=0))
    return np.array([
        math.log2(max(width, 1)) / 10, math.log2(max(height, 1)) / 10, math.log2(max(width, 1) / max(height, 1)),
        luma.mean(), luma.std(), saturation.mean(), (saturation > 0.35).mean(), (luma > 0.96).mean(),
        (luma < 0.25).mean(), edges * 10, palette / 64,
    ], dtype=np.float32)


def request_vector(question: np.ndarray | None, images: list[np.ndarray], *, dim: int, has_audio: bool,
                   spoken: bool) -> np.ndarray:
    """The router's input: the question's embedding (zeros without one), the mean image features
    (zeros without images) and the modality flags."""
    q = np.zeros(dim, dtype=np.float32) if question is None else np.asarray(question, dtype=np.float32)
    if not images:
        img = np.zeros(len(IMAGE_FEATURES), dtype=np.float32)
    else:
        img = images[0] if len(images) == 1 else np.stack(images).mean(axis=0)
    return np.concatenate([q, img, np.array([bool(images), has_audio, spoken], dtype=np.float32)])
