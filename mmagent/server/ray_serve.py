"""`mmagent serve --ray`: the same OpenAI-compatible app (`create_app`), deployed with Ray Serve as
N replicas behind Ray Serve's HTTP proxy.

    server = start(replicas=2)                 # a local Ray (ray.init()), Serve on 127.0.0.1:8000
    ...                                        # http://127.0.0.1:8000/v1, as `mmagent serve`
    server.stop()

- **Replicas build their own app.** Each replica (one Ray actor) calls `create_app` itself when it
  starts, with a Toolbox of its own; backends load lazily on first use, so each replica loads each
  model once and replicas share nothing (no model, no cache, no concurrency slots). What travels
  to a replica is small and picklable: the driver's `Settings`, the `create_app` options, the
  environment variables backends read, and an optional toolbox factory.
- **Cluster.** `address=None` starts a local Ray (`ray.init()`) that `stop()` shuts down; "auto"
  joins the cluster this machine is a node of, "ray://HEAD:10001" one reached through Ray Client.
  On a cluster, `stop()` deletes this application and leaves Ray (and Serve's proxies) running.
- **Resources.** Each replica asks Ray for min(1, cluster CPUs / N) CPUs and, when the cluster has
  GPUs, min(1, GPUs / N) GPUs, so N replicas always fit the cluster (`num_cpus`/`num_gpus` to choose).
- **Routing.** Serve sends each replica at most `max_concurrency` requests at once and queues the
  rest at the proxy until a replica has room (the app's own 429 is then a last resort). Every
  response carries `x-mmagent-replica`: the replica that answered (Serve's replica id, as in
  `serve status` and the replica's log file name).

Importing this module imports nothing heavy; Ray is imported when `start` runs.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import ConfigError, one_line

#: Serve's application (and deployment) name; `serve status` shows it.
APP_NAME = "mmagent"
#: The response header naming the replica that answered.
REPLICA_HEADER = "x-mmagent-replica"
INSTALL_HINT = "pip install 'mmagent[serve]'"
#: Environment variables (prefixes) the replicas get from the driver: mmagent's own settings, the
#: model hubs' caches and tokens, and the OpenAI backend's endpoint and key.
ENV_PREFIXES = ("MMAGENT_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "OPENAI_")
ENV_NAMES = ("XDG_CONFIG_HOME", "XDG_CACHE_HOME")

log = logging.getLogger("mmagent.server.ray")

ToolboxFactory = Callable[[Any], Any]


def replica_env(settings: Any = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables passed to the replicas: those of `ENV_PREFIXES`/`ENV_NAMES`, and
    the variable each configured role reads its API key from (`options.api_key_env`)."""
    environ = os.environ if environ is None else environ
    names = set(ENV_NAMES)
    for role in (getattr(settings, "roles", None) or {}).values():
        key_env = (role.options or {}).get("api_key_env")
        if isinstance(key_env, str) and key_env:
            names.add(key_env)
    return {k: v for k, v in environ.items() if k.startswith(ENV_PREFIXES) or k in names}


def resolve_factory(factory: str | ToolboxFactory | None) -> ToolboxFactory | None:
    """A toolbox factory given as "package.module:function" (imported where it runs) or a callable."""
    if factory is None or callable(factory):
        return factory
    module, sep, attr = str(factory).partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"toolbox factory '{one_line(str(factory), 100)}' must look like 'package.module:function'")
    try:
        target = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import toolbox factory '{factory}': {one_line(str(exc), 200)}") from None
    if not callable(target):
        raise ConfigError(f"toolbox factory '{factory}' is not callable")
    return target


def _share(total: float, n: int) -> float:
    """Each of n replicas' share of `total` (at most 1), rounded down to Ray's 1e-4 resolution."""
    return min(1.0, math.floor(total / n * 10_000) / 10_000)


def replica_resources(cluster: Mapping[str, float], replicas: int, num_cpus: float | None = None,
                      num_gpus: float | None = None) -> dict[str, float]:
    """`ray_actor_options` resources of one replica (see the module doc)."""
    cpus = _share(float(cluster.get("CPU", 1)), replicas) if num_cpus is None else float(num_cpus)
    gpus = (_share(float(cluster.get("GPU", 0)), replicas) if cluster.get("GPU") else 0.0) if num_gpus is None \
        else float(num_gpus)
    return {"num_cpus": cpus, "num_gpus": gpus}


class ReplicaHeader:
    """ASGI middleware: adds `x-mmagent-replica: ID` to every HTTP response."""

    def __init__(self, app, replica: str):
        self.app, self.value = app, replica.encode("latin-1", "replace")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def tagged(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (REPLICA_HEADER.encode(), self.value)]}
            await send(message)

        return await self.app(scope, receive, tagged)


def _app_builder(settings: Any, factory: str | ToolboxFactory | None, app_options: dict[str, Any]):
    """The zero-argument builder Serve calls once in each replica (pickled by value: a closure)."""

    def build_app():
        from ray import serve

        from . import create_app

        try:
            replica = serve.get_replica_context().replica_tag
        except Exception:  # noqa: BLE001 - outside a replica (a test calling the builder): no id
            replica = f"pid-{os.getpid()}"
        make = resolve_factory(factory)
        toolbox = make(settings) if make is not None else None
        app = create_app(settings, toolbox, **app_options)
        app.add_middleware(ReplicaHeader, replica=replica)
        log.info("replica %s ready (pid %d)", replica, os.getpid())
        return app

    return build_app


@dataclass
class RayServer:
    """A running deployment: `url` (the API root), `replicas`, and `stop()`."""

    url: str
    replicas: int
    address: str | None
    resources: dict[str, float] = field(default_factory=dict)
    _started_ray: bool = False
    _stopped: bool = False

    def stop(self) -> None:
        """Delete the application; on a local Ray this call started, shut Serve and Ray down."""
        if self._stopped:
            return
        self._stopped = True
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        try:
            if self._started_ray:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        finally:
            if self._started_ray:
                ray.shutdown()


def _import_serve():
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise ConfigError(f"mmagent serve --ray needs Ray Serve: {INSTALL_HINT} ({one_line(str(exc), 200)})") from None
    return ray, serve


def _connect(ray, address: str | None, log_to_driver: bool) -> bool:
    """Initialise Ray unless it is; True when this call started it."""
    if ray.is_initialized():
        return False
    try:
        local = {"include_dashboard": False} if address is None else {}
        ray.init(address=address, log_to_driver=log_to_driver, logging_level=logging.WARNING, **local)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, gRPC errors, ...: one line
        where = f"--ray-address {address}: cannot connect to a Ray cluster" if address else "cannot start a local Ray"
        raise ConfigError(f"{where} ({type(exc).__name__}: {one_line(str(exc), 300)})") from None
    return address is None


def start(*, replicas: int = 1, address: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          settings: Any = None, toolbox_factory: str | ToolboxFactory | None = None, api_key: str | None = None,
          max_concurrency: int = 4, num_cpus: float | None = None, num_gpus: float | None = None,
          log_to_driver: bool = True, **app_options: Any) -> RayServer:
    """Deploy `create_app(settings, toolbox_factory(settings), api_key=..., max_concurrency=...,
    **app_options)` as `replicas` Ray Serve replicas behind Serve's proxy on host:port, and wait
    until every replica is up. `app_options`: the rest of `create_app`'s options (max_body_bytes,
    max_batch_size, batch_wait_s, timeout_s). See the module doc."""
    if replicas < 1:
        raise ConfigError("--replicas must be at least 1")
    if max_concurrency < 1:
        raise ConfigError("--max-concurrency must be at least 1")
    if not 1 <= port <= 65535:
        raise ConfigError("--port must be 1-65535 with --ray (Ray Serve's proxy needs a fixed port)")
    if settings is None:
        from ..config import load_settings

        settings = load_settings()
    ray, serve = _import_serve()
    started = _connect(ray, address, log_to_driver)
    try:
        resources = replica_resources(ray.cluster_resources(), replicas, num_cpus, num_gpus)
        options = {**resources, "runtime_env": {"env_vars": replica_env(settings)}}
        builder = _app_builder(settings, toolbox_factory, {"api_key": api_key, "max_concurrency": max_concurrency,
                                                           **app_options})
        deployment = serve.deployment(serve.ingress(builder)(), name=APP_NAME, num_replicas=replicas,
                                      max_ongoing_requests=max_concurrency, ray_actor_options=options)
        serve.start(http_options={"host": host, "port": port})
        serve.run(deployment.bind(), name=APP_NAME, route_prefix="/", blocking=False)
    except ConfigError:
        _quiet_stop(ray, serve, started)
        raise
    except Exception as exc:  # noqa: BLE001 - a replica that failed to start, a port in use, ...: one line
        _quiet_stop(ray, serve, started)
        raise ConfigError(f"Ray Serve could not deploy mmagent: {type(exc).__name__}: {one_line(str(exc), 400)}") \
            from None
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return RayServer(url=f"http://{shown}:{port}/v1", replicas=replicas, address=address, resources=resources,
                     _started_ray=started)


def _quiet_stop(ray, serve, started: bool) -> None:
    if not started:
        return
    try:
        serve.shutdown()
    except Exception:  # noqa: BLE001 - already failing; the first error is the one to report
        pass
    ray.shutdown()


def serve_forever(server: RayServer, on_ready: Callable[[RayServer], None] | None = None) -> None:
    """Block until Ctrl-C or SIGTERM, then stop `server`."""
    done = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        if on_ready is not None:
            on_ready(server)
        while not done.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        server.stop()
