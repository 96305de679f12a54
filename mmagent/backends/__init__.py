"""Backend contracts by role, the registry, and the shared model cache."""

from .base import Backend
from .model_cache import cached_model, loaded_models, unload
from .registry import BackendEntry, BackendRegistry, get_backend, get_registry, list_backends
from .results import (
    ChatResult,
    Detection,
    Message,
    OcrLine,
    OcrResult,
    Segment,
    ToolCall,
    ToolSpec,
    Transcript,
)
from .roles import (
    ROLE_CONTRACTS,
    Captioner,
    ChatModel,
    Embedder,
    ObjectDetector,
    SpeechToText,
    TextReader,
    TextToImage,
    TextToSpeech,
    UnifiedModel,
    VisionLanguageModel,
)

__all__ = [
    "Backend", "BackendEntry", "BackendRegistry", "Captioner", "ChatModel", "ChatResult", "Detection",
    "Embedder", "Message", "ObjectDetector", "OcrLine", "OcrResult", "ROLE_CONTRACTS", "Segment", "SpeechToText",
    "TextReader", "TextToImage", "TextToSpeech", "ToolCall", "ToolSpec", "Transcript",
    "UnifiedModel", "VisionLanguageModel", "cached_model", "get_backend", "get_registry", "list_backends",
    "loaded_models", "unload",
]
