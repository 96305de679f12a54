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


# -- 4: lone surrogates (undecodable argv/stdin bytes) never reach a tokenizer ------------------------

import json  # noqa: E402
import time  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from mmagent.backends.results import ChatResult, Message  # noqa: E402
from mmagent.errors import PromptTooLongError  # noqa: E402
from mmagent.testing import ScriptedLLM  # noqa: E402

MMAGENT = str(Path(sys.executable).with_name("mmagent"))


class StrictLLM(ScriptedLLM):
    """Encodes every message as strict UTF-8, as a tokenizer does (it raises on a lone surrogate)."""

    seen: list[str] = []

    def chat(self, messages, **kw) -> ChatResult:
        for m in messages:
            m.text.encode("utf-8")  # UnicodeEncodeError on "\udce9"
            StrictLLM.seen.append(m.text)
        return ChatResult('{"name": "x"}')


def test_clean_messages_replaces_surrogates_in_strings_and_text_blocks():
    from langchain_core.messages import HumanMessage, SystemMessage

    from mmagent.runner import clean_messages

    messages = clean_messages([SystemMessage("s\udcff"), HumanMessage([{"type": "text", "text": "caf\udce9"},
                                                                      {"type": "image", "url": "x"}]),
                               HumanMessage("fine")])
    assert messages[0].content == "s\ufffd"
    assert messages[1].content == [{"type": "text", "text": "caf\ufffd"}, {"type": "image", "url": "x"}]
    assert messages[2].content == "fine"


def test_chat_mmagent_cleans_surrogates_before_the_backend():
    from langchain_core.messages import HumanMessage, SystemMessage

    from mmagent.langchain import ChatMMAgent

    StrictLLM.seen.clear()
    reply = ChatMMAgent(backend=StrictLLM()).invoke([SystemMessage("be \udcff brief"), HumanMessage("caf\udce9")])
    assert reply.content and StrictLLM.seen == ["be \ufffd brief", "caf\ufffd"]


def test_extract_cleans_surrogates_in_text_and_instructions():
    from pydantic import BaseModel

    from mmagent.extract import extract

    class Name(BaseModel):
        name: str

    StrictLLM.seen.clear()
    assert extract(Name, "caf\udce9", StrictLLM(), instructions="look \udcff here").value.name == "x"
    assert "caf\ufffd" in StrictLLM.seen and any("look \ufffd here" in t for t in StrictLLM.seen)


def test_transformers_llm_replaces_surrogates_direct_api(tiny_llama):
    """A direct backend call with "\\udce9" (and ChatMMAgent over it) used to raise the tokenizer's
    TypeError (TextEncodeInput must be ...)."""
    from langchain_core.messages import HumanMessage, SystemMessage

    from mmagent.backends import get_backend
    from mmagent.langchain import ChatMMAgent

    llm = get_backend("llm", "transformers", model=str(tiny_llama), device="cpu")
    assert llm.chat([Message("system", "s\udcff"), Message("user", "caf\udce9")], max_tokens=2).finish_reason
    assert "".join(llm.stream([Message("user", "caf\udce9")], max_tokens=2)) is not None
    assert len(llm.batch([[Message("user", "caf\udce9")], [Message("user", "ok")]], max_tokens=2)) == 2
    ChatMMAgent(backend=llm, max_tokens=2).invoke([SystemMessage("\udcff"), HumanMessage("caf\udce9")])


def test_run_messages_replace_surrogates(tiny_llama, monkeypatch):
    from langchain_core.messages import HumanMessage

    from mmagent.runner import run_messages

    monkeypatch.setenv("MMAGENT_LLM_MODEL", str(tiny_llama))
    monkeypatch.setenv("MMAGENT_LLM_DEVICE", "cpu")
    monkeypatch.setenv("MMAGENT_EMBED_BACKEND", "absent")
    result = run_messages([HumanMessage("caf\udce9 \udcff")], pipeline="tools", system="be \udce9 brief")
    assert isinstance(result.answer, str)


SCHEMA = "from pydantic import BaseModel\n\nclass Name(BaseModel):\n    name: str\n"


def test_invalid_utf8_in_argv_through_the_installed_command(tiny_llama, tmp_path):
    """argv bytes that are not UTF-8 (b"caf\\xe9") as the prompt and system prompt of `mmagent run`,
    and as the text of `mmagent extract`: answered (or a clean extraction failure), never the
    tokenizer's TypeError."""
    (tmp_path / "schema.py").write_text(SCHEMA)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MMAGENT_")},
           "MMAGENT_HOME": str(tmp_path / "home"), "MMAGENT_LLM_DEVICE": "cpu", "MMAGENT_EMBED_BACKEND": "absent"}
    run = subprocess.run([MMAGENT, "run", "--pipeline", "tools", "-m", f"llm={tiny_llama}", "-s", b"s\xff",
                          b"caf\xe9", "--json"], capture_output=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    assert json.loads(run.stdout)["answer"] is not None
    extract = subprocess.run([MMAGENT, "extract", "--schema", "schema.py:Name", "--llm", str(tiny_llama),
                              "--max-tokens", "8", "--repairs", "0", b"caf\xe9"],
                             capture_output=True, env=env, cwd=tmp_path, timeout=300)
    err = extract.stderr.decode(errors="replace")
    assert extract.returncode in (0, 1), err
    assert "TextEncodeInput" not in err and "internal error" not in err and "Traceback" not in err, err


# -- 5a: a cap on the prompt, and the model's context ------------------------------------------------


@pytest.mark.parametrize("call", ["run", "stream", "run_messages", "run_graph"])
def test_a_prompt_over_max_prompt_chars_is_refused_before_any_model(call, monkeypatch):
    from langchain_core.messages import HumanMessage

    from mmagent import runner

    monkeypatch.setenv("MMAGENT_LLM_BACKEND", "no-such-backend")  # nothing may load
    long = "x" * 32_001
    with pytest.raises(PromptTooLongError, match=r"\d+ characters.*cap of 32000.*max_prompt_chars"):
        if call == "run":
            runner.run(long)
        elif call == "stream":
            next(iter(runner.stream(long)))
        elif call == "run_messages":
            runner.run_messages([HumanMessage("hello"), HumanMessage([{"type": "text", "text": long}])])
        else:
            next(iter(runner.run_graph(object(), long)))


def test_the_system_prompt_counts_towards_the_cap(monkeypatch):
    from mmagent import runner

    monkeypatch.setenv("MMAGENT_LIMITS_MAX_PROMPT_CHARS", "100")
    with pytest.raises(PromptTooLongError, match="cap of 100"):
        runner.run("x" * 60, system="y" * 60)


def test_the_cli_refuses_a_long_prompt_in_one_line_exit_2(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from mmagent.cli import build_cli

    monkeypatch.setenv("MMAGENT_LIMITS_MAX_PROMPT_CHARS", "1000")
    (tmp_path / "schema.py").write_text(SCHEMA)
    monkeypatch.chdir(tmp_path)
    for args, stdin in [(["run", "x" * 1001], None), (["run", "-"], b"y" * 10_000_000),
                        (["run", "question"], "z" * 1000), (["extract", "--schema", "schema.py:Name", "x" * 1001], None)]:
        result = CliRunner().invoke(build_cli(), args, input=stdin, catch_exceptions=False)
        assert result.exit_code == 2, (args[0], result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "cap of 1000" in lines[0] and "max_prompt_chars" in lines[0], result.stderr


def test_huge_stdin_is_refused_without_reading_it_all(tmp_path):
    """10 MB piped into `mmagent run` with a cap of 1000 characters: refused after reading ~4 KB."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MMAGENT_")},
           "MMAGENT_HOME": str(tmp_path / "home"), "MMAGENT_LIMITS_MAX_PROMPT_CHARS": "1000"}
    proc = subprocess.Popen([MMAGENT, "run", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(b"y" * 10_000_000)  # the process exits early: the pipe breaks
    except BrokenPipeError:
        pass
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    proc.wait(timeout=120)
    err = proc.stderr.read().decode()
    assert proc.returncode == 2 and "cap of 1000" in err and len(err.strip().splitlines()) == 1, err


def test_a_prompt_past_the_models_context_is_refused(tiny_llama):
    """The tiny Llama has 512 positions: 600 tokens (well under the character cap) used to be
    generated from anyway (garbage past the context)."""
    from mmagent.backends import get_backend

    llm = get_backend("llm", "transformers", model=str(tiny_llama), device="cpu")
    long = " ".join(["word"] * 600)
    with pytest.raises(PromptTooLongError, match=r"llm/transformers: the prompt is \d+ tokens.*context of 512"):
        llm.chat([Message("user", long)], max_tokens=4)
    with pytest.raises(PromptTooLongError, match="context of 512"):
        list(llm.stream([Message("user", long)], max_tokens=4))
    with pytest.raises(PromptTooLongError, match="context of 512"):
        llm.batch([[Message("user", long)]], max_tokens=4)
    fits = " ".join(["word"] * 400)
    assert llm.chat([Message("user", fits)], max_tokens=4) is not None
    with pytest.raises(PromptTooLongError, match="max_tokens=200"):  # the prompt fits, the answer would not
        llm.chat([Message("user", fits)], max_tokens=200)


def test_a_vlm_prompt_past_the_models_context_is_refused(tmp_path, home):
    import torch

    from mmagent.backends import get_backend
    from mmagent.content import TextPart
    from mmagent.plugin_manager import get_plugins
    from mmagent.plugins import vlm as vlm_module
    from mmagent.runtime import get_runtime
    from tests.test_vlm_plugin import build_llava, scene, stored

    if "vlm" not in get_plugins().infos:
        get_plugins().add(vlm_module, "vlm", source="builtin")
    get_runtime().refresh()
    torch.manual_seed(0)
    model, processor = build_llava()
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    context = model.config.text_config.max_position_embeddings
    vlm = get_backend("vlm", "transformers", model=str(tmp_path / "llava"), device="cpu", dtype="float32")
    image = stored(scene())
    assert vlm.chat([Message("user", [image, TextPart("caf\udce9?")])], max_tokens=2) is not None  # surrogates
    long = " ".join(["red"] * context)
    with pytest.raises(PromptTooLongError, match=f"vlm/transformers: the prompt is .*context of {context}"):
        vlm.chat([Message("user", [image, TextPart(long)])], max_tokens=2)


# -- 14: training logs after --resume ---------------------------------------------------------------


def _tiny_loop(out: Path, steps: int, kill_at: int | None = None, resume: bool = False, every: int = 5) -> None:
    import torch

    from mmagent.train.loop import run_loop

    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(i: int) -> dict:
        if i == kill_at:
            raise KeyboardInterrupt
        loss = model(torch.ones(1, 2)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    try:
        run_loop(out, steps, step, modules={"m": model}, optimizer=opt, resume=resume, checkpoint_every=every,
                 quiet=True)
    except KeyboardInterrupt:
        pass


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_a_resumed_run_logs_every_step_exactly_once(tmp_path):
    _tiny_loop(tmp_path, 12, kill_at=8)  # checkpoint at 5, logged 1..8
    assert _steps(tmp_path) == list(range(1, 9))
    _tiny_loop(tmp_path, 12, kill_at=11, resume=True)  # checkpoint at 10, logged up to 11
    _tiny_loop(tmp_path, 12, resume=True)
    assert _steps(tmp_path) == list(range(1, 13))


def test_a_torn_last_line_and_a_resume_without_checkpoint_leave_no_duplicates(tmp_path):
    _tiny_loop(tmp_path, 12, kill_at=8)
    with (tmp_path / "log.jsonl").open("a") as log:
        log.write('{"step": 9, "lo')  # the kill cut this record
    _tiny_loop(tmp_path, 12, resume=True)
    assert _steps(tmp_path) == list(range(1, 13))
    fresh = tmp_path / "fresh"
    _tiny_loop(fresh, 12, kill_at=3)  # killed before the first checkpoint
    _tiny_loop(fresh, 12, resume=True)  # nothing to resume from: starts over
    assert _steps(fresh) == list(range(1, 13))


# -- 12: the model cache ------------------------------------------------------------------------------

ZOO_BUILDS: list[str] = []


def _build_weights(folder: Path, report) -> None:
    ZOO_BUILDS.append(folder.name)
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 64)


def _zoo(root: Path, available=lambda: True):
    from mmagent.zoo import ModelSpec, Zoo

    zoo = Zoo(root)
    zoo.add(ModelSpec("tiny", "llm", "a test model", "PyPI tiny-weights", _build_weights, available=available,
                      install_hint="pip install tiny-weights"))
    return zoo


@pytest.fixture
def fresh_process(monkeypatch):
    """`ensure` as the first load of a new process (nothing verified yet in this one)."""
    from mmagent import zoo

    monkeypatch.setattr(zoo, "_VERIFIED", set(), raising=False)
    return zoo


def test_a_same_size_byte_flip_is_noticed_on_first_load_and_rebuilt(tmp_path, fresh_process):
    ZOO_BUILDS.clear()
    zoo = _zoo(tmp_path / "models")
    weights = zoo.ensure("tiny") / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))  # same size: the size check alone misses it
    fresh_process._VERIFIED.clear()  # a new process
    assert zoo.ensure("tiny") == weights.parent
    assert len(ZOO_BUILDS) == 2 and weights.read_bytes() == bytes(range(256)) * 64


def test_a_flip_that_cannot_be_rebuilt_is_one_line(tmp_path, fresh_process):
    from mmagent.zoo import ModelUnavailableError

    available = [True]
    zoo = _zoo(tmp_path / "models", available=lambda: available[0])
    weights = zoo.ensure("tiny") / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[5] ^= 0x80
    weights.write_bytes(bytes(data))
    available[0] = False
    fresh_process._VERIFIED.clear()
    with pytest.raises(ModelUnavailableError, match="damaged.*pip install tiny-weights") as info:
        zoo.ensure("tiny")
    assert "\n" not in str(info.value)


def test_first_load_trusts_an_unchanged_stamp_without_rehashing(tmp_path, fresh_process, monkeypatch):
    zoo = _zoo(tmp_path / "models")
    zoo.ensure("tiny")
    fresh_process._VERIFIED.clear()
    hashed = []
    real = fresh_process._sha256
    monkeypatch.setattr(fresh_process, "_sha256", lambda p: hashed.append(p) or real(p))
    zoo.ensure("tiny")
    assert hashed == []  # the stamp matched: no file was read
    os.utime(zoo.path("tiny") / "weights.bin")  # touched (ctime changes): re-hashed once, still fine
    fresh_process._VERIFIED.clear()
    zoo.ensure("tiny")
    assert len(hashed) == 1


def test_stale_partial_build_folders_are_removed(tmp_path):
    from mmagent.zoo import _lock_folder

    zoo = _zoo(tmp_path / "models")
    root = zoo.root
    root.mkdir(parents=True)
    killed = root / ".tiny.partial-killed"  # a SIGKILLed build: nobody holds its lock
    killed.mkdir()
    (killed / "half.bin").write_bytes(b"x" * 1000)
    live = root / ".tiny.partial-live"  # a build running in another process: locked
    live.mkdir()
    lock = _lock_folder(live)
    just_started = root / ".tiny.partial-new"  # not locked yet, seconds old
    just_started.mkdir()
    old = time.time() - 120
    for folder in (killed, live):
        os.utime(folder, (old, old))
    try:
        zoo.ensure("tiny")
        assert not killed.exists() and live.exists() and just_started.exists()
        ancient = time.time() - 2 * 3600
        os.utime(live, (ancient, ancient))  # locked but two hours old: stale
        assert live in zoo.clean_partials()
    finally:
        os.close(lock)


def test_a_killed_prepare_leaves_a_partial_folder_the_next_run_removes(tmp_path):
    """A real SIGKILL during `prepare`: the next process removes the folder it left."""
    import signal

    code = f"""
import sys, time
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from mmagent.zoo import ModelSpec, Zoo
def slow(folder, report):
    (folder / "half.bin").write_bytes(b"x" * 4096)
    print("building", flush=True)
    time.sleep(60)
zoo = Zoo(Path({str(tmp_path / "models")!r}))
zoo.add(ModelSpec("tiny", "llm", "", "test", slow))
zoo.prepare("tiny")
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"building"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    partials = list((tmp_path / "models").glob(".tiny.partial-*"))
    assert len(partials) == 1
    old = time.time() - 120
    os.utime(partials[0], (old, old))
    _zoo(tmp_path / "models").ensure("tiny")
    assert list((tmp_path / "models").glob(".tiny.partial-*")) == []


def _linking_build(source: Path):
    def build(folder: Path, report) -> None:
        (folder / "weights.bin").symlink_to((source / "weights.bin").resolve())
    return build


def test_links_into_a_removed_environment_are_re_resolved(tmp_path, fresh_process):
    """A zoo entry linking into venv A; A is removed and the package is installed in venv B."""
    import shutil

    from mmagent.zoo import ModelSpec, ModelUnavailableError, Zoo

    venv = {"path": tmp_path / "venv-a"}
    for name in ("venv-a", "venv-b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights.bin").write_bytes(b"w" * 512)

    def build(folder, report):
        _linking_build(venv["path"])(folder, report)

    installed = [True]
    zoo = Zoo(tmp_path / "models")
    zoo.add(ModelSpec("linked", "ocr", "", "PyPI linked-weights", build, available=lambda: installed[0],
                      install_hint="pip install linked-weights"))
    folder = zoo.ensure("linked")
    assert os.readlink(folder / "weights.bin").startswith(str(tmp_path / "venv-a"))
    shutil.rmtree(tmp_path / "venv-a")
    venv["path"] = tmp_path / "venv-b"
    fresh_process._VERIFIED.clear()
    assert zoo.ensure("linked") == folder
    assert (folder / "weights.bin").read_bytes() == b"w" * 512
    assert os.readlink(folder / "weights.bin").startswith(str(tmp_path / "venv-b"))
    # B removed too, and the package installed nowhere: one line naming the gone target
    shutil.rmtree(tmp_path / "venv-b")
    installed[0] = False
    fresh_process._VERIFIED.clear()
    with pytest.raises(ModelUnavailableError, match=r"link to .*venv-b.*gone.*pip install linked-weights"):
        zoo.ensure("linked")
