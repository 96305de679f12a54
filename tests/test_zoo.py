"""The offline model zoo: idempotent builds, checksums, rebuild of corrupt entries, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmagent import hookimpl
from mmagent.plugin_manager import get_plugins
from mmagent.zoo import MANIFEST, ModelSpec, ModelUnavailableError, Zoo, get_zoo

BUILDS: list[str] = []


def build_tiny(folder: Path, report) -> None:
    BUILDS.append(folder.name)
    report.step("writing", 0.5)
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (folder / "sub").mkdir()
    (folder / "sub" / "config.json").write_text('{"dim": 4}')


def build_failing(folder: Path, report) -> None:
    (folder / "half.bin").write_bytes(b"x")
    raise RuntimeError("source checkpoint is damaged")


TINY = ModelSpec("tiny", "llm", "a tiny test model", "generated in the test", build_tiny)


@pytest.fixture(autouse=True)
def _clear():
    BUILDS.clear()


@pytest.fixture
def zoo(tmp_path):
    z = Zoo(tmp_path / "models")
    z.add(TINY)
    z.add(ModelSpec("failing", "asr", "", "nowhere", build_failing))
    z.add(ModelSpec("absent", "tts", "", "PyPI some-voice", build_tiny, available=lambda: False,
                    install_hint="pip install some-voice"))
    return z


def test_prepare_is_idempotent_and_writes_a_manifest(zoo):
    assert zoo.status("tiny") == "missing"
    folder = zoo.prepare("tiny")
    assert zoo.prepare("tiny") == folder
    assert len(BUILDS) == 1
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["files"]) == {"weights.bin", "sub/config.json"}
    assert zoo.status("tiny", verify=True) == "ready"


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corrupt_entry_is_detected_and_rebuilt(zoo, damage):
    folder = zoo.prepare("tiny")
    weights = folder / "weights.bin"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[7] ^= 0xFF
        weights.write_bytes(bytes(data))  # same size: only the checksum catches it
    elif damage == "delete":
        weights.unlink()
    else:
        (folder / MANIFEST).write_text("{not json")
    assert zoo.status("tiny", verify=True) == "corrupt"
    zoo.prepare("tiny")
    assert len(BUILDS) == 2
    assert zoo.status("tiny", verify=True) == "ready"


def test_partial_build_leaves_nothing_behind(zoo):
    with pytest.raises(ModelUnavailableError, match="building model 'failing' failed: RuntimeError: source"):
        zoo.prepare("failing")
    assert zoo.status("failing") == "missing"
    assert list(zoo.root.iterdir()) == []


def test_unavailable_and_unknown_models_are_clear_errors(zoo):
    assert zoo.status("absent") == "unavailable"
    with pytest.raises(ModelUnavailableError, match="PyPI some-voice is not installed. pip install some-voice"):
        zoo.prepare("absent")
    with pytest.raises(ModelUnavailableError, match="no zoo model named 'nope'"):
        zoo.prepare("nope")


def test_ensure_builds_on_first_use_only(zoo):
    assert zoo.ensure("tiny") == zoo.path("tiny")
    zoo.ensure("tiny")
    assert len(BUILDS) == 1


def test_hook_register_models(monkeypatch, home):
    monkeypatch.setenv("MMAGENT_LOAD_PLUGINS", "")

    class ZooPlugin:
        @hookimpl
        def register_models(self, register):
            register(TINY)
            register(TINY)  # a duplicate is reported, not fatal

    info = get_plugins().add(ZooPlugin(), "zoo-plugin")
    zoo = get_zoo()
    assert zoo.root == home / "models"
    assert zoo.specs["tiny"] is TINY
    assert info.provides == ["model tiny"]
    assert info.status == "error" and "already registered" in info.errors[0]
    assert zoo.ensure("tiny").is_dir()


def test_models_cli_lists_and_prepares(tmp_path):
    """A plugin on the path registers a model; the CLI lists, prepares (with progress) and re-lists it."""
    site = tmp_path / "site"
    (site / "zoo_demo-0.1.dist-info").mkdir(parents=True)
    (site / "zoo_demo-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-demo\nVersion: 0.1\n")
    (site / "zoo_demo-0.1.dist-info" / "entry_points.txt").write_text("[mmagent]\nzoo_demo = zoo_demo\n")
    (site / "zoo_demo.py").write_text(
        "from mmagent import hookimpl\nfrom mmagent.zoo import ModelSpec\n"
        "def build(folder, report):\n    report.step('writing', 0.5)\n    (folder / 'w.bin').write_bytes(b'abc')\n"
        "@hookimpl\ndef register_models(register):\n"
        "    register(ModelSpec('demo-model', 'llm', 'demo', 'generated', build))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "MMAGENT_LOAD_PLUGINS": "zoo_demo"}
    mm = str(Path(sys.executable).with_name("mmagent"))

    def run(*args):
        return subprocess.run([mm, *args], capture_output=True, text=True, env=env, timeout=60)

    before = {m["name"]: m for m in json.loads(run("models", "list", "--json").stdout)}
    assert before["demo-model"]["status"] == "missing"
    result = run("models", "prepare", "demo-model")
    assert result.returncode == 0, result.stderr
    assert "demo-model: ready" in result.stdout
    after = {m["name"]: m for m in json.loads(run("models", "list", "--json", "--verify").stdout)}
    assert after["demo-model"]["status"] == "ready"
    assert (Path(after["demo-model"]["path"]) / "w.bin").read_bytes() == b"abc"
    bad = run("models", "prepare", "nope")
    assert bad.returncode == 1 and bad.stderr.startswith("Error: no zoo model named 'nope' (known: ")
    assert "demo-model" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
