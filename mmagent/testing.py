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
