"""What an evaluation is made of, as data: items, metrics and suites, and their registries.

    EvalItem   one question (or task) with its media files and its reference answer(s)
    Metric     prediction + item -> {"score": 0..1, ...}; `correct` when score >= threshold
    Suite      where items come from (a generator, a JSONL file, a `datasets` source), the prompt
               template, the metric, the field that types items for breakdowns

Suites are declared like lmms-eval's tasks: a YAML file (`mmagent eval --suite my.yaml`) or a
`Suite(...)` registered by a plugin through the `register_suites` hook; metrics likewise through
`register_metrics`. mmagent's own suites and metrics are registered by `mmagent.eval` itself.
Nothing here imports a heavy library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import InputError, PluginError
from ..registry import NamedRegistry


@dataclass
class EvalItem:
    """One thing to evaluate. Media paths are absolute (resolved against the data file)."""

    id: str
    question: str = ""
    #: Accepted answers (any one is right), or a dict of fields (extraction).
    answer: list[str] | dict[str, Any] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    audio: list[str] = field(default_factory=list)
    type: str | None = None
    #: Facts the answer needs (strings): telephone-loss attribution looks for them in what the tool
    #: chain's tools wrote (caption, OCR, transcript). Empty: the answers themselves are looked for.
    evidence: list[str] = field(default_factory=list)
    #: Anything else the suite's metric or prompt needs.
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {"id": self.id, "question": self.question, "answer": self.answer, "images": self.images,
                "audio": self.audio, "type": self.type}
        if self.evidence:
            data["evidence"] = self.evidence
        if self.meta:
            data["meta"] = self.meta
        return data


#: metric(prediction, item) -> {"score": float in [0, 1], other named numbers...}
MetricFn = Callable[[str, EvalItem], dict[str, float]]


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    fn: MetricFn = field(compare=False, repr=False)
    #: An item counts as answered correctly (McNemar, attribution) when score >= threshold.
    threshold: float = 1.0

    def __call__(self, prediction: str, item: EvalItem) -> dict[str, float]:
        out = self.fn(prediction, item)
        if not isinstance(out, dict) or "score" not in out:
            raise PluginError(f"metric '{self.name}' must return a dict with a 'score'")
        return out


#: generator(limit, seed, media_dir) -> items; it writes the media it makes under media_dir.
Generator = Callable[[int | None, int, Path], Iterable[EvalItem]]


@dataclass(frozen=True)
class Suite:
    """A named evaluation. `source` is one of: a generator (a callable or "module:function"), a
    JSONL path ("file.jsonl"), a local `datasets` folder, or "hf:ORG/NAME[:split]" (a Hugging Face
    dataset, read with `mapping`)."""

    name: str
    description: str
    source: str | Generator = field(compare=False)
    metric: str = "exact_match"
    #: str.format template over the item's fields (question, plus meta keys).
    prompt: str = "{question}"
    #: The pipelines a run compares when none are named.
    pipelines: tuple[str, ...] = ("tools", "adapter")
    #: Items a run takes when no --limit is given (None: all).
    limit: int | None = None
    #: Source field names for dataset sources (question/answer/image/audio/type/id -> column).
    mapping: dict[str, str] = field(default_factory=dict, compare=False)
    #: Metrics reported beside the main one.
    extra_metrics: tuple[str, ...] = ()
    #: Most tokens a pipeline's answer may use for this suite's prompts (None: the graph's default).
    max_tokens: int | None = None
    #: Where a YAML suite was read from (relative sources resolve against its folder).
    origin: str | None = None

    def prompt_for(self, item: EvalItem) -> str:
        try:
            return self.prompt.format(**{**item.meta, "question": item.question, "type": item.type or ""})
        except (KeyError, IndexError, ValueError) as exc:
            raise InputError(f"suite '{self.name}': prompt template {self.prompt!r} cannot be filled for item "
                             f"{item.id}: {exc}") from exc

    def generator(self) -> Generator | None:
        """The generator function when the source is one."""
        if callable(self.source):
            return self.source
        if ":" in self.source and not self.source.startswith("hf:") and not Path(self.source).exists():
            module, _, attr = self.source.partition(":")
            try:
                return getattr(import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise PluginError(f"suite '{self.name}': cannot load generator {self.source} ({exc})") from exc
        return None


class SuiteRegistry(NamedRegistry):
    kind, cls, cls_path, hook = "suite", Suite, "mmagent.eval.Suite", "register_suites"


class MetricRegistry(NamedRegistry):
    kind, cls, cls_path, hook = "metric", Metric, "mmagent.eval.Metric", "register_metrics"


def get_suites() -> SuiteRegistry:
    from ..runtime import get_runtime

    return get_runtime().suites


def get_metrics() -> MetricRegistry:
    from ..runtime import get_runtime

    return get_runtime().metrics
