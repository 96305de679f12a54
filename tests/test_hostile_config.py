"""Hostile configuration, prompts, model cache and training logs (issue 11, items 4, 5, 12, 13, 14).

Each test here failed on the code before the change it covers."""

from __future__ import annotations

import pytest

from mmagent.config import load_settings
from mmagent.errors import ConfigError


# -- 13: configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("var, value", [
    ("MMAGENT_LIMITS_MAX_AUDIO_SECONDS", "nan"),
    ("MMAGENT_LIMITS_MAX_AUDIO_SECONDS", "inf"),
    ("MMAGENT_LIMITS_MAX_VIDEO_SECONDS", "-inf"),
    ("MMAGENT_FETCH_TOTAL_TIMEOUT", "nan"),
    ("MMAGENT_FETCH_READ_TIMEOUT", "Infinity"),
    ("MMAGENT_ROUTER_MARGIN", "nan"),
    ("MMAGENT_FETCH_CONNECT_TIMEOUT", "0"),
    ("MMAGENT_LIMITS_MAX_PROMPT_CHARS", "-1"),
])
def test_non_finite_and_non_positive_limits_are_refused_from_the_environment(monkeypatch, tmp_path, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        load_settings(cwd=tmp_path)


@pytest.mark.parametrize("toml", [
    "[limits]\nmax_audio_seconds = nan\n",
    "[limits]\nmax_audio_seconds = inf\n",
    "[limits]\nmax_bytes = inf\n",  # int(inf) raised OverflowError: an internal error
    "[limits]\nmax_pixels = nan\n",
    "[fetch]\ntotal_timeout = -inf\n",
    "[fetch]\nread_timeout = nan\n",
])
def test_non_finite_limits_are_refused_from_a_file(tmp_path, toml):
    (tmp_path / "mmagent.toml").write_text(toml)
    with pytest.raises(ConfigError, match="finite|integer|positive") as info:
        load_settings(cwd=tmp_path)
    assert str(tmp_path / "mmagent.toml") in str(info.value)


@pytest.mark.parametrize("toml, key", [
    ("[limits]\nmax_bytez = 5\n", "limits.max_bytez"),
    ("[fetch]\ntimeout = 5\n", "fetch.timeout"),
    ("[paths]\nallowed_root = ['/srv']\n", "paths.allowed_root"),
])
def test_unknown_keys_name_their_file(tmp_path, toml, key):
    (tmp_path / "mmagent.toml").write_text(toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        load_settings(cwd=tmp_path)
    assert str(tmp_path / "mmagent.toml") in str(info.value)


def test_unknown_override_names_its_source(tmp_path):
    with pytest.raises(ConfigError, match=r"limits\.nope \(argument\)"):
        load_settings(cwd=tmp_path, overrides={"limits.nope": 3})


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_mmagent_home_is_an_error_not_the_default(monkeypatch, tmp_path, value):
    monkeypatch.setenv("MMAGENT_HOME", value)
    with pytest.raises(ConfigError, match="MMAGENT_HOME"):
        load_settings(cwd=tmp_path)


@pytest.mark.parametrize("field, value", [
    ("device", "tpu9"), ("device", "cuda:x"), ("device", "CUDA"), ("device", "gpu"), ("device", "cpu;rm"),
    ("dtype", "float64"), ("dtype", "fp8"), ("dtype", "bfloat"),
])
def test_unknown_devices_and_dtypes_are_refused_at_configuration_time(tmp_path, field, value):
    (tmp_path / "mmagent.toml").write_text(f"[roles.llm]\n{field} = '{value}'\n")
    with pytest.raises(ConfigError, match=f"unknown {field}") as info:
        load_settings(cwd=tmp_path)
    assert str(tmp_path / "mmagent.toml") in str(info.value)


def test_unknown_device_from_the_environment_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("MMAGENT_ASR_DEVICE", "tpu9")
    with pytest.raises(ConfigError, match="MMAGENT_ASR_DEVICE"):
        load_settings(cwd=tmp_path)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:3", "mps", "xpu:1"])
@pytest.mark.parametrize("dtype", ["auto", "float32", "fp32", "float16", "fp16", "half", "bfloat16", "BF16", "int8"])
def test_known_devices_and_dtypes_are_accepted(monkeypatch, tmp_path, device, dtype):
    monkeypatch.setenv("MMAGENT_VLM_DEVICE", device)
    monkeypatch.setenv("MMAGENT_VLM_DTYPE", dtype)
    s = load_settings(cwd=tmp_path)
    assert (s.role("vlm").device, s.role("vlm").dtype) == (device, dtype)


def test_config_dtypes_are_those_the_backends_resolve():
    from mmagent.backends.devices import _DTYPES
    from mmagent.config import config_dtypes

    assert set(_DTYPES) <= set(config_dtypes())


def test_a_utf8_bom_in_mmagent_toml_is_accepted(tmp_path):
    (tmp_path / "mmagent.toml").write_bytes(b"\xef\xbb\xbf[limits]\nmax_pixels = 1234\n")
    s = load_settings(cwd=tmp_path)
    assert s.limits.max_pixels == 1234


@pytest.mark.parametrize("toml", [
    "[paths]\nallowed_roots = ['']\n",
    "[paths]\nallowed_roots = ['/srv', '  ']\n",
    "[fetch]\nallowed_hosts = ['']\n",
])
def test_an_empty_allowed_root_is_refused(tmp_path, toml):
    (tmp_path / "mmagent.toml").write_text(toml)
    with pytest.raises(ConfigError, match="empty string") as info:
        load_settings(cwd=tmp_path)
    assert str(tmp_path / "mmagent.toml") in str(info.value)
