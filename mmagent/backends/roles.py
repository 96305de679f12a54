"""One contract per role. A backend subclasses the role's class and implements its method(s)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

from ..content.parts import AudioPart, ImagePart
from .base import Backend
from .results import ChatResult, Detection, Message, OcrResult, ToolSpec, Transcript

if TYPE_CHECKING:
    import numpy as np


class SpeechToText(Backend):
    role: ClassVar[str] = "asr"
    accepts = ("audio",)
    produces = ("text",)

    def transcribe(self, audio: AudioPart, *, language: str | None = None) -> Transcript:
        raise NotImplementedError


class Captioner(Backend):
    role: ClassVar[str] = "caption"
    accepts = ("image",)
    produces = ("text",)

    def caption(self, image: ImagePart, *, prompt: str | None = None) -> str:
        raise NotImplementedError


class TextReader(Backend):
    """OCR: lines of text with boxes and confidences."""

    role: ClassVar[str] = "ocr"
    accepts = ("image",)
    produces = ("text",)

    def read(self, image: ImagePart) -> OcrResult:
        raise NotImplementedError


class ObjectDetector(Backend):
    role: ClassVar[str] = "detect"
    accepts = ("image",)
    produces = ("boxes",)

    def detect(self, image: ImagePart, *, labels: Sequence[str] | None = None,
               threshold: float = 0.5) -> list[Detection]:
        """Labelled boxes; `labels` asks an open-vocabulary detector for those classes."""
        raise NotImplementedError


class ChatModel(Backend):
    """Text (and, for unified models, media parts) in; text and optional tool calls out."""

    role: ClassVar[str] = "llm"
    accepts = ("text",)
    produces = ("text",)
    supports_tools: ClassVar[bool] = False
    supports_streaming: ClassVar[bool] = False
    #: True when `chat` takes `schema=` (a JSON schema dict) and its reply is JSON following it
    #: (constrained decoding, or a server's native structured output). Callers pass `schema=`
    #: only to backends that set this; the others keep the signature below.
    supports_schema: ClassVar[bool] = False

    def chat(self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None,
             max_tokens: int = 256, temperature: float = 0.0, stop: Sequence[str] | None = None) -> ChatResult:
        raise NotImplementedError

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 256, temperature: float = 0.0,
               stop: Sequence[str] | None = None) -> Iterator[str]:
        """Text pieces as they are generated; backends without streaming yield the whole answer."""
        yield self.chat(messages, max_tokens=max_tokens, temperature=temperature, stop=stop).text


class VisionLanguageModel(ChatModel):
    """Images + text in, text out (LLaVA, BLIP-2, Qwen-VL ...): `chat` messages carry image parts."""

    role: ClassVar[str] = "vlm"
    accepts = ("image", "text")


class UnifiedModel(ChatModel):
    """One model that reads text, images and audio natively (GPT-4o-class, over an API): `chat`
    messages carry image and audio parts, nothing is transcribed or captioned first."""

    role: ClassVar[str] = "unified"
    accepts = ("text", "image", "audio")


class Embedder(Backend):
    """Sentence embeddings: what the intent router (graphs/intent.py) compares by cosine similarity."""

    role: ClassVar[str] = "embed"
    accepts = ("text",)
    produces = ("vector",)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dimension), each row of unit L2 norm (so a dot
        product is the cosine similarity); no texts give shape (0, dimension)."""
        raise NotImplementedError


class TextToImage(Backend):
    role: ClassVar[str] = "image_gen"
    accepts = ("text",)
    produces = ("image",)

    def generate(self, prompt: str, *, width: int = 512, height: int = 512, steps: int = 30,
                 guidance: float = 7.5, seed: int | None = None,
                 negative_prompt: str | None = None) -> ImagePart:
        raise NotImplementedError


class TextToSpeech(Backend):
    role: ClassVar[str] = "tts"
    accepts = ("text",)
    produces = ("audio",)

    def synthesize(self, text: str, *, voice: str | None = None) -> AudioPart:
        raise NotImplementedError


#: The contract class of each built-in role.
ROLE_CONTRACTS: dict[str, type[Backend]] = {
    cls.role: cls
    for cls in (SpeechToText, Captioner, TextReader, ObjectDetector, ChatModel, VisionLanguageModel,
                UnifiedModel, TextToImage, TextToSpeech, Embedder)
}
