"""The data of a scene: plain dataclasses, JSON-ready through `to_dict`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .vocab import COLUMNS, ROWS


@dataclass(frozen=True)
class SceneObject:
    kind: str  # circle | square | triangle
    colour: str  # a key of vocab.COLOURS
    size: str  # small | large
    x: int  # centre, pixels from the left
    y: int  # centre, pixels from the top
    r: int  # half the side of the bounding box, pixels (the shape fills or is inscribed in it)

    def box(self) -> tuple[int, int, int, int]:
        """Bounding box (left, top, right, bottom), inclusive pixel coordinates."""
        return (self.x - self.r, self.y - self.r, self.x + self.r, self.y + self.r)

    def column(self, image_size: int) -> str:
        return COLUMNS[min(3 * self.x // image_size, 2)]

    def row(self, image_size: int) -> str:
        return ROWS[min(3 * self.y // image_size, 2)]


@dataclass(frozen=True)
class Question:
    type: str  # existence | colour | shape | count | position | comparison | read
    question: str
    answer: str  # one lowercase word or digits
    #: the answer with its reasons, as the scene VLM is trained to give it ("The green triangle is
    #: at the left and the red circle is at the right, so yes."); "" when the answer is the reason
    explained: str = ""


@dataclass
class Scene:
    seed: int | str
    index: int
    size: int
    background: tuple[int, int, int]
    objects: list[SceneObject]
    word: str | None  # uppercase as printed, or None
    word_band: tuple[int, int, int, int] | None  # band kept free of objects for the sign (l, t, r, b)
    caption: str = ""
    description: str = ""
    questions: list[Question] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The scene as written to scenes.jsonl (questions go to their own file)."""
        return {
            "id": self.index,
            "seed": self.seed,
            "size": self.size,
            "background": list(self.background),
            "caption": self.caption,
            "description": self.description,
            "objects": [asdict(o) for o in self.objects],
            "word": self.word,
            "word_band": list(self.word_band) if self.word_band else None,
        }
