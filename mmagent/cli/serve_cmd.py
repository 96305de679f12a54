"""`mmagent serve`: the OpenAI-compatible server (FastAPI + uvicorn, imported only when it runs)."""

from __future__ import annotations

import ipaddress
import os

import click

API_KEY_ENV = "MMAGENT_API_KEY"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--api-key", metavar="KEY", help=f"Require `Authorization: Bearer KEY` (default: ${API_KEY_ENV}, "
              "else no key).")
@click.option("--max-concurrency", type=click.IntRange(1), default=4, show_default=True, metavar="N",
              help="Requests run at once; more are answered 429 with Retry-After.")
@click.option("--max-body-bytes", type=click.IntRange(1), default=64 * 1024 * 1024, show_default=True, metavar="N",
              help="Largest request body; a bigger one is answered 413.")
@click.option("--max-batch-size", type=click.IntRange(1), default=8, show_default=True, metavar="N",
              help="Concurrent calls to one LLM/VLM/ASR/embedder backend answered by one batched call "
              "(1: no batching).")
@click.option("--batch-wait-ms", type=click.FloatRange(0), default=20.0, show_default=True, metavar="MS",
              help="How long a call waits for others to join its batch.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, min_open=True), default=300.0, show_default=True,
              metavar="SECONDS", help="Per-request limit; past it the request is answered 504.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="uvicorn's log level (Ray Serve's with --ray).")
@click.option("--ray", "use_ray", is_flag=True,
              help="Serve with Ray Serve: --replicas copies of the app, each loading its own models.")
@click.option("--ray-address", metavar="ADDR", help="With --ray: the Ray cluster to join ('auto' on a node of it, "
              "'ray://HEAD:10001'; default: $RAY_ADDRESS, else a local Ray).")
@click.option("--replicas", type=click.IntRange(1), default=1, show_default=True, metavar="N",
              help="With --ray: replicas of the app (--max-concurrency applies to each).")
def serve(host, port, api_key, max_concurrency, max_body_bytes, max_batch_size, batch_wait_ms, timeout_s,
          log_level, use_ray, ray_address, replicas) -> None:
    """Serve every pipeline over the OpenAI API (chat completions, transcriptions, models).

    \b
      mmagent serve                                  # http://127.0.0.1:8000/v1
      MMAGENT_API_KEY=secret mmagent serve --host 0.0.0.0
      curl http://127.0.0.1:8000/v1/models
      mmagent serve --ray --replicas 2               # Ray Serve; --ray-address auto on a cluster

    The model name is the pipeline (auto, tools, adapter, ...). Local paths and file:// are
    refused; images and audio come as data URLs (http(s) URLs only with [fetch] enabled).
    See docs/serving.md.
    """
    from ..errors import ConfigError

    try:
        import uvicorn

        from ..server import create_app
    except ImportError as exc:
        raise ConfigError(f"mmagent serve needs the serve extra: pip install 'mmagent[serve]' ({exc})") from None
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    if not _is_loopback(host) and not api_key:
        click.echo(f"warning: listening on {host} without an API key (--api-key or ${API_KEY_ENV})", err=True)
    if use_ray:
        return _serve_with_ray(host=host, port=port, api_key=api_key, max_concurrency=max_concurrency,
                               max_body_bytes=max_body_bytes, max_batch_size=max_batch_size,
                               batch_wait_s=batch_wait_ms / 1000, timeout_s=timeout_s, log_level=log_level,
                               address=ray_address, replicas=replicas)
    if ray_address or replicas != 1:
        raise ConfigError("--ray-address and --replicas need --ray")
    app = create_app(api_key=api_key, max_concurrency=max_concurrency, max_body_bytes=max_body_bytes,
                     max_batch_size=max_batch_size, batch_wait_s=batch_wait_ms / 1000, timeout_s=timeout_s)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)


def _serve_with_ray(*, host: str, port: int, address: str | None, replicas: int, **options) -> None:
    """`mmagent serve --ray`: deploy (mmagent/server/ray_serve.py), say where, serve until Ctrl-C."""
    from ..server.ray_serve import serve_forever, start

    server = start(host=host, port=port, address=address, replicas=replicas, **options)

    def ready(server) -> None:
        for note in server.warnings:
            click.echo(f"warning: {note}", err=True)
        where = f"the Ray cluster at {server.address}" if server.address else "a local Ray"
        click.echo(f"mmagent: {server.replicas} replica(s) on {where}, serving {server.url} (Ctrl-C to stop)",
                   err=True)

    serve_forever(server, on_ready=ready)


COMMANDS = [serve]
