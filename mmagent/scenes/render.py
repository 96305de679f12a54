"""`render(scene)`: the scene as a crisp PIL image (no antialiasing on shapes, so every object
pixel is exactly its palette colour). PIL is imported here, on first use."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from .generate import font_size, text_padding
from .model import Scene
from .vocab import COLOURS, WORD_BORDER, WORD_BOX, WORD_INK

if TYPE_CHECKING:
    from PIL import Image


def render(scene: Scene) -> "Image.Image":
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (scene.size, scene.size), tuple(scene.background))
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fill = COLOURS[obj.colour]
        left, top, right, bottom = obj.box()
        if obj.kind == "circle":
            draw.ellipse((left, top, right, bottom), fill=fill)
        elif obj.kind == "square":
            draw.rectangle((left, top, right, bottom), fill=fill)
        elif obj.kind == "triangle":
            draw.polygon([(obj.x, top), (right, bottom), (left, bottom)], fill=fill)
        else:  # pragma: no cover - the generator only makes the kinds above
            raise ValueError(f"unknown kind {obj.kind!r}")
    if scene.word and scene.word_band:
        _draw_word(draw, scene)
    return image


def _draw_word(draw, scene: Scene) -> None:
    """Black text on a white box, centred in the band at the bottom."""
    font = _font(font_size(scene.size))
    pad = text_padding(scene.size)
    _, band_top, _, band_bottom = scene.word_band
    l, t, r, b = draw.textbbox((0, 0), scene.word, font=font)
    width = (r - l) + 2 * pad
    box_left = (scene.size - width) // 2
    draw.rectangle((box_left, band_top, box_left + width, band_bottom), fill=WORD_BOX, outline=WORD_BORDER)
    text_x = box_left + pad - l
    text_y = band_top + (band_bottom - band_top + 1 - (b - t)) // 2 - t
    draw.text((text_x, text_y), scene.word, font=font, fill=WORD_INK)


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()
