"""What a request asks for: intents scored by sentence-embedding similarity to example phrasings
(MiniLM when available), with a keyword fallback. Deterministic, and cheap enough for a 135M LLM
pipeline: no generation involved."""

from __future__ import annotations

import re
import threading
import weakref
from dataclasses import dataclass

#: Example phrasings per intent. The deterministic planner picks tools from the best matches.
INTENTS: dict[str, tuple[str, ...]] = {
    "transcribe": ("transcribe this recording", "what is said in the audio", "write down what they say"),
    "verbatim": ("what word is written in the image", "what text is written in the image",
                 "transcribe the text in the picture", "read out the words on the sign"),
    "read": ("what does the text say", "read the document", "what is the total on the receipt",
             "extract the fields from the invoice", "what is written on the sign"),
    "describe": ("describe the picture", "what is in this image", "what do you see in the photo",
                 "what is shown in the video"),
    "detect": ("find the objects in the image", "draw boxes around the objects", "where is the dog",
               "how many cars are in the picture"),
    "image": ("generate an image of a cat", "draw a picture of a house", "create an illustration of a city",
              "paint a landscape"),
    "speech": ("say the answer out loud", "answer with speech", "read it aloud to me", "tell me with your voice"),
}

_KEYWORDS: dict[str, tuple[str, ...]] = {
    "transcribe": ("transcribe", "transcript", "what is said", "what did they say"),
    "verbatim": ("what word", "what text", "written in the image", "words on"),
    "read": ("read", "text", "say", "written", "total", "receipt", "invoice", "document", "extract", "ocr"),
    "describe": ("describe", "what is in", "what do you see", "caption", "picture", "photo"),
    "detect": ("detect", "find", "where is", "how many", "boxes", "locate"),
    "image": ("generate an image", "draw", "paint", "create an image", "illustration", "picture of"),
    "speech": ("out loud", "aloud", "speak", "voice", "say it"),
}

THRESHOLD = 0.45
# (Keyword scores tie at 1.0; the first intent listed wins, so the narrower "verbatim" precedes "read".)


@dataclass(frozen=True)
class Intent:
    scores: dict[str, float]
    method: str  # "embeddings" or "keywords"

    def wants(self, intent: str) -> bool:
        return self.scores.get(intent, 0.0) >= THRESHOLD

    @property
    def top(self) -> str | None:
        best = max(self.scores, key=self.scores.get, default=None)
        return best if best is not None and self.wants(best) else None


#: The example phrasings' vectors, embedded once per embedder (the question alone is embedded per
#: request: 1 sentence, not 1 + 25).
_vectors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_vectors_lock = threading.Lock()


def example_vectors(embedder):
    """The (n_examples, d) vectors of every intent's examples, in INTENTS order, for `embedder`."""
    with _vectors_lock:
        cached = _vectors.get(embedder)
    if cached is None:
        cached = embedder.embed([e for name in INTENTS for e in INTENTS[name]])
        with _vectors_lock:
            _vectors[embedder] = cached
    return cached


#: The last questions' vectors per embedder: the router and the route's intent step embed the
#: same question once.
_questions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
RECENT = 32


def question_vector(embedder, question: str):
    """`embedder`'s vector of `question`, remembered for the next few calls with the same text."""
    with _vectors_lock:
        recent = _questions.setdefault(embedder, {})
        vector = recent.get(question)
    if vector is None:
        vector = embedder.embed([question])[0]
        with _vectors_lock:
            if len(recent) >= RECENT:
                recent.pop(next(iter(recent)))
            recent[question] = vector
    return vector


def score_intents(question: str, embedder=None) -> Intent:
    """Score every intent in [0, 1]. `embedder` has `embed(texts) -> (n, d)` L2-normalised rows."""
    if embedder is not None and question.strip():
        names = list(INTENTS)
        sims = example_vectors(embedder) @ question_vector(embedder, question)
        scores: dict[str, float] = {}
        i = 0
        for name in names:
            n = len(INTENTS[name])
            scores[name] = float(max(sims[i:i + n]))
            i += n
        return Intent(scores, "embeddings")
    text = " " + re.sub(r"\s+", " ", question.lower()) + " "
    return Intent({name: 1.0 if any(k in text for k in words) else 0.0 for name, words in _KEYWORDS.items()},
                  "keywords")
