"""Data-parallel training (`torchrun --nproc-per-node N -m mmagent train ...`): N processes (here
2 CPU processes over gloo; on a GPU machine one per GPU over NCCL) take the optimizer steps one
process takes on the whole batch — the same losses step by step, the same weights to float
rounding — and one process writes the run (log, checkpoints, model, metrics on stdout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mmagent.errors import InputError  # noqa: E402
from mmagent.train.loop import Ranks  # noqa: E402


def _run(args: list[str], home: Path, processes: int = 1) -> dict:
    """`mmagent ARGS` in one process, or under torchrun in `processes`; the metrics it printed."""
    launch = [sys.executable, "-m", "mmagent"] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m", "mmagent"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR")}
    out = subprocess.run([*launch, *map(str, args)], capture_output=True, text=True, timeout=900,
                         env=env | {"MMAGENT_HOME": str(home)})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)  # one JSON document: rank 0's, nothing else on stdout


def _losses(log: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "lr")}
            for line in log.read_text().splitlines()]


def _same_losses(a: Path, b: Path) -> None:
    one, two = _losses(a), _losses(b)
    assert [r["step"] for r in one] == [r["step"] for r in two] and one
    for x, y in zip(one, two):
        assert x.keys() == y.keys()
        assert all(y[k] == pytest.approx(x[k], rel=1e-4, abs=1e-4) for k in x), (x, y)


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def _close(a: Path, b: Path, atol: float) -> float:
    """The largest difference between two weight files (same names), asserted below `atol`."""
    x, y = _tensors(a), _tensors(b)
    assert x.keys() == y.keys()
    worst = max((x[k].float() - y[k].float()).abs().max().item() for k in x)
    assert worst < atol, worst
    return worst


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, zoo_model):
    """The scene encoder trained by one process and by two (a batch of 7: shares of 3 and 4)."""
    home = zoo_model("all-minilm-l6-v2").parent.parent
    root = tmp_path_factory.mktemp("parallel-encoder")
    args = ["train", "encoder", "--scenes", 64, "--steps", 3, "--batch-size", 7]
    one = _run([*args, "--out", root / "one"], home)
    two = _run([*args, "--out", root / "two"], home, processes=2)
    return home, root, one, two


@pytest.mark.slow
def test_two_processes_train_the_scene_encoder_one_process_trains(encoders):
    """The contrastive loss needs the whole batch as negatives: each rank encodes its share, the
    outputs are gathered, and each share gets the gradient of the whole batch's loss."""
    _, root, one, two = encoders
    _same_losses(root / "one" / "log.jsonl", root / "two" / "log.jsonl")  # step 1's contrastive loss included
    _close(root / "one" / "vision" / "model.safetensors", root / "two" / "vision" / "model.safetensors", 5e-4)
    assert one["retrieval_candidates"] == two["retrieval_candidates"] == 500
    assert not (root / "two" / "checkpoint.tmp").exists() and len(_losses(root / "two" / "log.jsonl")) == 3


@pytest.mark.slow
def test_two_processes_train_the_adapter_one_process_trains(encoders, tiny_llama, tmp_path):
    """Every stage, LoRA included, with a batch of 5 (shares of 2 and 3, weighted by their size):
    the steps' losses and the saved projector and LoRAs are one process's."""
    home, root, _, _ = encoders
    args = ["train", "adapter", "--encoder", root / "one", "--llm", tiny_llama, "--scenes", 16, "--caption-steps", 2,
            "--qa-steps", 3, "--focus-steps", 1, "--relations-steps", 2, "--batch-size", 5, "--lora-rank", 4,
            "--precision", "fp32"]
    one = _run([*args, "--out", tmp_path / "one"], home)
    two = _run([*args, "--out", tmp_path / "two"], home, processes=2)
    assert one["processes"] == 1 and two["processes"] == 2
    for stage in ("caption", "qa", "focus", "relations"):
        _same_losses(tmp_path / "one" / stage / "log.jsonl", tmp_path / "two" / stage / "log.jsonl")
    moved = _tensors(tmp_path / "one" / "small" / "lora-1" / "adapter_model.safetensors")
    assert any(v.abs().max() > 1e-3 for k, v in moved.items() if "lora_B" in k)  # trained: B starts at zero
    for name in ("projector.safetensors", "lora/adapter_model.safetensors", "lora-1/adapter_model.safetensors"):
        _close(tmp_path / "one" / "small" / name, tmp_path / "two" / "small" / name, 1e-5)
    assert {k: v for k, v in one.items() if k not in ("processes",) and not k.endswith("seconds")} == \
        {k: v for k, v in two.items() if k not in ("processes",) and not k.endswith("seconds")}


@pytest.mark.slow
def test_two_processes_run_the_whole_recipe_on_the_users_data(encoders, tiny_llama, tmp_path):
    """`train adapter --data D` under torchrun: the encoder on D (rank 0 saves it, the others wait
    for it), then the adapter; the same losses as one process, and one summary of D on stderr."""
    from mmagent.train.toydata import write_toy_dataset

    home = encoders[0]
    data = write_toy_dataset(tmp_path / "toy", n_images=40, seed=3, size=32).jsonl
    args = ["train", "adapter", "--data", data, "--llm", tiny_llama, "--encoder-steps", 3, "--qa-steps", 3,
            "--batch-size", 5, "--lora-rank", 4, "--precision", "fp32"]
    one = _run([*args, "--out", tmp_path / "one"], home)
    two = _run([*args, "--out", tmp_path / "two"], home, processes=2)
    for part in ("encoder", "qa"):
        _same_losses(tmp_path / "one" / part / "log.jsonl", tmp_path / "two" / part / "log.jsonl")
    _close(tmp_path / "one" / "encoder" / "vision" / "model.safetensors",
           tmp_path / "two" / "encoder" / "vision" / "model.safetensors", 5e-4)
    assert one["questions"] == two["questions"] > 0 and two["processes"] == 2


def test_one_process_is_a_world_of_one(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ranks = Ranks.join()
    assert (ranks.rank, ranks.world, ranks.main) == (0, 1, True)
    x = torch.arange(5.0)
    assert torch.equal(ranks.share(x), x) and ranks.gather(x) is x
    assert ranks.total(2.5) == 2.5
    # the shares of a batch, in rank order, are the batch: contiguous, sizes differing by at most one
    shares = [Ranks(r, 3).share(list(range(7))) for r in range(3)]
    assert shares == [[0, 1], [2, 3], [4, 5, 6]]


def test_a_world_without_torchrun_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(InputError, match="torchrun --nproc-per-node 2"):
        Ranks.join()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InputError, match="must be integers"):
        Ranks.join()


def test_each_process_takes_its_own_gpu(monkeypatch):
    """--device cuda:N names one GPU for every process: refused under torchrun; auto and cuda
    give rank r's process the GPU of its LOCAL_RANK."""
    from mmagent.train.adapter import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(InputError, match="LOCAL_RANK"):
        resolve_device("cuda:1", Ranks(1, 2, 1))
    assert resolve_device("auto", Ranks(3, 8, 3)) == torch.device("cuda", 3)
    assert resolve_device("cuda", Ranks(1, 2, 1)) == torch.device("cuda", 1)
    assert resolve_device("cpu", Ranks(1, 2, 1)) == torch.device("cpu")
    assert resolve_device("cuda:1", Ranks()) == torch.device("cuda", 1)


_DRIVER = '''
import sys
from pathlib import Path

import mmagent.train.adapter as A

encoder, llm, out, how = sys.argv[1:5]
recipe = A.AdapterRecipe(llm=llm, train_scenes=16, eval_scenes=2, probe_scenes=32, caption_steps=3, qa_steps=4,
                         focus_steps=0, relations_steps=0, batch_size=3, lora_rank=4, checkpoint_every=2,
                         precision="fp32")
if how == "killed":  # dies in stage 2's 4th step, after its step-2 checkpoint (3 caption steps before)
    real, calls = A.answer_loss, [0]

    def dies(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 7:
            raise SystemExit(3)
        return real(*args, **kwargs)

    A.answer_loss = dies
A.train_adapter(Path(encoder), Path(out), recipe, resume=how == "resume", quiet=True)
'''


@pytest.mark.slow
def test_a_killed_data_parallel_run_resumes_to_the_uninterrupted_weights(encoders, tiny_llama, tmp_path):
    """Every rank resumes from rank 0's checkpoint: killed in stage 2 and resumed, a 2-process run
    ends where an uninterrupted 2-process run does, exactly."""
    home, root, _, _ = encoders
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR")}

    def run(out: str, how: str) -> int:
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                               str(driver), str(root / "one"), str(tiny_llama), str(tmp_path / out), how],
                              capture_output=True, text=True, timeout=900,
                              env=env | {"MMAGENT_HOME": str(home)}).returncode

    assert run("a", "straight") == 0
    assert run("b", "killed") != 0
    assert not (tmp_path / "b" / "model").exists()
    assert [json.loads(x)["step"] for x in (tmp_path / "b" / "qa" / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert run("b", "resume") == 0
    assert _losses(tmp_path / "a" / "qa" / "log.jsonl") == _losses(tmp_path / "b" / "qa" / "log.jsonl")
    for name in ("projector.safetensors", "lora/adapter_model.safetensors"):
        a, b = _tensors(tmp_path / "a" / "small" / name), _tensors(tmp_path / "b" / "small" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
