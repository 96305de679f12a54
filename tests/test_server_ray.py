"""`mmagent serve --ray`: the same app deployed with Ray Serve as two replicas on a local Ray
(2 CPUs, loopback only), driven by the official openai SDK with zero-cost backends. Each replica
builds its own toolbox, once; requests spread over both; `x-mmagent-replica` names the replica
that answered. One deployment serves the module's tests (`start` starts that Ray, `stop` shuts it
down); last, the command joins that running cluster by address. Before it: what needs no Ray."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402

from mmagent.config import load_settings  # noqa: E402
from mmagent.errors import ConfigError  # noqa: E402
from mmagent.server.ray_serve import APP_NAME, REPLICA_HEADER, check_reachable, replica_resources, start  # noqa: E402
from mmagent.testing import ScriptedLLM, ScriptedVLM, scene_png, scripted_toolbox  # noqa: E402

LLM_REPLY, VLM_REPLY, KEY = "the answer is four", "a red disc on grey", "ray-secret"
MMAGENT = str(Path(sys.executable).with_name("mmagent"))


def make_toolbox(settings):
    """The replicas' toolbox factory (runs in each replica): leaves a file per build under the
    shipped settings' home, so the test can count builds."""
    builds = Path(settings.home) / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    (builds / f"{os.getpid()}-{time.monotonic_ns()}").touch()
    return scripted_toolbox(llm=ScriptedLLM(LLM_REPLY), vlm=ScriptedVLM(VLM_REPLY))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- without Ray running: resources and the command line --------------------------------------------------


def test_each_replica_asks_for_its_share_of_the_cluster():
    assert replica_resources({"CPU": 2.0}, 2) == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert replica_resources({"CPU": 2.0}, 3) == {"num_cpus": 0.6666, "num_gpus": 0.0}
    assert replica_resources({"CPU": 64.0, "GPU": 2.0}, 4) == {"num_cpus": 1.0, "num_gpus": 0.5}
    assert replica_resources({"CPU": 64.0, "GPU": 8.0}, 2, num_cpus=4) == {"num_cpus": 4.0, "num_gpus": 1.0}


def test_an_address_where_nothing_listens_fails_fast():
    for address in (None, "auto", "local"):
        check_reachable(address)  # left to Ray
    for address in (f"127.0.0.1:{free_port()}", f"ray://127.0.0.1:{free_port()}", f"ray://[::1]:{free_port()}"):
        with pytest.raises(ConfigError, match="cannot connect to a Ray cluster: nothing answers at"):
            check_reachable(address, timeout=2)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([MMAGENT, "serve", *args], capture_output=True, text=True, env=env, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_unreachable_ray_address_is_one_line():
    started = time.monotonic()
    result = run_cli("--ray", "--ray-address", "ray://127.0.0.1:1", "--port", str(free_port()))
    assert_one_line_error(result, "--ray-address ray://127.0.0.1:1", "cannot connect")
    assert time.monotonic() - started < 60  # not Ray Client's half-minute of retries


def test_cli_ray_options_need_ray_and_a_fixed_port():
    assert_one_line_error(run_cli("--replicas", "2"), "need --ray")
    assert_one_line_error(run_cli("--ray", "--port", "0"), "--port")


# -- a live deployment: two replicas ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """Two replicas behind Serve's proxy on 127.0.0.1, on a local Ray that `start` starts (2 CPUs,
    a small object store) and `stop` shuts down; yields (server, settings)."""
    home = tmp_path_factory.mktemp("ray-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every Ray listener on 127.0.0.1
        mp.setenv("MMAGENT_HOME", str(home))
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("ray-xdg")))
        mp.delenv("RAY_ADDRESS", raising=False)
        settings = load_settings()
        # by value: the replicas cannot import this test module by name
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        server = None
        try:
            server = start(replicas=2, port=free_port(), settings=settings, toolbox_factory=make_toolbox,
                           api_key=KEY, max_concurrency=4, log_to_driver=False, log_level="warning",
                           local_ray={"num_cpus": 2, "object_store_memory": 80 * 1024 * 1024})
            assert server.resources == {"num_cpus": 1.0, "num_gpus": 0.0} and not server.warnings
            yield server, settings
            server.stop()
            assert not ray.is_initialized()  # the Ray it started is gone
        finally:
            if ray.is_initialized():  # a failure above: leave no Ray behind
                serve.shutdown()
                ray.shutdown()
            ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def client(deployed):
    server, _ = deployed
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=60)


def image_message(question: str) -> list[dict]:
    url = "data:image/png;base64," + base64.b64encode(scene_png(1)).decode()
    return [{"role": "user", "content": [{"type": "text", "text": question},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def test_models_through_the_proxy_name_the_replica(client):
    raw = client.models.with_raw_response.list()
    ids = [m.id for m in raw.parse().data]
    assert ids[0] == "auto" and {"tools", "adapter"} <= set(ids)
    replica = raw.headers[REPLICA_HEADER]
    # the header is Serve's replica id: a live replica actor has that name
    assert ray.get_actor(f"SERVE_REPLICA::{APP_NAME}#{APP_NAME}#{replica}", namespace="serve")


def test_chat_with_an_image(client):
    response = client.chat.completions.create(model="adapter", messages=image_message("What colour is the disc?"))
    completion = ChatCompletion.model_validate(response.model_dump())
    assert completion.object == "chat.completion" and completion.model == "adapter"
    assert completion.choices[0].message.content == VLM_REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert any(s.get("tool") == "vlm" for s in response.model_extra["mmagent"]["steps"])


def test_streaming_chat(client):
    chunks = list(client.chat.completions.create(model="tools", stream=True,
                                                 messages=[{"role": "user", "content": "Two plus two?"}]))
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk.model_dump())
    assert len(chunks) > 3  # a role chunk, words, the last chunk: streamed through the proxy, not buffered as one
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == LLM_REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["mmagent"]["pipeline"] == "tools"


def test_the_api_key_is_required(deployed):
    server, _ = deployed
    wrong = openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.models.list()
    assert caught.value.status_code == 401 and caught.value.body["code"] == "invalid_api_key"
    health = httpx.get(server.url.removesuffix("/v1") + "/health", timeout=30)
    assert health.json()["status"] == "ok" and health.headers[REPLICA_HEADER]


def test_requests_spread_over_both_replicas_each_built_once(deployed, client):
    server, settings = deployed

    def ask(i: int) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="tools", messages=[{"role": "user", "content": f"Question {i}: two plus two?"}])
        assert raw.parse().choices[0].message.content == LLM_REPLY
        return raw.headers[REPLICA_HEADER]

    seen: set[str] = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):  # concurrent rounds until both replicas answered (the first almost always does)
            seen |= set(pool.map(ask, range(16)))
            if len(seen) == 2:
                break
    assert len(seen) == 2, seen
    builds = list((Path(settings.home) / "builds").iterdir())
    assert len(builds) == 2, builds  # one toolbox per replica, whatever the number of requests
    assert len({b.name.split("-")[0] for b in builds}) == 2  # in two processes


def test_cli_joins_a_running_cluster_and_leaves_it_running(deployed):
    """Last (it replaces the deployment): `mmagent serve --ray --ray-address HOST:PORT` deploys on a
    cluster that already runs Serve (its proxy keeps its port: a warning says so), serves, and on
    Ctrl-C deletes its application but leaves the cluster up."""
    server, _ = deployed
    base = server.url.removesuffix("/v1")
    gcs = ray.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    other = free_port()
    proc = subprocess.Popen([MMAGENT, "serve", "--ray", "--ray-address", gcs, "--port", str(other), "--api-key",
                             "cli-key", "--log-level", "warning"], stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("serving http" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        said = "".join(lines)
        assert f"1 replica(s) on the Ray cluster at {gcs}, serving {server.url}" in said
        assert f"warning: Ray Serve already runs on this cluster with its proxy on 127.0.0.1:{base.rsplit(':', 1)[1]}" \
            in said and str(other) not in said.split("serving")[1]
        response = httpx.get(f"{server.url}/models", headers={"Authorization": "Bearer cli-key"}, timeout=30)
        assert response.status_code == 200 and response.headers[REPLICA_HEADER]  # the CLI's app, its key
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        reader.join(10)
    assert code == 0, "".join(lines)
    assert "Traceback" not in "".join(lines)
    assert ray.cluster_resources()["CPU"] == 2  # the cluster is still up
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.url}/models", timeout=10).status_code != 404:  # the application is gone
        assert time.monotonic() < deadline
        time.sleep(0.2)
