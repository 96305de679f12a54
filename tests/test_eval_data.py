"""`mmagent eval --data` with a saved `datasets` folder (VQAv2/TextVQA-style columns, a field
mapping) and a Hugging Face id that cannot be reached."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from mmagent.errors import InputError
from mmagent.eval.data import load_data, parse_mapping

datasets = pytest.importorskip("datasets")


def vqa_folder(tmp_path):
    images = [Image.new("RGB", (16 + i, 16), (40 * i, 0, 0)) for i in range(3)]
    data = datasets.Dataset.from_dict({
        "question_id": [101, 102, 103],
        "question": ["What colour?", "How many?", "What word?"],
        "answers": [[{"answer": "red", "answer_confidence": "yes"}] * 10, [{"answer": "2"}] * 3 + [{"answer": "two"}],
                    [{"answer": "stop"}]],
        "question_type": ["what color", "how many", "what"],
        "image": images,
    }).cast_column("image", datasets.Image())
    folder = tmp_path / "vqa"
    data.save_to_disk(str(folder))
    return folder


def test_a_saved_vqav2_style_dataset_needs_no_mapping(tmp_path):
    loaded = load_data(str(vqa_folder(tmp_path)), media_dir=tmp_path / "media")
    assert [i.id for i in loaded.items] == ["101", "102", "103"] and not loaded.skipped
    first = loaded.items[0]
    assert first.answer == ["red"] * 10 and first.type == "what color" and first.question == "What colour?"
    assert first.images[0].startswith(str(tmp_path / "media")) and Image.open(first.images[0]).size == (16, 16)
    again = load_data(str(vqa_folder(tmp_path)), media_dir=tmp_path / "media")
    assert [i.images for i in again.items] == [i.images for i in loaded.items]  # same files, written once


def test_a_field_mapping_names_other_columns_and_bad_rows_are_skipped(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    data = datasets.Dataset.from_dict({"query": ["Total?", "Shop?", "No label?"], "label": ["9.75", "Cornercafe", None],
                                       "file": [str(tmp_path / "a.png"), str(tmp_path / "missing.png"),
                                                str(tmp_path / "a.png")]})
    data.save_to_disk(str(tmp_path / "ds"))
    mapping = parse_mapping(["question=query", "answer=label", "image=file"])
    loaded = load_data(str(tmp_path / "ds"), media_dir=tmp_path / "m", mapping=mapping)
    assert [i.question for i in loaded.items] == ["Total?"] and loaded.items[0].answer == ["9.75"]
    assert [(s.where, "not found" in s.reason or "answer" in s.reason) for s in loaded.skipped] == [
        ("ds row 1", True), ("ds row 2", True)]
    with pytest.raises(InputError, match="unknown item field"):
        load_data(str(tmp_path / "ds"), media_dir=tmp_path / "m", mapping={"questoin": "query"})
    with pytest.raises(InputError, match="FIELD=COLUMN"):
        parse_mapping(["question"])


def test_a_hub_id_offline_fails_in_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="could not load the Hugging Face dataset") as info:
        load_data("hf:lmms-lab/textvqa:validation", media_dir=tmp_path / "m")
    assert "save_to_disk" in str(info.value) and "\n" not in str(info.value)


def test_cli_eval_on_a_datasets_folder_with_a_user_graph(tmp_path):
    from mmagent.cli import build_cli

    graph = tmp_path / "g.py"
    graph.write_text(
        "from langgraph.graph import END, START, MessagesState, StateGraph\n"
        "from langchain_core.messages import AIMessage\n"
        "b = StateGraph(MessagesState)\n"
        "b.add_node('a', lambda s: {'messages': [AIMessage('red')]})\n"
        "b.add_edge(START, 'a'); b.add_edge('a', END)\n"
        "graph = b.compile()\n")
    out = tmp_path / "o"
    result = CliRunner().invoke(build_cli(), ["eval", "--data", str(vqa_folder(tmp_path)), "--pipelines",
                                              f"{graph}:graph", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["metric"] == "vqa_accuracy"  # VQAv2-style answer lists
    pipe = summary["pipelines"][f"{graph}:graph"]
    assert pipe["n"] == 3 and pipe["accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    listed = CliRunner().invoke(build_cli(), ["eval", "--list"])
    assert listed.exit_code == 0 and "scenes-vqa" in listed.output and "vqa_accuracy" in listed.output
