"""Shared fixtures. Every test gets a private MMAGENT_HOME and user config dir, and no stray
MMAGENT_* settings from the developer's shell."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    for var in list(os.environ):
        if var.startswith("MMAGENT_") and var != "MMAGENT_TEST_MODELS":
            monkeypatch.delenv(var)
    home = tmp_path_factory.mktemp("mmagent-home")
    monkeypatch.setenv("MMAGENT_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    yield home
    from mmagent.plugin_manager import reset_plugins

    reset_plugins()


@pytest.fixture
def home(isolated_env) -> Path:
    """The MMAGENT_HOME of this test (media store under home/media)."""
    return isolated_env
