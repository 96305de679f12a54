"""What backends return: plain dataclasses, JSON-friendly through `dataclasses.asdict`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..content.parts import Part

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None = None
    segments: tuple[Segment, ...] = ()


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: Box
    confidence: float


@dataclass(frozen=True)
class OcrResult:
    """Detected text boxes. `text` joins boxes that share a row ("TOTAL" + "9.75" → "TOTAL 9.75")."""

    lines: tuple[OcrLine, ...] = ()

    @property
    def text(self) -> str:
        return "\n".join(" ".join(line.text for line in row) for row in self.rows())

    def rows(self) -> list[list[OcrLine]]:
        """Boxes grouped into visual rows (vertical centre inside the row's band), left to right."""
        rows: list[list[OcrLine]] = []
        for line in sorted(self.lines, key=lambda l: (l.box[1] + l.box[3]) / 2):
            centre = (line.box[1] + line.box[3]) / 2
            if rows and rows[-1][0].box[1] <= centre <= rows[-1][0].box[3]:
                rows[-1].append(line)
            else:
                rows.append([line])
        return [sorted(row, key=lambda l: l.box[0]) for row in rows]


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: Box


@dataclass(frozen=True)
class ToolSpec:
    """A function the chat model may call: name, description, JSON-schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Message:
    """A chat message. `content` is text or a list of parts (images, audio for VLMs/unified models)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[Part]
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.type == "text")  # type: ignore[union-attr]


@dataclass(frozen=True)
class ChatResult:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    usage: dict[str, int] = field(default_factory=dict)
