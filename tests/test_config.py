"""Configuration: layering, sources, environment overrides, and clear errors."""

from __future__ import annotations

import pytest

from mmagent.config import load_settings
from mmagent.errors import ConfigError


def test_defaults_and_sources(tmp_path):
    s = load_settings(cwd=tmp_path)
    assert s.limits.max_bytes == 50 * 1024 * 1024
    assert s.fetch.enabled is False
    assert s.sources["limits.max_bytes"] == "default"
    assert s.sources["home"] == "env MMAGENT_HOME"  # set by the test fixture


def test_project_file_then_environment_win_in_order(tmp_path, monkeypatch):
    (tmp_path / "mmagent.toml").write_text(
        """
        [limits]
        max_pixels = 1000
        max_audio_seconds = 60
        [roles.asr]
        backend = "whisper"
        model = "base"
        device = "cpu"
        [roles.asr.options]
        beam_size = 5
        """
    )
    monkeypatch.setenv("MMAGENT_ASR_MODEL", "/models/whisper-small")
    monkeypatch.setenv("MMAGENT_LIMITS_MAX_AUDIO_SECONDS", "90.5")
    s = load_settings(cwd=tmp_path)
    assert s.limits.max_pixels == 1000
    assert s.sources["limits.max_pixels"] == str(tmp_path / "mmagent.toml")
    assert s.limits.max_audio_seconds == 90.5
    assert s.sources["limits.max_audio_seconds"] == "env MMAGENT_LIMITS_MAX_AUDIO_SECONDS"
    asr = s.role("asr")
    assert (asr.backend, asr.model, asr.device, asr.dtype) == ("whisper", "/models/whisper-small", "cpu", "auto")
    assert asr.options == {"beam_size": 5}
    assert s.sources["roles.asr.model"] == "env MMAGENT_ASR_MODEL"


def test_user_config_is_lowest_and_explicit_file_highest(tmp_path, monkeypatch):
    from mmagent.config import user_config_file

    user = user_config_file()
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text("[fetch]\nenabled = true\nread_timeout = 3\n")
    (tmp_path / "mmagent.toml").write_text("[fetch]\nread_timeout = 4\n")
    explicit = tmp_path / "other.toml"
    explicit.write_text("[fetch]\nconnect_timeout = 2\n")
    monkeypatch.setenv("MMAGENT_CONFIG", str(explicit))
    s = load_settings(cwd=tmp_path)
    assert s.fetch.enabled is True and s.sources["fetch.enabled"] == str(user)
    assert s.fetch.read_timeout == 4.0
    assert s.fetch.connect_timeout == 2.0 and s.sources["fetch.connect_timeout"] == str(explicit)


def test_role_env_names_with_underscores_and_lists(monkeypatch, tmp_path):
    monkeypatch.setenv("MMAGENT_IMAGE_GEN_DEVICE", "cuda:1")
    monkeypatch.setenv("MMAGENT_PATHS_ALLOWED_ROOTS", "/data, /srv/media")
    monkeypatch.setenv("MMAGENT_FETCH_ENABLED", "yes")
    s = load_settings(cwd=tmp_path)
    assert s.role("image_gen").device == "cuda:1"
    assert s.paths.allowed_roots == ("/data", "/srv/media")
    assert s.fetch.enabled is True


def test_overrides_argument_beats_everything(monkeypatch, tmp_path):
    monkeypatch.setenv("MMAGENT_LIMITS_MAX_BYTES", "10")
    s = load_settings(cwd=tmp_path, overrides={"limits.max_bytes": 20})
    assert s.limits.max_bytes == 20 and s.sources["limits.max_bytes"] == "argument"


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[limits]\nmax_bytes = 'big'\n", "limits.max_bytes"),
        ("[limits]\nmax_pixels = -5\n", "must be positive"),
        ("[limits]\nmax_bytes = 1.5\n", "integer"),
        ("[fetch]\nenabled = 'maybe'\n", "true or false"),
        ("[fetch]\nallowed_hosts = 'a'\nallowed_hosts = 'b'\n", "cannot read"),
        ("[fetch]\nallowed_hosts = [1, 2]\n", "list of strings"),
        ("unknown = 1\n", "unknown setting 'unknown'"),
        ("limits = 3\n", "must be a table"),
        ("[roles.asr]\nmodle = 'x'\n", "unknown role setting 'roles.asr.modle'"),
        ("[roles.asr]\nmodel = ''\n", "non-empty string"),
        ("[roles.Bad-Name]\nmodel = 'x'\n", "invalid role name"),
        ("[roles.asr]\noptions = 3\n", "must be a table"),
        ("this is not toml", "cannot read"),
    ],
)
def test_invalid_files_give_one_clear_config_error(tmp_path, toml, message):
    (tmp_path / "mmagent.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(cwd=tmp_path)
    assert str(tmp_path / "mmagent.toml") in str(info.value)


def test_invalid_environment_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("MMAGENT_LIMITS_MAX_BYTES", "lots")
    with pytest.raises(ConfigError, match="MMAGENT_LIMITS_MAX_BYTES"):
        load_settings(cwd=tmp_path)


def test_missing_explicit_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("MMAGENT_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="not a file"):
        load_settings(cwd=tmp_path)


def test_unrelated_mmagent_variables_are_not_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("MMAGENT_LOAD_PLUGINS", "a,b")
    monkeypatch.setenv("MMAGENT_DEBUG", "1")
    s = load_settings(cwd=tmp_path)
    assert "roles.load.plugins" not in s.sources
