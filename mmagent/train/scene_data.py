"""Scene-world data as tensors: pixels preprocessed exactly as the saved model's processor does,
plus ground-truth attribute targets taken from the generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..scenes import COLOURS, KINDS, SIZES, generate_scene, render
from ..scenes.vocab import COLUMNS, ROWS, WORDS

IMAGE_SIZE = 64
MEAN = STD = (0.5, 0.5, 0.5)
MAX_COUNT = 4
COMBOS = [(c, k) for c in COLOURS for k in KINDS]  # 15 colour x kind presence targets
SIZED = [(c, k, z) for c, k in COMBOS for z in SIZES]  # 30 per-patch targets: colour x kind x size
GRID = 4  # the encoder's patch grid (IMAGE_SIZE / patch size)
#: Per-patch position targets: the row word, then the column word, of the object centred there
#: (the description's "at the top left"), so a patch's token can say where it is in words.
PLACES = (*ROWS, *COLUMNS)


@dataclass
class SceneTensors:
    pixels: torch.Tensor  # (N, 3, S, S) float, normalised
    presence: torch.Tensor  # (N, 15) float 0/1: is there a <colour> <kind>
    counts: torch.Tensor  # (N, 3) long: how many of each kind (0..4)
    total: torch.Tensor  # (N,) long: how many objects (1..4)
    cells: torch.Tensor  # (N, GRID*GRID, 30) float 0/1: which objects have their centre in each patch
    descriptions: list[str]
    scenes: list
    places: torch.Tensor | None = None  # (N, GRID*GRID, 6) 0/1: row and column words of those objects
    signs: torch.Tensor | None = None  # (N, GRID*GRID, len(WORDS)) 0/1: the printed word over the patch


def preprocess(images) -> torch.Tensor:
    """PIL images -> normalised pixel tensor: bicubic resize to IMAGE_SIZE, like the processor."""
    from PIL import Image

    arrays = [np.asarray(im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC),
                         dtype=np.float32) / 255.0 for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def make_scenes(seed: int | str, n: int, *, size: int = 128, word_prob: float = 0.3) -> SceneTensors:
    """`n` scenes of `seed` as tensors; the defaults are `mmagent scenes`' (128 px, a word in 30 %)."""
    scenes = [generate_scene(seed, i, size=size, word_prob=word_prob) for i in range(n)]
    pixels = preprocess(render(s) for s in scenes)
    presence = torch.zeros(n, len(COMBOS))
    counts = torch.zeros(n, len(KINDS), dtype=torch.long)
    cells = torch.zeros(n, GRID * GRID, len(SIZED))
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            presence[i, COMBOS.index((obj.colour, obj.kind))] = 1.0
            counts[i, KINDS.index(obj.kind)] += 1
            cell = min(GRID * obj.y // size, GRID - 1) * GRID + min(GRID * obj.x // size, GRID - 1)
            cells[i, cell, SIZED.index((obj.colour, obj.kind, obj.size))] = 1.0
    total = torch.tensor([len(s.objects) for s in scenes])
    places, signs = place_and_sign_targets(scenes, size)
    return SceneTensors(pixels, presence, counts, total, cells, [s.description for s in scenes], scenes,
                        places, signs)


def place_and_sign_targets(scenes, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch: the row and column words ("top", "left") of each object centred in it, and which
    word's sign covers it (the box the renderer draws around the printed word)."""
    from ..scenes.drawing import _word_mask
    from ..scenes.generate import font_size, text_padding

    places = torch.zeros(len(scenes), GRID * GRID, len(PLACES))
    signs = torch.zeros(len(scenes), GRID * GRID, len(WORDS))
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            cell = min(GRID * obj.y // size, GRID - 1) * GRID + min(GRID * obj.x // size, GRID - 1)
            places[i, cell, PLACES.index(obj.row(size))] = 1.0
            places[i, cell, len(ROWS) + COLUMNS.index(obj.column(size))] = 1.0
        if scene.word and scene.word_band:
            width = _word_mask(scene.word, font_size(size)).width + 2 * text_padding(size) + 1
            left, top, right, bottom = (size - width) // 2, scene.word_band[1], (size + width) // 2, scene.word_band[3]
            for r in range(GRID):
                for c in range(GRID):
                    x0, y0, x1, y1 = c * size / GRID, r * size / GRID, (c + 1) * size / GRID, (r + 1) * size / GRID
                    if x0 <= right and left < x1 and y0 <= bottom and top < y1:
                        signs[i, r * GRID + c, WORDS.index(scene.word)] = 1.0
    return places, signs
