"""`mmagent models add NAME PATH` / `models remove NAME`: a trained model folder joins the zoo by
name, persists across processes, resolves wherever a zoo name does, and is refused in one line
when it cannot be added."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmagent.errors import ConfigError, InputError, MMAgentError
from mmagent.zoo import MANIFEST, ModelUnavailableError, Zoo, get_zoo

MMAGENT = str(Path(sys.executable).with_name("mmagent"))
REPO = Path(__file__).resolve().parents[1]
RECEIPT = REPO / "examples" / "media" / "receipt.png"
HEAVY = ("torch", "transformers", "diffusers", "whisper", "langgraph", "PIL", "numpy")
LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}


def mm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MMAGENT, *args], capture_output=True, text=True, env=dict(os.environ), cwd=cwd,
                          timeout=300)


def cli(*args: str):
    from click.testing import CliRunner

    from mmagent.cli import build_cli

    return CliRunner().invoke(build_cli(), list(args))


def one_line_error(result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def model_folder(path: Path, config: dict | None = None, **files: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(LLAMA if config is None else config))
    for name, data in (files or {"weights.bin": b"\x01" * 1000}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    """A random tiny LLaVA saved by transformers, as `mmagent train adapter` saves its model/."""
    pytest.importorskip("transformers")
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from test_vlm_plugin import build_llava, no_special_answers

    torch.manual_seed(3)
    model, processor = build_llava()
    no_special_answers(model, processor)
    folder = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# -- end to end -----------------------------------------------------------------------------------


def test_an_added_llava_runs_by_name_in_a_new_process_after_its_folder_is_gone(tiny_llava, home, tmp_path):
    trained = shutil.copytree(tiny_llava, tmp_path / "ad" / "model")
    added = mm("models", "add", "tiny-vlm", str(trained))
    assert added.returncode == 0, added.stderr
    assert "Added tiny-vlm (vlm)" in added.stdout and "-m vlm=tiny-vlm" in added.stdout

    listed = {m["name"]: m for m in json.loads(mm("models", "list", "--json", "--verify").stdout)}
    entry = listed["tiny-vlm"]
    assert entry["role"] == "vlm" and entry["status"] == "ready"
    assert entry["source"] == f"added by the user from {trained.resolve()}"
    assert entry["path"] == str(home / "models" / "tiny-vlm")
    assert "scene-vlm" in listed  # the built-in models are still there
    table = mm("models", "list").stdout
    assert any(line.split()[:3] == ["tiny-vlm", "vlm", "ready"] for line in table.splitlines())

    shutil.rmtree(tmp_path / "ad")  # the zoo holds its own copy
    run = mm("run", "--pipeline", "adapter", "-m", "vlm=tiny-vlm", "--image", str(RECEIPT), "What is this?",
             "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    [step] = [s for s in out["steps"] if s["tool"] == "vlm"]
    assert out["pipeline"] == "adapter" and step["backend"] == "transformers" and step["model"] == "tiny-vlm"
    assert isinstance(out["answer"], str) and out["answer"] == step["output"]

    removed = mm("models", "remove", "tiny-vlm")
    assert removed.returncode == 0 and "Removed tiny-vlm" in removed.stdout, removed.stderr
    assert not (home / "models" / "tiny-vlm").exists()
    assert "tiny-vlm" not in {m["name"] for m in json.loads(mm("models", "list", "--json").stdout)}


def test_configured_role_model_and_chat_mmagent_resolve_the_name(tiny_llava, home, tmp_path, monkeypatch):
    from langchain_core.messages import HumanMessage

    from mmagent.backends import Message, get_backend
    from mmagent.content import ImagePart, TextPart, load_media
    from mmagent.langchain import ChatMMAgent
    from mmagent.plugins._hf import model_source

    get_zoo().add_user_model("tiny-vlm", tiny_llava)
    (tmp_path / "mmagent.toml").write_text('[roles.vlm]\nmodel = "tiny-vlm"\ndevice = "cpu"\n')
    monkeypatch.chdir(tmp_path)
    backend = get_backend("vlm")
    assert backend.model_id == "tiny-vlm" and backend.unavailable_reason() is None
    assert model_source("tiny-vlm", "vlm/transformers") == str(home / "models" / "tiny-vlm")
    image = load_media(str(RECEIPT), expect="image")
    assert isinstance(image, ImagePart)
    answer = backend.chat([Message("user", [image, TextPart("What is this?")])], max_tokens=4)
    assert isinstance(answer.text, str) and answer.usage["completion_tokens"] >= 1

    chat = ChatMMAgent(model="vlm=tiny-vlm", max_tokens=4)
    reply = chat.invoke([HumanMessage(content=[{"type": "text", "text": "What is this?"}])])
    assert isinstance(reply.content, str)

    listed = cli("backends", "--role", "vlm", "--json")
    assert listed.exit_code == 0, listed.output
    [row] = [r for r in json.loads(listed.stdout) if r["name"] == "transformers"]
    assert row["model"] == "tiny-vlm" and row["ready"] is True


# -- what add and remove refuse -------------------------------------------------------------------


def test_errors_are_one_line_and_write_nothing(home, tmp_path):
    good = model_folder(tmp_path / "good")
    (tmp_path / "file.bin").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    model_folder(tmp_path / "bert", {"model_type": "bert", "architectures": ["BertModel"]})
    (model_folder(tmp_path / "broken") / "config.json").write_text("{nope")

    one_line_error(cli("models", "add", "m", str(tmp_path / "missing")), 2, "does not exist")
    one_line_error(cli("models", "add", "m", str(tmp_path / "file.bin")), 2, "is not a folder")
    one_line_error(cli("models", "add", "m", str(tmp_path / "empty")), 2, "holds no config.json")
    one_line_error(cli("models", "add", "m", str(tmp_path / "broken")), 2, "config.json is not valid JSON")
    one_line_error(cli("models", "add", "m", str(tmp_path / "bert")), 2, "cannot tell the role",
                   "model_type 'bert'", "--role")
    one_line_error(cli("models", "add", "m", str(good), "--role", "brain"), 2, "unknown role 'brain'")
    for bad in ("a/b", "../up", ".hidden", "-x", "sp ace", "x" * 101, "caf\u00e9", "a\nb"):
        one_line_error(cli("models", "add", "--", bad, str(good)), 2, "bad model name")
    one_line_error(cli("models", "add", "scene-vlm", str(good)), 2, "'scene-vlm' is a built-in zoo model",
                   "choose another name")
    one_line_error(cli("models", "add", "scene-vlm", str(good), "--force"), 2, "is a built-in zoo model")
    models = home / "models"
    assert not models.exists() or [p.name for p in models.iterdir()] == [".user-models.lock"]

    one_line_error(cli("models", "remove", "scene-vlm"), 2, "built-in zoo model", "only models added")
    one_line_error(cli("models", "remove", "nope"), 2, "no user model named 'nope' (added: none)")

    # From the installed command too: stderr holds one line, exit 2, no traceback.
    result = mm("models", "add", "m", str(tmp_path / "empty"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_bert_is_accepted_with_an_explicit_role(home, tmp_path):
    folder = model_folder(tmp_path / "bert", {"model_type": "bert"}, **{"modules.json": b"[]"})
    assert get_zoo().add_user_model("st", folder).role == "embed"  # a sentence-transformers folder
    folder = model_folder(tmp_path / "bert2", {"model_type": "bert"})
    assert get_zoo().add_user_model("bert", folder, role="embed", description="mine").description == "mine"


def test_a_name_is_added_once_unless_forced(home, tmp_path):
    first = model_folder(tmp_path / "v1", **{"weights.bin": b"one"})
    second = model_folder(tmp_path / "v2", **{"weights.bin": b"two!"})
    assert cli("models", "add", "mine", str(first)).exit_code == 0
    one_line_error(cli("models", "add", "mine", str(second)), 2, "'mine' was already added", str(first),
                   "--force")
    assert (home / "models" / "mine" / "weights.bin").read_bytes() == b"one"
    assert cli("models", "add", "mine", str(second), "--force").exit_code == 0
    assert (home / "models" / "mine" / "weights.bin").read_bytes() == b"two!"
    [entry] = [m for m in json.loads(cli("models", "list", "--json").stdout) if m["name"] == "mine"]
    assert entry["source"].endswith(str(second.resolve())) and entry["status"] == "ready"
    assert cli("models", "remove", "mine").exit_code == 0
    one_line_error(cli("models", "remove", "mine"), 2, "no user model named 'mine'")


def test_a_folder_of_another_model_is_never_replaced(home, tmp_path):
    zoo = get_zoo()
    foreign = zoo.path("someone-else")
    foreign.mkdir(parents=True)
    (foreign / MANIFEST).write_text(json.dumps({"name": "someone-else", "source": "PyPI other 1.0", "files": {}}))
    for force in (False, True):
        with pytest.raises(InputError, match="already holds another model .PyPI other 1.0"):
            zoo.add_user_model("someone-else", model_folder(tmp_path / f"m{force}"), force=force)
    assert (foreign / MANIFEST).is_file()


# -- links ----------------------------------------------------------------------------------------


def test_links_inside_are_copied_as_files_and_links_out_are_refused(home, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("do not copy me")
    folder = model_folder(tmp_path / "m", **{"shards/a.bin": b"A" * 10})
    (folder / "alias.bin").symlink_to("shards/a.bin")
    spec = get_zoo().add_user_model("linked", folder)
    copy = get_zoo().path("linked")
    assert not (copy / "alias.bin").is_symlink() and (copy / "alias.bin").read_bytes() == b"A" * 10
    assert set(json.loads((copy / MANIFEST).read_text())["files"]) == {"config.json", "alias.bin", "shards/a.bin"}
    assert spec.added_from == str(folder.resolve())

    for name, make in [
        ("abs", lambda f: (f / "w.bin").symlink_to(outside)),
        ("rel", lambda f: (f / "w.bin").symlink_to("../secret.txt")),
        ("config", lambda f: ((f / "config.json").unlink(), (f / "config.json").symlink_to(outside))),
        ("dir", lambda f: (f / "sub").symlink_to(tmp_path)),
        ("dangling", lambda f: (f / "w.bin").symlink_to(f / "gone")),
        ("fifo", lambda f: os.mkfifo(f / "pipe")),
    ]:
        bad = model_folder(tmp_path / f"bad-{name}")
        make(bad)
        result = cli("models", "add", f"bad-{name}", str(bad))
        line = one_line_error(result, 2)
        assert any(s in line for s in ("links outside", "link to a folder", "broken link", "not a regular file")), line
        assert not get_zoo().path(f"bad-{name}").exists()
    assert not [p for p in get_zoo().root.iterdir() if ".partial-" in p.name]


def test_a_linked_path_itself_is_fine(home, tmp_path):
    real = model_folder(tmp_path / "run-3")
    (tmp_path / "latest").symlink_to(real)
    assert get_zoo().add_user_model("latest", tmp_path / "latest").added_from == str(real)


# -- persistence, failures, damage ----------------------------------------------------------------


def test_the_registry_persists_and_is_written_atomically(home, tmp_path):
    from mmagent.runtime import get_runtime

    get_zoo().add_user_model("kept", model_folder(tmp_path / "m"), description="a kept model")
    registry = home / "models" / ".user-models.json"
    data = json.loads(registry.read_text())
    assert data["version"] == 1 and data["models"]["kept"]["role"] == "llm"
    assert not [p for p in registry.parent.iterdir() if ".tmp-" in p.name]
    get_runtime().refresh()  # a new zoo reads the registry again
    spec = get_zoo().spec("kept")
    assert spec.description == "a kept model" and get_zoo().status("kept", verify=True) == "ready"
    assert Zoo.from_plugins(home / "models", get_runtime().plugins).specs["kept"].role == "llm"


def test_a_damaged_registry_does_not_break_the_zoo_but_add_says_so(home, tmp_path, caplog):
    (home / "models").mkdir()
    (home / "models" / ".user-models.json").write_text("{half")
    assert "scene-vlm" in get_zoo().specs  # everything else still works
    assert "user model registry" in caplog.text
    with pytest.raises(ConfigError, match=r"\.user-models\.json is damaged.*fix it or delete it"):
        get_zoo().add_user_model("m", model_folder(tmp_path / "m"))
    assert not get_zoo().path("m").exists()


def test_a_failed_copy_leaves_nothing(home, tmp_path, monkeypatch):
    import errno

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mmagent.user_models.shutil.copyfileobj", full)
    with pytest.raises(MMAgentError, match="could not add model 'm' .*No space left on device"):
        get_zoo().add_user_model("m", model_folder(tmp_path / "m"))
    left = sorted(p.name for p in (home / "models").iterdir())
    assert left == [".user-models.lock"]
    assert "m" not in get_zoo().specs


def test_a_damaged_copy_is_refused_with_how_to_add_it_again_and_never_rebuilt(home, tmp_path):
    from mmagent import zoo as zoo_module

    folder = model_folder(tmp_path / "m")
    zoo = get_zoo()
    zoo.add_user_model("m", folder)
    assert zoo.prepare("m", force=True) == zoo.path("m")  # force verifies, does not rebuild
    weights = zoo.path("m") / "weights.bin"
    weights.write_bytes(b"\x02" * 1000)  # same size: the checksum catches it
    zoo_module._VERIFIED.clear()  # a new process
    with pytest.raises(ModelUnavailableError, match="user model 'm': its copy at .* is missing or damaged; add it "
                                                    "again: mmagent models add --force m "):
        zoo.ensure("m")
    assert zoo.status("m", verify=True) == "corrupt"
    zoo.add_user_model("m", folder, force=True)
    assert zoo.ensure("m") == zoo.path("m") and zoo.status("m", verify=True) == "ready"
    shutil.rmtree(zoo.path("m"))
    assert zoo.status("m") == "missing"
    one_line_error(cli("models", "prepare", "m"), 1, "add it again")
    assert cli("models", "remove", "m").exit_code == 0


def test_prepare_all_skips_user_models(home, tmp_path, monkeypatch):
    monkeypatch.setenv("MMAGENT_LOAD_PLUGINS", "")
    zoo = get_zoo()
    zoo.add_user_model("m", model_folder(tmp_path / "m"))
    shutil.rmtree(zoo.path("m"))
    built = []
    monkeypatch.setattr(Zoo, "prepare", lambda self, name, **_: built.append(name) or self.path(name))
    result = cli("models", "prepare")
    assert result.exit_code == 0, result.output
    assert "m" not in built


# -- role inference, other roles, start-up cost ------------------------------------------------------


@pytest.mark.parametrize("config, files, role", [
    ({"model_type": "llava"}, {}, "vlm"),
    ({"model_type": "mmagent_llava"}, {}, "vlm"),
    ({"model_type": "something_vl", "vision_config": {}, "text_config": {}}, {}, "vlm"),
    ({"model_type": "x", "architectures": ["XForImageTextToText"]}, {}, "vlm"),
    ({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}, {}, "llm"),
    ({"model_type": "whisper"}, {}, "asr"),
    ({"model_type": "blip"}, {}, "caption"),
    ({"model_type": "detr"}, {}, "detect"),
    ({"model_type": "bert"}, {"modules.json"}, "embed"),
    ({"model_type": "bert"}, {}, None),
    ({}, {}, None),
])
def test_role_inference(tmp_path, config, files, role):
    from mmagent.user_models import infer_role

    for name in files:
        (tmp_path / name).write_text("[]")
    assert infer_role(tmp_path, "config.json", config) == role
    assert infer_role(tmp_path, "model_index.json", {}) == "image_gen"


def test_a_diffusers_pipeline_folder_is_an_image_generator(home, tmp_path):
    folder = tmp_path / "sd"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (folder / "unet" / "config.json").write_text("{}")
    assert get_zoo().add_user_model("my-sd", folder).role == "image_gen"


def test_a_user_ctranslate2_whisper_resolves_for_faster_whisper(home, tmp_path):
    from mmagent.plugins.whisper import faster_whisper_dir

    folder = model_folder(tmp_path / "ct2", {"alignment_heads": [], "lang_ids": []}, **{"model.bin": b"w"})
    get_zoo().add_user_model("my-asr", folder, role="asr")
    assert faster_whisper_dir("my-asr") == str(get_zoo().path("my-asr"))


def test_adding_and_removing_import_no_heavy_library(home, tmp_path):
    folder = model_folder(tmp_path / "m")
    code = (
        "import sys\nfrom mmagent.cli import main\n"
        f"for argv in (['models', 'add', 'light', {str(folder)!r}], ['models', 'remove', 'light']):\n"
        "    try:\n        main(argv)\n    except SystemExit as exc:\n        assert not exc.code, exc.code\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout
