"""What each route is good at, measured: `Competence` holds, per route and question type, the
accuracy and per-item latency that `mmagent eval` measured, and a small learned classifier that
tells a new request's question type from its MiniLM question embedding and cheap image features.

A request's expected accuracy on route R is `sum_t P(t | request) * accuracy(R, t)`, its expected
latency likewise; the policy (`mmagent.routing.policy`) chooses among the routes that can serve.
This is RouteLLM's idea — learn the routing from comparison data — on per-type eval results: the
same items answered by every route are exactly that comparison data.

    competence = fit(["mmagent-eval/scenes", "mmagent-eval/ocr"], embedder)   # mmagent route fit
    competence.save("router.json"); Competence.load("router.json")

The file is JSON (weights as lists): safe to load, readable, diffable.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from .features import FLAGS, IMAGE_FEATURES, image_features, request_vector

VERSION = 1
#: The competence shipped for the offline defaults (fitted with `mmagent route fit`; docs/router.md).
SHIPPED = Path(__file__).with_name("default.json")
#: Where `mmagent route fit` writes by default (under MMAGENT_HOME); used when present.
FITTED_NAME = "router.json"
#: Laplace smoothing of measured accuracies: (correct + 1) / (n + 2); a type seen twice is no certainty.
PRIOR_COUNT = 1


@dataclass
class Competence:
    #: route -> {"n", "accuracy", "latency_s", "types": {type: {"n", "correct", "accuracy", "latency_s"}}}
    routes: dict[str, dict[str, Any]]
    #: The question types the classifier tells apart (eval `type`, else the suite's name).
    classes: list[str]
    #: (len(classes), n_features) and (len(classes),): multinomial logistic regression; None with one class.
    coef: np.ndarray | None
    intercept: np.ndarray | None
    #: Feature standardisation (mean, scale) learned at fit time.
    mean: np.ndarray
    scale: np.ndarray
    #: The embedder the questions were embedded with: {"backend", "model", "dim"}.
    embedder: dict[str, Any]
    #: The eval folders it was fitted from, with their suites and row counts; the fit's own checks.
    sources: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    #: The images the routes were measured on: {"mean", "scale", "points" (standardised image
    #: features), "threshold"}; a request whose images are farther than `threshold` from every one
    #: is outside what any eval measured (None: no images in the fit).
    domain: dict[str, Any] | None = None
    _folded: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return int(self.embedder.get("dim", 0))

    # -- prediction --------------------------------------------------------------------------------

    def type_probabilities(self, vector: np.ndarray) -> dict[str, float]:
        """P(question type | request) for a `request_vector` (the classes' probabilities)."""
        if self.coef is None or self.intercept is None:
            return {self.classes[0]: 1.0} if self.classes else {}
        if self._folded is None:  # the standardisation folded into the weights, once
            weights = self.coef / self.scale
            self._folded = (weights.astype(np.float32), (self.intercept - weights @ self.mean).astype(np.float32))
        weights, bias = self._folded
        logits = (weights @ np.asarray(vector, dtype=np.float32) + bias).astype(np.float64)
        logits -= logits.max()
        p = np.exp(logits)
        p /= p.sum()
        return {c: float(v) for c, v in zip(self.classes, p)}

    def expected(self, route: str, types: dict[str, float] | None) -> tuple[float, float | None] | None:
        """(expected accuracy, expected seconds) of `route` for a request with type probabilities
        `types` (None: the route's overall figures); None when no eval measured the route."""
        table = self.routes.get(route)
        if table is None:
            return None
        if not types:
            return table["accuracy"], table.get("latency_s")
        accuracy, latency, weight = 0.0, 0.0, 0.0
        for name, p in types.items():
            row = table["types"].get(name)
            acc = row["accuracy"] if row else table["accuracy"]
            lat = (row or {}).get("latency_s") or table.get("latency_s")
            accuracy += p * acc
            if lat is not None:
                latency += p * lat
                weight += p
        return accuracy, (latency / weight if weight else None)

    def domain_distance(self, images: list[np.ndarray]) -> float | None:
        """How far the request's images (mean features) are from the nearest image any route was
        measured on (RMS over standardised features); None without images or a domain."""
        if not images or not self.domain:
            return None
        if not isinstance(self.domain.get("_points"), np.ndarray):
            self.domain["_points"] = np.asarray(self.domain["points"], dtype=np.float32)
            self.domain["_mean"] = np.asarray(self.domain["mean"], dtype=np.float32)
            self.domain["_scale"] = np.asarray(self.domain["scale"], dtype=np.float32)
        x = images[0] if len(images) == 1 else np.stack(images).mean(axis=0)
        z = (x - self.domain["_mean"]) / self.domain["_scale"]
        return float(np.sqrt(((self.domain["_points"] - z) ** 2).mean(axis=1)).min())

    def vector(self, question: np.ndarray | None, images: list[np.ndarray], *, has_audio: bool,
               spoken: bool) -> np.ndarray:
        return request_vector(question, images, dim=self.dim, has_audio=has_audio, spoken=spoken)

    def accepts_embedder(self, backend: str, model: str | None, dim: int) -> str | None:
        """None when questions embedded by this embedder can be classified, else why not."""
        if dim != self.dim:
            return f"the competence file was fitted with {self.dim}-d embeddings, the embedder gives {dim}"
        if self.embedder.get("model") and model and str(model) != str(self.embedder["model"]):
            return f"fitted with embedder {self.embedder['model']}, not {model}"
        return None

    # -- files ------------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "embedder": self.embedder, "features": {
                    "question": f"{self.dim}-d embedding", "image": list(IMAGE_FEATURES), "flags": list(FLAGS)},
                "routes": self.routes, "classes": self.classes,
                "classifier": None if self.coef is None else {
                    "coef": np.round(self.coef, 6).tolist(), "intercept": np.round(self.intercept, 6).tolist(),
                    "mean": np.round(self.mean, 6).tolist(), "scale": np.round(self.scale, 6).tolist()},
                "sources": self.sources, "checks": self.checks,
                "domain": None if not self.domain else {k: v for k, v in self.domain.items() if not k.startswith("_")}}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (a temporary file, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Competence:
        """Read a competence file; InputError with one line when it is not one."""
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"no competence file at {path} (make one with mmagent route fit)") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{path} is not a competence file: {exc}") from None
        try:
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
            classifier = data.get("classifier")
            n = data["embedder"]["dim"] + len(IMAGE_FEATURES) + len(FLAGS)
            coef = intercept = None
            mean, scale = np.zeros(n), np.ones(n)
            if classifier:
                coef, intercept = np.asarray(classifier["coef"], float), np.asarray(classifier["intercept"], float)
                mean, scale = np.asarray(classifier["mean"], float), np.asarray(classifier["scale"], float)
                if coef.shape != (len(data["classes"]), n) or mean.shape != (n,) or scale.shape != (n,):
                    raise ValueError("classifier shapes do not match the features")
            for name, table in data["routes"].items():
                float(table["accuracy"])
                dict(table["types"])
            return cls(routes=data["routes"], classes=list(data["classes"]), coef=coef, intercept=intercept,
                       mean=mean, scale=scale, embedder=dict(data["embedder"]), sources=list(data.get("sources", [])),
                       checks=dict(data.get("checks", {})), domain=_domain(data.get("domain")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{path} is not a competence file: {exc}") from None


def competence_path(settings: Any) -> tuple[Path | None, str]:
    """(the competence file the router uses, where that choice comes from): `[router] competence`,
    else MMAGENT_HOME/router.json (what `mmagent route fit` wrote), else the shipped one."""
    if settings.router.competence:
        return Path(settings.router.competence).expanduser(), "router.competence"
    fitted = settings.home_path / FITTED_NAME
    if fitted.is_file():
        return fitted, f"fitted ({fitted})"
    return (SHIPPED, "shipped") if SHIPPED.is_file() else (None, "none")


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> Competence:
    return Competence.load(path)


def load_competence(settings: Any) -> Competence | None:
    """The competence the router uses (see `competence_path`); None when there is none. A
    configured file that is missing or broken is an error, with one line."""
    path, origin = competence_path(settings)
    if path is None:
        return None
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        raise ConfigError(f"router.competence: no file {path} (make one with mmagent route fit)") from None
    return _load_cached(str(path), mtime)


# -- fitting ---------------------------------------------------------------------------------------------


@dataclass
class _Item:
    question: str
    images: list[str]
    audio: list[str]
    type: str


def fit(eval_dirs: Sequence[str | os.PathLike[str]], embedder: Any, *, exclude: Iterable[str] = ("auto",),
        log: Any = None) -> Competence:
    """Fit a `Competence` from `mmagent eval` output folders. `embedder` has `embed(texts) -> (n, d)`
    (the router's embedder at run time must be the same model). Rows with errors are left out;
    pipelines in `exclude` (the router itself) and graph files (`FILE.py:graph`) are not routes."""
    from ..eval.results import RESULTS, read_rows

    if not eval_dirs:
        raise InputError("route fit needs at least one eval folder (--from DIR)")
    excluded = set(exclude)
    items: dict[tuple[str, str], _Item] = {}
    rows_by_route: dict[str, list[tuple[tuple[str, str], dict]]] = defaultdict(list)
    sources = []
    for folder in eval_dirs:
        folder = Path(folder).expanduser()
        rows = read_rows(folder / RESULTS)
        if not rows:
            raise InputError(f"{folder}: no {RESULTS} (run mmagent eval --out {folder} first)")
        used = 0
        for row in rows:
            pipeline = str(row["pipeline"])
            if pipeline in excluded or ":" in pipeline or row.get("error"):
                continue
            if "images" not in row:
                raise InputError(f"{folder}/{RESULTS}: rows name no media (made by an older mmagent eval); "
                                 "run the eval again to fit from it")
            key = (str(folder), str(row["item_id"]))
            if key not in items:
                items[key] = _Item(str(row.get("question") or row.get("prompt") or ""),
                                   [_media_path(p, folder) for p in row.get("images") or []],
                                   [_media_path(p, folder) for p in row.get("audio") or []],
                                   str(row.get("type") or row.get("suite") or "other"))
            rows_by_route[pipeline].append((key, row))
            used += 1
        suites = sorted({str(r.get("suite")) for r in rows if r.get("suite")})
        sources.append({"dir": str(folder), "suites": suites, "rows": used})
    if not rows_by_route:
        raise InputError("no usable rows in " + ", ".join(map(str, eval_dirs)) + " (all failed, or only auto)")

    start = time.perf_counter()
    keys = list(items)
    questions = [items[k].question for k in keys]
    vectors = np.asarray(embedder.embed(questions), dtype=np.float32)
    dim = int(vectors.shape[1])
    features = []
    cache: dict[str, np.ndarray] = {}
    for k, q in zip(keys, vectors):
        item = items[k]
        images = []
        for path in item.images:
            if path not in cache:
                try:
                    cache[path] = image_features(Path(path).read_bytes())
                except (OSError, ValueError) as exc:
                    raise InputError(f"cannot read {path} (named by {k[0]}): {exc}") from None
            images.append(cache[path])
        features.append(request_vector(q, images, dim=dim, has_audio=bool(item.audio),
                                       spoken=bool(item.audio) and not item.question.strip()))
    X = np.stack(features).astype(np.float64)
    labels = [items[k].type for k in keys]
    classes = sorted(set(labels))
    mean, scale = X.mean(axis=0), X.std(axis=0)
    scale[scale < 1e-6] = 1.0
    coef = intercept = None
    checks: dict[str, Any] = {"items": len(keys)}
    if len(classes) > 1:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import cross_val_score

        Z = (X - mean) / scale
        model = LogisticRegression(C=1.0, max_iter=5000)
        model.fit(Z, labels)
        coef, intercept = model.coef_, model.intercept_
        if len(model.classes_) == 2:  # one logit for two classes: as softmax logits, [0, w.x + b]
            coef, intercept = np.vstack([np.zeros_like(coef[0]), coef[0]]), np.array([0.0, intercept[0]])
        order = [list(model.classes_).index(c) for c in classes]
        coef, intercept = coef[order], intercept[order]
        smallest = min(labels.count(c) for c in classes)
        if smallest >= 2:
            folds = min(5, smallest)
            scores = cross_val_score(LogisticRegression(C=1.0, max_iter=5000), Z, labels, cv=folds)
            checks["type_accuracy_cv"] = round(float(scores.mean()), 4)
            checks["folds"] = folds
    checks["seconds"] = round(time.perf_counter() - start, 2)

    routes = {name: _table(entries, items) for name, entries in sorted(rows_by_route.items())}
    domain = _fit_domain(X[:, dim:dim + len(IMAGE_FEATURES)][X[:, dim + len(IMAGE_FEATURES)] > 0])
    info = {"backend": getattr(embedder, "name", None), "model": getattr(embedder, "model_id", None), "dim": dim}
    if log:
        log(f"fitted on {len(keys)} items, {len(classes)} question types, routes: {', '.join(routes)}")
    return Competence(routes=routes, classes=classes, coef=coef, intercept=intercept, mean=mean, scale=scale,
                      embedder=info, sources=sources, checks=checks, domain=domain)


#: A request is outside the measured domain beyond this many times the 99th percentile of the
#: fitted images' distances to their nearest neighbour (and never inside 0.5).
DOMAIN_SLACK = 1.5


def _fit_domain(features: np.ndarray) -> dict[str, Any] | None:
    """The measured images' standardised features and an out-of-domain threshold."""
    unique = np.unique(np.round(features, 6), axis=0) if len(features) else features
    if len(unique) < 2:
        return None
    mean, scale = unique.mean(axis=0), np.maximum(unique.std(axis=0), 0.02)
    points = (unique - mean) / scale
    nearest = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).mean(axis=-1))
    np.fill_diagonal(nearest, np.inf)
    threshold = max(DOMAIN_SLACK * float(np.quantile(nearest.min(axis=1), 0.99)), 0.5)
    return {"mean": np.round(mean, 6).tolist(), "scale": np.round(scale, 6).tolist(),
            "points": np.round(points, 4).tolist(), "threshold": round(threshold, 4)}


def _domain(data: Any) -> dict[str, Any] | None:
    if not data:
        return None
    n = len(IMAGE_FEATURES)
    points = np.asarray(data["points"], dtype=float)
    if points.ndim != 2 or points.shape[1] != n or len(data["mean"]) != n or len(data["scale"]) != n:
        raise ValueError("domain shapes do not match the image features")
    return {"mean": list(data["mean"]), "scale": list(data["scale"]), "points": points.tolist(),
            "threshold": float(data["threshold"])}


def _media_path(path: str, folder: Path) -> str:
    """A row's media path; one that moved with its eval folder is found under FOLDER/media."""
    p = Path(path)
    if p.is_absolute() and p.exists():
        return str(p)
    for candidate in (folder / p, folder / "media" / p.name):
        if candidate.exists():
            return str(candidate)
    return str(p)


def _per_item_seconds(row: dict) -> float | None:
    seconds = row.get("seconds")
    if not isinstance(seconds, (int, float)):
        return None
    # Items of a batched run share the backends' calls: their wall time is not one item's cost.
    return float(seconds) / max(1, int(row.get("batch_size") or 1))


def _table(entries: list[tuple[tuple[str, str], dict]], items: dict[tuple[str, str], _Item]) -> dict[str, Any]:
    by_type: dict[str, list[dict]] = defaultdict(list)
    for key, row in entries:
        by_type[items[key].type].append(row)

    def summary(rows: list[dict]) -> dict[str, Any]:
        correct = sum(1 for r in rows if r.get("correct"))
        seconds = [s for s in (_per_item_seconds(r) for r in rows) if s is not None]
        return {"n": len(rows), "correct": correct,
                "accuracy": round((correct + PRIOR_COUNT) / (len(rows) + 2 * PRIOR_COUNT), 4),
                "measured": round(correct / len(rows), 4) if rows else None,
                "latency_s": round(statistics.median(seconds), 4) if seconds else None}

    table = summary([row for _, row in entries])
    table["types"] = {name: summary(rows) for name, rows in sorted(by_type.items())}
    return table
