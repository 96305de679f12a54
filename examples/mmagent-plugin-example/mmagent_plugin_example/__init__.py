"""An example mmagent plugin: the template to copy.

It implements both hooks:

* `register_backends` adds a `Captioner` named `palette` (role "caption") that describes an
  image by its size and dominant colours. It needs no model weights.
* `register_commands` adds `mmagent palette IMAGE [--colors N]`, which prints the dominant
  colours with their share of the image.

Importing this module is cheap on purpose: mmagent imports every installed plugin at start-up
(for `mmagent --help` too), so heavy libraries belong inside functions or `load_model()`.
Pillow is light, but it is imported lazily anyway to show the pattern.
"""

from __future__ import annotations

import io

import click

import mmagent
from mmagent.backends import Captioner
from mmagent.content import ImagePart

__version__ = "0.1.0"

#: Named reference colours (sRGB). Each dominant colour is called by the nearest of these.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "silver": (192, 192, 192),
    "white": (255, 255, 255),
    "red": (220, 20, 20),
    "maroon": (128, 0, 0),
    "orange": (255, 140, 0),
    "yellow": (255, 220, 0),
    "olive": (128, 128, 0),
    "green": (0, 160, 0),
    "teal": (0, 128, 128),
    "cyan": (0, 220, 220),
    "blue": (0, 60, 230),
    "navy": (0, 0, 128),
    "purple": (128, 0, 160),
    "magenta": (230, 0, 230),
    "pink": (255, 170, 190),
    "brown": (140, 80, 30),
    "beige": (230, 215, 170),
}

#: Images are shrunk to at most this many pixels a side before counting: plenty for colours.
_SAMPLE_SIDE = 128
#: Pixels are first grouped into this many shades, then shades are grouped by colour name.
_SHADES = 16


def color_name(rgb: tuple[int, int, int]) -> str:
    """The name of the nearest colour in PALETTE (squared distance in RGB)."""
    return min(PALETTE, key=lambda name: sum((a - b) ** 2 for a, b in zip(rgb, PALETTE[name])))


def dominant_colors(image: ImagePart, n: int = 3) -> list[tuple[str, str, float]]:
    """The `n` (or fewer) dominant colours of `image`, largest share first.

    Returns (name, hex of the most common shade with that name, share of the image 0..1).
    Shades that map to the same name are added together.
    """
    from PIL import Image  # lazy: only paid for when an image is actually analysed

    with Image.open(io.BytesIO(image.read_bytes())) as im:
        rgb = im.convert("RGB")
    rgb.thumbnail((_SAMPLE_SIDE, _SAMPLE_SIDE))
    quantized = rgb.quantize(colors=max(n, _SHADES), method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    counts = quantized.getcolors() or []  # [(count, palette index)]
    total = sum(count for count, _ in counts) or 1

    by_name: dict[str, tuple[str, float]] = {}  # name -> (hex of its largest shade, share)
    for count, index in sorted(counts, reverse=True):  # largest shade first
        r, g, b = palette[3 * index: 3 * index + 3]
        name = color_name((r, g, b))
        hex_, share = by_name.get(name, (f"#{r:02x}{g:02x}{b:02x}", 0.0))
        by_name[name] = (hex_, share + count / total)
    ranked = sorted(by_name.items(), key=lambda item: item[1][1], reverse=True)
    return [(name, hex_, share) for name, (hex_, share) in ranked[:n]]


class PaletteCaptioner(Captioner):
    """Describes an image by its size and dominant colours. No model: nothing to download."""

    name = "palette"
    description = "Size and dominant colours, named (no model; a plugin example)"
    requires = ("PIL",)  # import names; `mmagent backends` reports missing ones

    def load_model(self) -> None:
        # A real backend imports torch/transformers here and returns the model; it is called
        # once, on first use of `self.model`, and shared through mmagent's model cache.
        return None

    def caption(self, image: ImagePart, *, prompt: str | None = None) -> str:
        colors = dominant_colors(image, int(self.options.get("colors", 3)))
        if not colors:
            return f"A {image.width}x{image.height} image."
        (first, _, share), rest = colors[0], colors[1:]
        text = f"A {image.width}x{image.height} image, mostly {first} ({share:.0%})"
        if rest:
            text += ", with " + ", ".join(f"{name} ({s:.0%})" for name, _, s in rest)
        return text + "."


@click.command()
@click.argument("image")
@click.option("--colors", "-n", type=click.IntRange(1, 16), default=3, show_default=True,
              help="How many dominant colours to report.")
def palette(image: str, colors: int) -> None:
    """Print the dominant colours of IMAGE (a path, data URL or http(s) URL) with their share."""
    # load_media applies mmagent's input hardening (type sniffing, size and pixel caps, allowed
    # roots, URL policy); its errors become one-line messages with exit code 2.
    part = mmagent.load_media(image, expect="image")
    click.echo(f"{part.width}x{part.height} {part.format}")
    for name, hex_, share in dominant_colors(part, colors):
        click.echo(f"{name:<8} {hex_}  {share:6.1%}")


# -- the hooks ---------------------------------------------------------------------------------


@mmagent.hookimpl
def register_backends(register):
    register(PaletteCaptioner)


@mmagent.hookimpl
def register_commands(cli):
    cli.add_command(palette)
