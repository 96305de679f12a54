"""`mmagent eval --engine ray`: the items of one pipeline sharded over a Ray cluster, giving the
same results.jsonl rows as the local engine (plus `"worker": N`; timings differ, order may too).

    for row in ray_rows("adapter", suite, metric, items, batch_size=4, workers=2): ...

- **Cluster.** A Ray already initialised in this process is used as it is; otherwise `ray.init()`
  starts a local cluster (or joins `address`, e.g. "auto" or "10.0.0.5:6379" on a cluster node),
  and this call shuts down what it started when it ends.
- **Workers.** N = `workers` or the cluster's CPU count, at most one per item. Each worker is one
  Ray actor that builds its `Evaluator` once, so each loads the models once (models are cached per
  process), seeds itself, and reports its own peak RSS in `peak_rss_mb`. Actors are spread over
  the nodes and ask for CPUs/N each (and GPUs/N, up to one, when the cluster has GPUs).
- **Work.** Items go out in chunks of max(batch_size, 4) from one queue: a worker that finishes a
  chunk gets the next, so fast workers do more. Rows come back, and are yielded, chunk by chunk.
- **Environment.** Workers get the driver's MMAGENT_*, HF_*, TRANSFORMERS_*, HUGGINGFACE_* and
  XDG_CONFIG_HOME variables (a runtime_env), and run in the driver's working directory when it
  exists there, so they read the same configuration and find the same models.
- **Media on other nodes.** Items hold absolute paths that may not exist on another node: each
  chunk's media bytes travel with it through the object store, and a worker that lacks a path
  writes the bytes under its own temp dir (same file name) and uses that copy. A `FILE.py:graph`
  pipeline's file travels the same way (a file alone: its sibling modules do not).
- **Failures.** A worker that dies (crash, OOM kill, lost node) loses its chunk in flight: the
  other workers finish the queue, then `BackendError("ray worker N died: ...")` is raised, and
  `--resume` redoes the lost items. An error inside an item is that item's row, as locally.
  Ctrl-C kills the workers and re-raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import BackendError, InputError, one_line
from .core import EvalItem, Metric, Suite

#: Environment variables (prefixes) the workers get from the driver.
ENV_PREFIXES = ("MMAGENT_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_")
ENV_NAMES = ("XDG_CONFIG_HOME",)
#: Seconds the workers may take to start (scheduled, imported, Evaluator built).
START_TIMEOUT_S = 600.0
INSTALL_HINT = "pip install 'mmagent[eval]'"


def worker_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables passed to the workers."""
    environ = dict(os.environ if environ is None else environ)
    return {k: v for k, v in environ.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}


def chunk_size(batch_size: int) -> int:
    """Items per chunk: one batch, and at least 4 (fewer round trips)."""
    return max(int(batch_size), 4)


def media_paths(items: Sequence[EvalItem]) -> list[str]:
    """The media files of `items`, each once."""
    return list(dict.fromkeys(p for item in items for p in (*item.images, *item.audio)))


def pack_media(items: Sequence[EvalItem]) -> dict[str, bytes]:
    """path -> bytes for each media file of `items` readable here (one that is not stays
    unshipped, and the item fails on the worker as it would locally)."""
    packed: dict[str, bytes] = {}
    for path in media_paths(items):
        try:
            packed[path] = Path(path).read_bytes()
        except OSError:
            continue
    return packed


def _file_part(pipeline: str) -> str | None:
    """The FILE of a `FILE.py:attr` pipeline (None for registered names and `module:attr`)."""
    where, sep, _ = pipeline.rpartition(":")
    if sep and where and (where.endswith(".py") or os.sep in where):
        return where
    return None


class RayWorker:
    """One worker (a Ray actor): one Evaluator, built once; runs chunks of items."""

    def __init__(self, index: int, pipeline: str, suite: Suite, metric: Metric, *, batch_size: int, seed: int,
                 extra_metrics: Sequence[Metric], cwd: str | None, graph_file: bytes | None = None,
                 settings: Any = None):
        from .runner import PeakMemory

        self.index = index
        self.failure: str | None = None
        self._media_dir: Path | None = None  # made when something has to be written here
        self.copies: dict[str, str] = {}
        self.memory = PeakMemory().__enter__()
        try:
            self.evaluator = self._build(pipeline, suite, metric, batch_size, seed, extra_metrics, cwd, graph_file,
                                         settings)
        except Exception as exc:  # noqa: BLE001 - reported by ready(), raised on the driver
            self.failure = one_line(f"{type(exc).__name__}: {exc}", 500)

    def _build(self, pipeline, suite, metric, batch_size, seed, extra_metrics, cwd, graph_file, settings):
        from .runner import Evaluator, seed_everything

        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        seed_everything(seed)
        target = pipeline
        where = _file_part(pipeline)
        if where is not None and not Path(where).expanduser().is_file() and graph_file is not None:
            copy = self.media_dir / "graph" / Path(where).name
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(graph_file)
            target = f"{copy}:{pipeline.rpartition(':')[2]}"
        evaluator = Evaluator(target, suite, metric, batch_size=batch_size, seed=seed, settings=settings,
                              extra_metrics=extra_metrics)
        evaluator.pipeline = pipeline  # rows name the pipeline as the user did, wherever its file is here
        return evaluator

    @property
    def media_dir(self) -> Path:
        if self._media_dir is None:
            self._media_dir = Path(tempfile.mkdtemp(prefix=f"mmagent-ray-{self.index}-"))
        return self._media_dir

    def ready(self) -> dict[str, Any]:
        return {"index": self.index, "failure": self.failure, "pid": os.getpid()}

    def close(self) -> None:
        """Remove the copies this worker wrote; stop sampling memory."""
        self.memory.__exit__(None, None, None)
        if self._media_dir is not None:
            shutil.rmtree(self._media_dir, ignore_errors=True)
            self._media_dir = None
        self.copies.clear()

    def _local_path(self, path: str, box: list) -> str:
        """`path` if it exists here, else a copy of the shipped bytes under this worker's temp dir."""
        if path in self.copies:
            return self.copies[path]
        if os.path.exists(path):
            return path
        if not box:
            return path
        if box[0] is not None and not isinstance(box[0], dict):
            import ray

            box[0] = ray.get(box[0])  # fetched once per chunk, only when something is missing
        data = (box[0] or {}).get(path)
        if data is None:
            return path
        folder = self.media_dir / hashlib.sha1(str(Path(path).parent).encode()).hexdigest()[:12]
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / Path(path).name
        copy.write_bytes(data)
        self.copies[path] = str(copy)
        return str(copy)

    def localize(self, item: EvalItem, box: list) -> EvalItem:
        images = [self._local_path(p, box) for p in item.images]
        audio = [self._local_path(p, box) for p in item.audio]
        if images == item.images and audio == item.audio:
            return item
        return replace(item, images=images, audio=audio)

    def run(self, items: list[EvalItem], media: list) -> list[dict[str, Any]]:
        """The rows of `items`. `media` is [ObjectRef of {path: bytes}] (boxed, so Ray does not
        fetch it unless a path is missing here)."""
        if self.failure:
            raise BackendError(f"ray worker {self.index} could not start: {self.failure}")
        box = list(media)
        local = [self.localize(item, box) for item in items]
        rows = []
        for row in self.evaluator.rows(local):
            row["peak_rss_mb"] = self.memory.current()
            gpu = self.memory.gpu_mb()
            if gpu is not None:
                row["peak_gpu_mb"] = gpu
            row["worker"] = self.index
            rows.append(row)
        return rows


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError(f"--engine ray needs Ray: {INSTALL_HINT}") from None
    return ray


def _start(ray, address: str | None, env: dict[str, str]) -> bool:
    """Initialise Ray unless it is; True when this call did."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, runtime_env={"env_vars": env}, ignore_reinit_error=True, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise InputError(f"--address {address}: cannot connect to a Ray cluster ({one_line(str(exc), 300)})") from None
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise BackendError(f"cannot start {where}: {type(exc).__name__}: {one_line(str(exc), 300)}") from exc
    return True


@contextlib.contextmanager
def ray_cluster(address: str | None = None):
    """Ray initialised for the body (a local cluster unless `address`); shut down after only if
    this started it. `run_eval` holds one for all its pipelines, so they share one cluster start."""
    ray = _import_ray()
    started = _start(ray, address, worker_env())
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _share(total: float, n: int) -> float:
    """Each of n actors' share of `total` (at most 1), rounded down to Ray's 1e-4 resolution."""
    return min(1.0, math.floor(total / n * 10_000) / 10_000)


def ray_rows(pipeline: str, suite: Suite, metric: Metric, items: Sequence[EvalItem], *, batch_size: int = 1,
             seed: int = 0, address: str | None = None, workers: int | None = None,
             extra_metrics: Sequence[Metric] = (), settings: Any = None) -> Iterator[dict[str, Any]]:
    """The results rows of `items` through `pipeline`, computed by Ray workers, yielded chunk by
    chunk as they finish (see the module doc)."""
    if workers is not None and workers < 1:
        raise InputError("--workers must be at least 1")
    ray = _import_ray()
    from ray.exceptions import GetTimeoutError, RayActorError

    items = list(items)
    if not items:
        return
    env = worker_env()
    started = _start(ray, address, env)
    actors: list[Any] = []
    try:
        resources = ray.cluster_resources()
        n = max(1, min(workers or int(resources.get("CPU", 1)) or 1, len(items)))
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        options: dict[str, Any] = {"num_cpus": _share(cpus, n) if cpus else 0, "scheduling_strategy": "SPREAD",
                                   "runtime_env": {"env_vars": env}, "max_restarts": 0}
        if gpus:
            options["num_gpus"] = _share(gpus, n)
        where = _file_part(pipeline)
        graph_file = Path(where).expanduser().read_bytes() if where and Path(where).expanduser().is_file() else None
        remote = ray.remote(RayWorker).options(**options)
        actors = [remote.remote(i, pipeline, suite, metric, batch_size=batch_size, seed=seed,
                                extra_metrics=list(extra_metrics), cwd=os.getcwd(), graph_file=graph_file,
                                settings=settings) for i in range(n)]
        try:
            states = ray.get([a.ready.remote() for a in actors], timeout=START_TIMEOUT_S)
        except GetTimeoutError:
            raise BackendError(f"{n} ray workers did not start within {START_TIMEOUT_S:.0f} s (does the cluster have "
                               f"{options['num_cpus']} free CPU for each?)") from None
        except RayActorError as exc:
            raise BackendError(f"a ray worker died while starting: {one_line(str(exc), 500)}") from None
        for state in states:
            if state["failure"]:
                raise BackendError(f"ray worker {state['index']} could not start: {state['failure']}")

        size = chunk_size(batch_size)
        queue = deque(items[k:k + size] for k in range(0, len(items), size))
        pending: dict[Any, tuple[int, list[EvalItem]]] = {}
        dead: list[tuple[int, int, str]] = []  # (worker, items lost, why)

        def submit(index: int) -> None:
            chunk = queue.popleft()
            media = ray.put(pack_media(chunk))
            pending[actors[index].run.remote(chunk, [media])] = (index, chunk)

        for index in range(n):
            if queue:
                submit(index)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index, chunk = pending.pop(done[0])
            try:
                rows = ray.get(done[0])
            except RayActorError as exc:
                dead.append((index, len(chunk), one_line(str(exc), 500)))
                if len(dead) == n:  # nobody left: what is still queued is lost too
                    dead[-1] = (index, len(chunk) + sum(len(c) for c in queue), dead[-1][2])
                    queue.clear()
                continue
            yield from rows
            if queue:
                submit(index)
        alive = [a for k, a in enumerate(actors) if k not in {d[0] for d in dead}]
        if alive:  # idle now, so this is quick
            ray.wait([a.close.remote() for a in alive], num_returns=len(alive), timeout=30)
        if dead:
            lost = sum(d[1] for d in dead)
            raise BackendError("; ".join(f"ray worker {w} died: {why}" for w, _, why in dead)
                               + f" ({lost} item(s) not done: --resume redoes them)")
    finally:
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if started:
            ray.shutdown()
