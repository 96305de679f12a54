"""Backend contracts, the registry, selection from configuration, and the shared model cache."""

from __future__ import annotations

import threading

import pytest

from mmagent import hookimpl
from mmagent.backends import (
    Backend,
    BackendRegistry,
    ChatModel,
    ChatResult,
    Message,
    SpeechToText,
    Transcript,
    get_backend,
    get_registry,
    loaded_models,
    unload,
)
from mmagent.backends.devices import resolve_device, resolve_dtype
from mmagent.config import load_settings
from mmagent.errors import BackendError, BackendNotFoundError, PluginError
from mmagent.plugin_manager import get_plugins

LOADS: list[tuple] = []


class CountingASR(SpeechToText):
    name = "counting"
    default_model = "tiny-test"

    def load_model(self):
        LOADS.append((self.model_id, self.device))
        return {"model": self.model_id}

    def transcribe(self, audio, *, language=None):
        return Transcript(text=f"{self.model['model']} heard {audio}", language=language or "en")


class EchoLLM(ChatModel):
    name = "echo"

    def chat(self, messages, *, tools=None, max_tokens=256, temperature=0.0, stop=None):
        return ChatResult(text=messages[-1].text[:max_tokens])


class BrokenLoad(SpeechToText):
    name = "broken"

    def load_model(self):
        raise OSError("weights not found at /nowhere")


@pytest.fixture(autouse=True)
def clean_cache(monkeypatch):
    monkeypatch.setenv("MMAGENT_LOAD_PLUGINS", "")
    LOADS.clear()
    unload()
    yield
    unload()


@pytest.fixture
def registered():
    class TestPlugin:
        @hookimpl
        def register_backends(self, register):
            register(CountingASR)
            register(EchoLLM)
            register(BrokenLoad)

    get_plugins().add(TestPlugin(), "test-backends")
    return get_registry()


def test_model_loads_once_per_process_for_same_model_and_device(registered):
    a = get_backend("asr", "counting")
    b = get_backend("asr", "counting")
    assert a is not b
    assert a.transcribe("x").text == "tiny-test heard x"
    assert b.transcribe("y").text == "tiny-test heard y"
    assert LOADS == [("tiny-test", "auto")]
    get_backend("asr", "counting", model="other").transcribe("z")
    assert LOADS == [("tiny-test", "auto"), ("other", "auto")]
    assert len([k for k in loaded_models() if "CountingASR" in k]) == 2


def test_concurrent_first_use_loads_once(registered):
    backends = [get_backend("asr", "counting") for _ in range(8)]
    threads = [threading.Thread(target=lambda b=b: b.model) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert LOADS == [("tiny-test", "auto")]


def test_selection_from_configuration(registered, tmp_path, monkeypatch):
    (tmp_path / "mmagent.toml").write_text(
        '[roles.asr]\nbackend = "counting"\nmodel = "from-config"\ndevice = "cpu"\n[roles.asr.options]\nbeam = 3\n'
    )
    monkeypatch.chdir(tmp_path)
    backend = get_backend("asr")
    assert isinstance(backend, CountingASR)
    assert (backend.model_id, backend.device, backend.options) == ("from-config", "cpu", {"beam": 3})
    assert get_backend("asr", device="cuda").device == "cuda"  # explicit overrides win
    # Configuration for another backend of the role does not leak into this one.
    assert get_backend("asr", "broken").model_id is None


def test_default_is_first_registered_for_the_role(tmp_path):
    reg = BackendRegistry()
    reg.register(CountingASR)
    reg.register(BrokenLoad)
    reg.register(EchoLLM)
    settings = load_settings(cwd=tmp_path)
    assert reg.get("asr", settings=settings).cls is CountingASR
    assert isinstance(reg.create("llm", settings=settings), EchoLLM)


def test_unknown_role_or_name_is_a_clear_error(registered):
    with pytest.raises(BackendNotFoundError, match="no backend 'nope' for role 'asr' .*counting"):
        get_backend("asr", "nope")
    with pytest.raises(BackendNotFoundError, match="role 'no_such_role'"):
        get_backend("no_such_role")


def test_load_failure_becomes_backend_error(registered):
    backend = get_backend("asr", "broken", model="/nowhere")
    with pytest.raises(BackendError, match="asr/broken could not load model '/nowhere': OSError"):
        backend.model


def test_chat_stream_falls_back_to_whole_answer(registered):
    llm = get_backend("llm", "echo")
    assert list(llm.stream([Message("user", "hello there")])) == ["hello there"]


def test_registry_rejects_contract_breakers():
    reg = BackendRegistry()
    with pytest.raises(PluginError, match="not a subclass"):
        reg.register(object)

    class NoName(SpeechToText):
        pass

    with pytest.raises(PluginError, match="'role' and 'name'"):
        reg.register(NoName)

    class WrongContract(Backend):
        role, name = "asr", "wrong"

    with pytest.raises(PluginError, match="does not subclass SpeechToText"):
        reg.register(WrongContract)
    reg.register(CountingASR, plugin="first")
    with pytest.raises(PluginError, match="already registered by plugin 'first'"):
        reg.register(CountingASR, plugin="second")


def test_new_roles_from_plugins_are_allowed():
    class DepthEstimator(Backend):
        role, name, accepts, produces = "depth", "toy", ("image",), ("image",)

    reg = BackendRegistry()
    reg.register(DepthEstimator)
    assert reg.get("depth").cls is DepthEstimator


def test_missing_requirements_are_reported_without_importing():
    class NeedsNothingThere(SpeechToText):
        name = "needs"
        requires = ("json", "definitely_not_installed_pkg")

    reg = BackendRegistry()
    reg.register(NeedsNothingThere)
    assert reg.get("asr", "needs").missing_requirements() == ["definitely_not_installed_pkg"]


def test_describe_lists_io_and_placement():
    info = CountingASR(device="cpu").describe()
    assert info == {"role": "asr", "name": "counting", "model": "tiny-test", "device": "cpu", "dtype": "auto",
                    "accepts": ["audio"], "produces": ["text"]}


def test_device_and_dtype_resolution_on_cpu():
    torch = pytest.importorskip("torch")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") in (expected, "mps")
    assert resolve_device("cpu") == "cpu"
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(BackendError, match="unknown dtype"):
        resolve_dtype("float8", "cpu")
    with pytest.raises(BackendError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_settings_role_defaults_for_unconfigured_roles(tmp_path):
    role = load_settings(cwd=tmp_path).role("asr")
    assert (role.backend, role.model, role.device, role.dtype) == (None, None, "auto", "auto")


def test_ocr_text_joins_boxes_that_share_a_row():
    from mmagent.backends import OcrLine, OcrResult

    result = OcrResult((
        OcrLine("9.75", (180, 240, 230, 262), 0.99),
        OcrLine("TOTAL", (30, 238, 110, 264), 0.99),
        OcrLine("Coffee", (30, 80, 100, 100), 0.98),
        OcrLine("3.50", (150, 81, 192, 99), 0.98),
    ))
    assert result.text == "Coffee 3.50\nTOTAL 9.75"
    assert OcrResult().text == ""
