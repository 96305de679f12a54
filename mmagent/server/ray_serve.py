"""`mmagent serve --ray`: the same OpenAI-compatible app (`create_app`), deployed with Ray Serve as
N replicas behind Ray Serve's HTTP proxy.

    server = start(replicas=2)                 # a local Ray (ray.init()), Serve on 127.0.0.1:8000
    ...                                        # http://127.0.0.1:8000/v1, as `mmagent serve`
    server.stop()

- **Replicas build their own app.** Each replica (`MMAgentReplica`, one Ray actor: a process)
  calls `create_app` in its constructor, with a Toolbox of its own; backends load lazily on first
  use, so each replica loads each model once and replicas share nothing (no model, no cache, no
  batcher, no concurrency slots). What travels to a replica is small and picklable: the driver's
  `Settings`, the `create_app` options, the environment variables backends read (a runtime_env),
  and an optional toolbox factory. `serve.ingress` is given `ReplicaASGI`, an empty forwarder to
  the app the replica built (Ray 2.40's ingress takes no app builder; this works with both).
- **Cluster.** `address=None` starts a local Ray (`ray.init()`) that `stop()` shuts down; "auto"
  joins the cluster this machine is a node of, "ray://HEAD:10001" one reached through Ray Client.
  On a cluster, `stop()` deletes this application and leaves Ray (and Serve's proxies) running.
- **Resources.** Each replica asks Ray for min(1, cluster CPUs / N) CPUs and, when the cluster has
  GPUs, min(1, GPUs / N) GPUs, so N replicas always fit the cluster (`num_cpus`/`num_gpus` to choose).
- **Routing.** Serve sends each replica at most `max_concurrency` requests at once and queues the
  rest at the proxy until a replica has room (the app's own 429 is then a last resort). Every
  response carries `x-mmagent-replica`: the replica that answered (Serve's replica id, which
  also names the replica's log file).

Importing this module imports the server package (FastAPI), not Ray: Ray is imported by `start`.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import ConfigError, one_line

#: Serve's application (and deployment) name.
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


def build_replica_app(settings: Any, factory: str | ToolboxFactory | None, app_options: Mapping[str, Any],
                      replica: str):
    """The app one replica serves: `create_app` with a toolbox of its own (from `factory`, else the
    configured backends, loaded on first use), every response tagged with the replica's id."""
    from . import create_app

    make = resolve_factory(factory)
    toolbox = make(settings) if make is not None else None
    app = create_app(settings, toolbox, **app_options)
    app.add_middleware(ReplicaHeader, replica=replica)
    return app


#: In a replica's process (one replica per Ray actor): the app its constructor built.
_replica_app = None


class ReplicaASGI:
    """The ASGI app handed to `serve.ingress`: empty and picklable, it forwards to the app this
    process's replica built (`MMAgentReplica`), so no app (and no toolbox) travels from the driver."""

    async def __call__(self, scope, receive, send):
        if _replica_app is None:  # pragma: no cover - Serve constructs the replica first
            raise RuntimeError("this replica has no app (was MMAgentReplica constructed?)")
        await _replica_app(scope, receive, send)

    def __getattr__(self, name: str):
        """What Serve reads off the app (`routes` for its metrics, `add_exception_handler`) is the built app's."""
        if name.startswith("__") or _replica_app is None:
            raise AttributeError(name)
        return getattr(_replica_app, name)


class MMAgentReplica:
    """One Ray Serve replica: builds its app once, in its own process (errors here are the
    deployment's, as Serve reports them)."""

    def __init__(self, settings: Any, factory: str | ToolboxFactory | None, app_options: Mapping[str, Any]):
        global _replica_app
        from ray import serve

        replica = serve.get_replica_context().replica_tag
        _replica_app = build_replica_app(settings, factory, app_options, replica)
        log.info("replica %s ready (pid %d)", replica, os.getpid())


@dataclass
class RayServer:
    """A running deployment: `url` (the API root), `replicas`, and `stop()`."""

    url: str
    replicas: int
    address: str | None
    resources: dict[str, float] = field(default_factory=dict)
    #: What the caller should tell the user (e.g. the proxy's port is not the one asked for).
    warnings: list[str] = field(default_factory=list)
    #: `start` called `ray.init` (it disconnects in `stop`); `_owns_ray`: and that started a local Ray.
    _connected: bool = False
    _owns_ray: bool = False
    _stopped: bool = False

    def stop(self) -> None:
        """Delete the application; disconnect from Ray if `start` connected (which shuts down a
        local Ray it started, Serve with it)."""
        if self._stopped:
            return
        self._stopped = True
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        try:
            serve.delete(APP_NAME)  # replicas finish the requests they hold first
        finally:
            if self._connected:
                ray.shutdown()  # a local Ray `start` started goes, Serve's controller and proxies with it


def _import_serve():
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise ConfigError(f"mmagent serve --ray needs Ray Serve: {INSTALL_HINT} ({one_line(str(exc), 200)})") from None
    return ray, serve


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when nothing listens at a host:port address (Ray itself retries for
    half a minute or more). "auto", "local" and None are left to Ray."""
    if address in (None, "", "auto", "local"):
        return
    client = address.startswith("ray://")
    target = address.removeprefix("ray://").split("/", 1)[0]
    host, sep, port = target.rpartition(":")
    if not sep or "]" in port:  # no port given (or a bare IPv6 address)
        host, port = target, "10001" if client else "6379"
    host = host.strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--ray-address {address}: cannot connect to a Ray cluster: nothing answers at "
                          f"{host}:{port} ({one_line(str(exc), 200)})") from None


def _connect(ray, address: str | None, log_to_driver: bool, log_level: int, local_ray: Mapping[str, Any]) -> bool:
    """Initialise Ray unless it is; True when this call did."""
    if ray.is_initialized():
        return False
    check_reachable(address)
    try:
        local = {"include_dashboard": False, **local_ray} if address in (None, "local") else {}
        ray.init(address=address, log_to_driver=log_to_driver, logging_level=max(log_level, logging.WARNING), **local)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, gRPC errors, ...: one line
        where = f"--ray-address {address}: cannot connect to a Ray cluster" if address else "cannot start a local Ray"
        raise ConfigError(f"{where} ({type(exc).__name__}: {one_line(str(exc), 300)})") from None
    return True


def start(*, replicas: int = 1, address: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          settings: Any = None, toolbox_factory: str | ToolboxFactory | None = None, api_key: str | None = None,
          max_concurrency: int = 4, num_cpus: float | None = None, num_gpus: float | None = None,
          log_to_driver: bool = True, log_level: str = "info", local_ray: Mapping[str, Any] | None = None,
          **app_options: Any) -> RayServer:
    """Deploy `create_app(settings, toolbox_factory(settings), api_key=..., max_concurrency=...,
    **app_options)` as `replicas` Ray Serve replicas behind Serve's proxy on host:port, and wait
    until every replica is up. `app_options`: the rest of `create_app`'s options (max_body_bytes,
    max_batch_size, batch_wait_s, timeout_s). `log_level`: Serve's here and in the replicas' logs
    (`log_to_driver`: replicas' output shown here too). `local_ray`: `ray.init` options (num_cpus,
    object_store_memory, ...) when this call starts a local Ray. See the module doc."""
    if replicas < 1:
        raise ConfigError("--replicas must be at least 1")
    if max_concurrency < 1:
        raise ConfigError("--max-concurrency must be at least 1")
    if not 1 <= port <= 65535:
        raise ConfigError("--port must be 1-65535 with --ray (Ray Serve's proxy needs a fixed port)")
    if settings is None:
        from ..config import load_settings

        settings = load_settings()
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray, serve = _import_serve()
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise ConfigError(f"unknown log level '{one_line(log_level, 20)}'")
    logging.getLogger("ray.serve").setLevel(level)
    connected = _connect(ray, address, log_to_driver, level, local_ray or {})
    owns = connected and address in (None, "local")
    ran = False  # serve.run was called (a failed deployment on a cluster is deleted, nothing else)
    try:
        resources = replica_resources(ray.cluster_resources(), replicas, num_cpus, num_gpus)
        options = {**resources, "runtime_env": {"env_vars": replica_env(settings)}}
        deployment = serve.deployment(serve.ingress(ReplicaASGI())(MMAgentReplica), name=APP_NAME,
                                      num_replicas=replicas, max_ongoing_requests=max_concurrency,
                                      ray_actor_options=options)
        bound = deployment.bind(settings, toolbox_factory, {"api_key": api_key, "max_concurrency": max_concurrency,
                                                            **app_options})
        logging_config = {"log_level": logging.getLevelName(level)}
        serve.start(http_options={"host": host, "port": port}, logging_config=logging_config)
        ran = True
        serve.run(bound, name=APP_NAME, route_prefix="/", blocking=False, logging_config=logging_config)
        actual_host, actual_port = _proxy_address(host, port)
    except ConfigError:
        _quiet_stop(ray, serve, connected, owns, ran)
        raise
    except Exception as exc:  # noqa: BLE001 - a replica that failed to start, a port in use, ...: one line
        why = _deployment_failure(serve) or f"{type(exc).__name__}: {exc}"
        _quiet_stop(ray, serve, connected, owns, ran)
        raise ConfigError(f"Ray Serve could not deploy mmagent: {one_line(why, 400)}") from None
    notes = []
    if (actual_host, actual_port) != (host, port):
        notes.append(f"Ray Serve already runs on this cluster with its proxy on {actual_host}:{actual_port}; "
                     f"--host/--port do not apply until Serve restarts (`serve shutdown`)")
    shown = "127.0.0.1" if actual_host in ("0.0.0.0", "::") else actual_host
    return RayServer(url=f"http://{shown}:{actual_port}/v1", replicas=replicas, address=address,
                     resources=resources, warnings=notes, _connected=connected, _owns_ray=owns)


def _proxy_address(host: str, port: int) -> tuple[str, int]:
    """Where Serve's proxies really listen: `serve.start` keeps the options of a Serve that was
    already running on the cluster. (Read through Serve's client, a private API: when that fails,
    the options asked for.)"""
    try:
        from ray.serve.context import _get_global_client

        config = _get_global_client().http_config
        return str(config.host), int(config.port)
    except Exception:  # noqa: BLE001 - a Ray without that internal: assume ours applied
        return host, port


def _deployment_failure(serve) -> str | None:
    """The last line of what Serve says about the failed deployment (a replica's exception)."""
    try:
        message = serve.status().applications[APP_NAME].deployments[APP_NAME].message
    except Exception:  # noqa: BLE001 - no status to read: the caller's exception says enough
        return None
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def _quiet_stop(ray, serve, connected: bool, owns: bool, ran: bool) -> None:
    """After a failed deployment: shut down the local Ray `start` started (Serve with it), or
    delete the failed application on a cluster; disconnect if `start` connected."""
    try:
        if owns:
            serve.shutdown()
        elif ran:
            serve.delete(APP_NAME)
    except Exception:  # noqa: BLE001 - already failing; the first error is the one to report
        pass
    if connected:
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
