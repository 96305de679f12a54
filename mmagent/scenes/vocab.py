"""The closed world of the scenes: kinds, colours (exact RGB), sizes, words and caption templates.

Kept small on purpose (3 kinds x 5 colours x 2 sizes) so that a small image encoder can learn it
in minutes. Changing anything here changes every generated dataset: bump `FORMAT_VERSION`.
"""

from __future__ import annotations

FORMAT_VERSION = 1

KINDS = ("circle", "square", "triangle")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}

#: The palette, exact RGB. Rendering is not antialiased, so every pixel of an object has this colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 60, 180),
}

#: Half the side of an object's bounding box, as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.08, "large": 0.14}

#: Light, plain backgrounds (none close to a palette colour, all far from the black text).
BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (240, 240, 240),
    (232, 232, 224),
    (224, 232, 240),
    (236, 228, 240),
)

WORD_BOX = (255, 255, 255)
WORD_INK = (0, 0, 0)
WORD_BORDER = (90, 90, 90)

#: Short common words for the printed sign (no colour or shape names, so a word never answers
#: another question). The `read` answer is the word in lowercase.
WORDS = (
    "STOP", "GO", "EXIT", "OPEN", "CAT", "DOG", "SUN", "TREE", "BOOK", "FISH",
    "BIRD", "CAKE", "MILK", "HOME", "PARK", "RAIN", "STAR", "BOAT", "DOOR", "LAMP",
)

#: What a typical generic captioner writes: no colours, no sizes, no counts beyond "single".
CAPTIONS: dict[tuple[bool, bool], tuple[str, ...]] = {
    # (several objects?, word?) -> templates
    (False, False): (
        "A single shape on a plain background.",
        "One simple shape on a light background.",
        "A simple geometric shape on a plain background.",
    ),
    (True, False): (
        "A few simple shapes on a plain background.",
        "Some geometric shapes on a light background.",
        "Several shapes scattered on a plain background.",
    ),
    (False, True): (
        "A single shape and a sign with a word.",
        "A simple shape above a sign with text.",
    ),
    (True, True): (
        "Some shapes and a sign with a word.",
        "A few simple shapes above a sign with text.",
    ),
}

ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")
