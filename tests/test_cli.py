"""The command line as a user runs it: subprocesses of the installed `mmagent` script."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MMAGENT = str(Path(sys.executable).with_name("mmagent"))
HEAVY = ("torch", "transformers", "diffusers", "whisper", "langgraph", "langchain_core", "PIL", "numpy")


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([MMAGENT, *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=120)


def png_file(path: Path, size=(40, 30), color="blue") -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("plugins", "backends", "config", "inspect"):
        assert command in result.stdout


def test_help_and_import_pull_in_no_heavy_library():
    code = (
        "import sys, mmagent, mmagent.tools, mmagent.runtime, mmagent.cli as c\n"
        "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY=", result.stdout


def test_version():
    result = run("--version")
    assert result.returncode == 0 and "mmagent" in result.stdout


def test_config_json_reports_sources(tmp_path):
    (tmp_path / "mmagent.toml").write_text('[roles.llm]\nmodel = "my/model"\n')
    result = run("config", "--json", cwd=tmp_path, env={"MMAGENT_LIMITS_MAX_PIXELS": "1234"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["files"] == [str(tmp_path / "mmagent.toml")]
    assert data["values"]["roles.llm.model"] == {"value": "my/model", "source": str(tmp_path / "mmagent.toml")}
    assert data["values"]["limits.max_pixels"] == {"value": 1234, "source": "env MMAGENT_LIMITS_MAX_PIXELS"}
    assert "roles.asr.model" not in data["values"]  # unconfigured roles hidden unless --all
    full = json.loads(run("config", "--json", "--all", cwd=tmp_path).stdout)
    assert full["values"]["roles.asr.model"] == {"value": None, "source": "default"}


def test_config_table_for_people(tmp_path):
    result = run("config", cwd=tmp_path)
    assert result.returncode == 0
    assert "limits.max_bytes" in result.stdout and "default" in result.stdout


def test_invalid_config_is_one_line_for_every_command(tmp_path):
    (tmp_path / "mmagent.toml").write_text("[limits]\nmax_bytes = 'huge'\n")
    for args in (("config",), ("inspect", "x.png")):
        assert_one_line_error(run(*args, cwd=tmp_path), 1, "limits.max_bytes", "must be an integer")


def test_inspect_describes_valid_media(tmp_path):
    image = png_file(tmp_path / "photo.jpg")  # wrong extension: bytes decide
    result = run("inspect", "--json", str(image))
    assert result.returncode == 0, result.stderr
    [info] = json.loads(result.stdout)
    assert (info["kind"], info["mime_type"], info["width"], info["height"]) == ("image", "image/png", 40, 30)
    table = run("inspect", str(image))
    assert "image/png" in table.stdout and "40x30" in table.stdout


def test_inspect_stores_nothing(tmp_path, home):
    run("inspect", str(png_file(tmp_path / "a.png")))
    assert not (home / "media").exists()


@pytest.mark.parametrize(
    "make, args, fragments",
    [
        (lambda d: d / "missing.png", (), ("no such file",)),
        (lambda d: write(d / "empty.png", b""), (), ("empty",)),
        (lambda d: write(d / "notes.png", b"hello"), (), ("not an image, audio or video",)),
        (lambda d: png_file(d / "a.png"), ("--expect", "audio"), ("expected an audio",)),
        (lambda d: "data:image/png;base64,%%%", (), ("invalid base64",)),
        (lambda d: "file:///etc/passwd", (), ("'file:' sources are not allowed",)),
        (lambda d: "http://169.254.169.254/latest/meta-data", (), ("fetching URLs is disabled",)),
        (lambda d: d, (), ("not a regular file",)),
    ],
    ids=["missing", "empty", "text", "wrong-kind", "bad-base64", "file-url", "url-disabled", "directory"],
)
def test_bad_input_is_one_line_exit_2(tmp_path, make, args, fragments):
    source = make(tmp_path)
    assert_one_line_error(run("inspect", *args, str(source)), 2, *fragments)


def test_pixel_bomb_is_refused_by_configured_cap(tmp_path):
    image = png_file(tmp_path / "big.png", size=(200, 200))
    result = run("inspect", str(image), env={"MMAGENT_LIMITS_MAX_PIXELS": "10000"})
    assert_one_line_error(result, 2, "40,000 pixels", "10,000 pixel limit")


def test_ssrf_url_refused_even_when_fetching_is_on():
    result = run("inspect", "http://127.0.0.1:9/x.png", env={"MMAGENT_FETCH_ENABLED": "1"})
    assert_one_line_error(result, 2, "non-public address")


def test_unknown_command_and_option_exit_2_without_traceback():
    result = run("frobnicate")
    assert result.returncode == 2 and "No such command" in result.stderr and "Traceback" not in result.stderr
    result = run("inspect", "--expect", "smell", "x")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_plugins_and_backends_json_are_valid_json():
    for args in (("plugins", "--json"), ("backends", "--json")):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        assert isinstance(json.loads(result.stdout), list)
