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
        _draw_word(image, draw, scene)
    return image


def _draw_word(image, draw, scene: Scene) -> None:
    """Black text on a white box, centred in the band at the bottom."""
    ink = _word_mask(scene.word, font_size(scene.size))
    pad = text_padding(scene.size)
    _, band_top, _, band_bottom = scene.word_band
    width = ink.width + 2 * pad + 1  # border, pad, ink, pad, border
    box_left = (scene.size - width) // 2
    draw.rectangle((box_left, band_top, box_left + width, band_bottom), fill=WORD_BOX, outline=WORD_BORDER)
    top = band_top + (band_bottom - band_top + 1 - ink.height) // 2
    image.paste(WORD_INK, (box_left + pad + 1, top), ink)


@lru_cache(maxsize=256)
def _word_mask(word: str, size: int):
    """The word's ink as an "L" mask (0 or 255: no antialiasing), cropped to the ink itself.
    (ImageDraw.textbbox misjudges the width of non-antialiased text, so the ink is measured.)"""
    from PIL import Image, ImageDraw

    font = _font(size)
    canvas = Image.new("L", (size * (len(word) + 2), size * 3), 0)
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "1"
    draw.text((size, size), word, font=font, fill=255)
    return canvas.crop(canvas.getbbox())


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()
