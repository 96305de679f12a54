"""Zero-cost backends for testing graphs and measuring orchestration overhead.

They follow the role contracts exactly and return scripted results instantly, so a test of a
graph checks the graph, and a benchmark measures mmagent rather than a model.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Sequence

from .backends.results import ChatResult, Detection, Message, OcrLine, OcrResult, ToolCall, ToolSpec, Transcript
from .backends.roles import (Captioner, ChatModel, Embedder, ObjectDetector, SpeechToText, TextReader, TextToImage,
                             TextToSpeech, VisionLanguageModel)
from .content.parts import AudioPart, ImagePart


class ScriptedASR(SpeechToText):
    name = "scripted"

    def __init__(self, text: str = "hello", **kw):
        super().__init__(**kw)
        self.text = text

    def transcribe(self, audio: AudioPart, *, language: str | None = None) -> Transcript:
        return Transcript(self.text, language or "en")


class ScriptedOCR(TextReader):
    name = "scripted"

    def __init__(self, lines: Sequence[str] = ("TOTAL 9.75",), **kw):
        super().__init__(**kw)
        self.lines = tuple(lines)

    def read(self, image: ImagePart) -> OcrResult:
        return OcrResult(tuple(OcrLine(t, (0.0, 10.0 * i, 10.0, 10.0 * i + 9), 0.99) for i, t in enumerate(self.lines)))


class ScriptedCaptioner(Captioner):
    name = "scripted"

    def __init__(self, caption: str = "a picture", **kw):
        super().__init__(**kw)
        self.text = caption

    def caption(self, image: ImagePart, *, prompt: str | None = None) -> str:
        return self.text


class ScriptedDetector(ObjectDetector):
    name = "scripted"

    def detect(self, image: ImagePart, *, labels: Sequence[str] | None = None, threshold: float = 0.5) -> list[Detection]:
        return [Detection((labels or ["object"])[0], 0.9, (1.0, 1.0, image.width / 2, image.height / 2))]


class ScriptedLLM(ChatModel):
    """Answers with `reply`, or with each of `replies` in turn (ChatResults may carry tool calls).
    Records every call's messages and tools in `calls`."""

    name = "scripted"
    supports_streaming = True

    def __init__(self, reply: str = "ok", replies: Sequence[ChatResult] = (), supports_tools: bool = False, **kw):
        super().__init__(**kw)
        self.reply, self.replies = reply, list(replies)
        self.supports_tools = supports_tools
        self.calls: list[dict] = []

    def chat(self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None, max_tokens: int = 256,
             temperature: float = 0.0, stop: Sequence[str] | None = None) -> ChatResult:
        self.calls.append({"messages": list(messages), "tools": list(tools or [])})
        return self.replies.pop(0) if self.replies else ChatResult(self.reply)

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 256, temperature: float = 0.0,
               stop: Sequence[str] | None = None):
        """The reply word by word (what a streaming model looks like to a graph)."""
        text = self.chat(messages, max_tokens=max_tokens, temperature=temperature, stop=stop).text
        words = text.split(" ")
        for i, word in enumerate(words):
            yield word if i == len(words) - 1 else word + " "


class ScriptedVLM(ScriptedLLM, VisionLanguageModel):
    """A vision-language model answering `reply`; `calls` keeps the messages (with their image parts).
    Role "vlm" and what it accepts come from the `VisionLanguageModel` contract."""


class ScriptedEmbedder(Embedder):
    """Deterministic unit vectors from hashed words (bag of words, `dimension` buckets): texts that
    share words are similar, as the `Embedder` contract's callers expect, at no cost."""

    name = "scripted"

    def __init__(self, dimension: int = 64, **kw):
        super().__init__(**kw)
        self.dimension = dimension

    def embed(self, texts: Sequence[str]):
        import zlib

        import numpy as np

        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, zlib.crc32(word.encode()) % self.dimension] += 1.0
            if not vectors[row].any():
                vectors[row, 0] = 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def tool_call(name: str, **arguments) -> ChatResult:
    """A ChatResult asking for one tool call (for ScriptedLLM(replies=[...]))."""
    return ChatResult("", tool_calls=(ToolCall(f"call_{name}", name, arguments),), finish_reason="tool_calls")


class ScriptedTTS(TextToSpeech):
    name = "scripted"

    def synthesize(self, text: str, *, voice: str | None = None) -> AudioPart:
        from .content.sources import load_media

        return load_media(silent_wav(0.2), expect="audio")  # type: ignore[return-value]


class ScriptedImageGen(TextToImage):
    name = "scripted"

    def generate(self, prompt: str, *, width: int = 64, height: int = 64, steps: int = 1, guidance: float = 0.0,
                 seed: int | None = None, negative_prompt: str | None = None) -> ImagePart:
        from PIL import Image

        from .content.sources import load_media

        buf = io.BytesIO()
        Image.new("RGB", (width, height), (seed or 0) % 256).save(buf, "PNG")
        return load_media(buf.getvalue(), expect="image")  # type: ignore[return-value]


def silent_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A valid mono 16-bit WAV of silence."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return buf.getvalue()


def scripted_toolbox(**backends):
    """A Toolbox whose roles are exactly the given backends (e.g. asr=ScriptedASR("hi"))."""
    from .toolbox import Toolbox

    return Toolbox(backends, exclusive=True)


# -- synthetic eval results, for the router's tests and benchmarks --------------------------------------------


def scene_png(i: int, size: int = 128) -> bytes:
    """A synthetic scene (PNG bytes): coloured discs on a light background, different for each `i`."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(i)
    image = Image.new("RGB", (size, size), (235, 235, 228))
    draw = ImageDraw.Draw(image)
    fills = [(220, 40, 40), (40, 80, 220), (40, 170, 60), (235, 200, 30), (150, 50, 170)]
    for _ in range(3):
        x, y = rng.integers(10, size - 40, 2)
        draw.ellipse([x, y, x + 30, y + 30], fill=fills[rng.integers(0, 5)])
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def document_png(i: int) -> bytes:
    """A receipt-like page (PNG bytes): lines of black text on white, taller than wide."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (300, 520), "white")
    draw = ImageDraw.Draw(image)
    for row in range(12):
        draw.text((20, 20 + 38 * row), f"ITEM {i}-{row}   {row + i}.50", fill="black")
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


#: Which route answers which synthetic question type (`write_route_eval`).
ROUTE_EVAL_RIGHT = {"colour": {"adapter", "hybrid"}, "shape": {"adapter", "hybrid"}, "read": {"tools", "hybrid"},
                    "receipt": {"tools"}}


def write_route_eval(folder, n: int = 12, routes: Sequence[str] = ("tools", "adapter"),
                     latency: dict[str, float] | None = None):
    """An eval folder as `mmagent eval` writes it (results.jsonl + media) for `routes`: colour and
    shape questions on scenes (the adapter route right), read-the-word questions on scenes (the
    tools right), totals on receipt-like pages (the tools right) — `ROUTE_EVAL_RIGHT` — with
    per-item seconds from `latency` (default tools 2 s, adapter 0.5 s, hybrid 2.5 s)."""
    import json
    from pathlib import Path

    folder = Path(folder)
    media = folder / "media"
    media.mkdir(parents=True)
    latency = latency or {"tools": 2.0, "adapter": 0.5, "hybrid": 2.5}
    colours, shapes = ("red", "blue", "green", "yellow", "purple"), ("circle", "square", "triangle")
    rows = []

    def add(item_id: str, kind: str, question: str, image: bytes) -> None:
        path = media / f"{item_id}.png"
        path.write_bytes(image)
        for route in routes:
            right = route in ROUTE_EVAL_RIGHT[kind]
            rows.append({"item_id": item_id, "pipeline": route, "type": kind, "question": question,
                         "prediction": "", "reference": ["x"], "score": float(right), "correct": right,
                         "seconds": latency[route], "error": None, "suite": "synthetic", "seed": 0, "batch_size": 1,
                         "images": [str(path)], "audio": []})

    for i in range(n):
        add(f"c{i}", "colour", f"What colour is the {shapes[i % 3]}?", scene_png(i))
        add(f"s{i}", "shape", f"What shape is the {colours[i % 5]} object?", scene_png(100 + i))
        add(f"r{i}", "read", "What word is written in the image?", scene_png(200 + i))
        add(f"t{i}", "receipt", "What is the total on the receipt?", document_png(i))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder
