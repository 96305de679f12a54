"""`mmagent.train.user_data` (the user's own training data: JSONL, image folders, `datasets`; bad
rows with their line numbers; the split by image) and `mmagent.train.toydata` (the BYOD dataset)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmagent.config import load_settings
from mmagent.errors import InputError
from mmagent.train.toydata import COLOURS, SHAPES, main as toy_main, write_toy_dataset
from mmagent.train.user_data import Problem, load_training_data


def png(path: Path, colour=(200, 30, 30), size=(12, 10), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


def jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def messages(data) -> dict[int, str]:
    return {p.line: p.message for p in data.problems}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", n_images=40, seed=3, bad_rows=True)


# -- JSONL ------------------------------------------------------------------------------------------


def test_jsonl_questions_and_captions_with_types_and_one_entry_per_image(tmp_path):
    png(tmp_path / "imgs" / "a.png", (255, 0, 0))
    png(tmp_path / "imgs" / "b.png", (0, 0, 255), mode="RGBA")
    png(tmp_path / "imgs" / "copy-of-a.png", (255, 0, 0))  # the same bytes as a.png
    Image.fromarray(np.full((6, 8), 40000, dtype=np.uint16)).save(tmp_path / "imgs" / "grey16.png")
    data = load_training_data(jsonl(tmp_path / "data.jsonl", [
        {"image": "imgs/a.png", "question": "Is it red?", "answer": "Yes"},
        {"image": "imgs/a.png", "question": "What colour is it?", "answer": "red"},
        {"image": "imgs/b.png", "caption": "A blue square."},
        {"image": "imgs/copy-of-a.png", "question": "What shape?", "answer": "square", "type": "shape"},
        {"image": str(tmp_path / "imgs" / "grey16.png"), "question": "How many?", "answer": 3},
        {"image": "imgs/b.png", "question": "Colour?", "answer": ["blue", "navy", "blue"], "caption": "Blue."},
    ]), val_fraction=0)
    assert not data.problems and len(data.images) == 3  # a.png and its copy are one image
    assert [(e.kind, e.question, e.answer, e.type, e.line) for e in data.examples] == [
        ("qa", "Is it red?", "Yes", "yes/no", 1), ("qa", "What colour is it?", "red", "open", 2),
        ("caption", "", "A blue square.", "caption", 3), ("qa", "What shape?", "square", "shape", 4),
        ("qa", "How many?", "3", "open", 5), ("qa", "Colour?", "blue", "open", 6), ("caption", "", "Blue.", "caption", 6)]
    assert [e.image for e in data.examples] == [0, 0, 1, 0, 2, 1, 1]
    for array in data.images:
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    assert tuple(data.images[0][0, 0]) == (255, 0, 0) and tuple(data.images[1][0, 0]) == (0, 0, 255)
    assert tuple(data.images[2][0, 0]) == (156,) * 3  # 16-bit grey scaled to 8 bits, not clipped to white
    assert data.pil(1).mode == "RGB" and data.train_images == (0, 1, 2) and data.val_images == ()
    assert data.train == data.examples and data.val == []


def test_a_field_mapping_names_other_columns(tmp_path):
    png(tmp_path / "a.png")
    path = jsonl(tmp_path / "d.jsonl", [{"pic": "a.png", "ask": "Is it red?", "reply": "yes", "desc": "A square."}])
    data = load_training_data(path, val_fraction=0, mapping={"image": "pic", "question": "ask", "answer": "reply",
                                                               "caption": "desc"})
    assert [(e.kind, e.answer) for e in data.examples] == [("qa", "yes"), ("caption", "A square.")]
    with pytest.raises(InputError, match="unknown field"):
        load_training_data(path, mapping={"questoin": "ask"})


def test_image_size_resizes_every_image_so_they_stack(tmp_path):
    png(tmp_path / "a.png", size=(30, 20))
    png(tmp_path / "b.png", (0, 255, 0), size=(7, 9))
    data = load_training_data(jsonl(tmp_path / "d.jsonl", [{"image": "a.png", "caption": "x"},
                                                            {"image": "b.png", "caption": "y"}]),
                              image_size=16, val_fraction=0)
    assert data.stack([0, 1]).shape == (2, 16, 16, 3)


def test_every_bad_row_is_skipped_and_reported_with_its_line(tmp_path):
    png(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 8)
    (tmp_path / "notes.png").write_text("not an image at all")
    rows = [
        {"image": "ok.png", "question": "Is it red?", "answer": "yes"},  # 1 good
        {"image": "missing.png", "question": "Q?", "answer": "a"},  # 2
        {"image": "broken.png", "question": "Q?", "answer": "a"},  # 3
        {"image": "ok.png", "question": "Q?", "answer": "  "},  # 4
        {"image": "ok.png", "answer": "yes"},  # 5
        {"image": "ok.png"},  # 6
        ["ok.png", "Q?", "a"],  # 7
        '{"image": "ok.png", "question": "Q', # 8
        "",  # 9 blank: ignored
        {"question": "Where is the image?", "answer": "a"},  # 10
        {"image": "notes.png", "question": "Q?", "answer": "a"},  # 11
        {"image": "ok.png", "question": "Q?", "answer": {"total": 3}},  # 12
        {"image": "missing.png", "question": "Again?", "answer": "b"},  # 13: reported again
        {"image": "ok.png", "question": "", "answer": "yes"},  # 14
        {"image": 7, "question": "Q?", "answer": "a"},  # 15
        {"image": "https://example.com/a.png", "question": "Q?", "answer": "a"},  # 16
    ]
    path = jsonl(tmp_path / "data.jsonl", rows)
    with open(path, "ab") as f:
        f.write(b'{"image": "ok.png", "question": "caf\xe9?", "answer": "a"}\n')  # 17: not UTF-8
    data = load_training_data(path, val_fraction=0)
    assert len(data.examples) == 1
    got = messages(data)
    assert sorted(got) == [2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17]
    expect = {2: "image missing.png: no such file", 3: "image broken.png: cannot decode image/png",
              4: "empty answer", 5: "no question", 6: "no 'question' + 'answer' and no 'caption'",
              7: "not a JSON object (a JSON array)", 8: "invalid JSON", 10: "no image",
              11: "image notes.png: not an image", 12: "object of fields",
              13: "image missing.png: no such file", 14: "no question", 15: "'image' must be a path",
              16: "a URL; training reads local files only", 17: "not UTF-8"}
    for line, text in expect.items():
        assert got[line].startswith(f"data.jsonl:{line}: ") and text in got[line], got[line]
    assert all("\n" not in m for m in got.values())
    report = data.problem_report(limit=3)
    assert report.splitlines()[0] == "15 bad rows skipped:" and report.endswith("... and 12 more")
    assert "data.jsonl:2: image missing.png" in data.summary()


def test_images_over_the_configured_limits_are_reported(tmp_path, monkeypatch):
    png(tmp_path / "small.png", size=(8, 8))
    png(tmp_path / "big.png", size=(40, 40))
    path = jsonl(tmp_path / "d.jsonl", [{"image": "small.png", "caption": "a"}, {"image": "big.png", "caption": "b"}])
    monkeypatch.setenv("MMAGENT_LIMITS_MAX_PIXELS", "1000")  # [limits] max_pixels, read by load_settings
    got = messages(load_training_data(path, val_fraction=0))
    assert list(got) == [2] and "over the 1,000 pixel limit" in got[2] and got[2].startswith("d.jsonl:2: image big.png")
    monkeypatch.delenv("MMAGENT_LIMITS_MAX_PIXELS")
    settings = load_settings(overrides={"limits.max_bytes": (tmp_path / "small.png").stat().st_size})
    got = messages(load_training_data(path, val_fraction=0, settings=settings))
    assert list(got) == [2] and "byte limit" in got[2]


@pytest.mark.parametrize("content, match", [
    (None, r"not a JSONL file: it is a image/png file \(line 1\)"),
    (b"\x00\x01\x02binary\xff\xfe" * 50, r"not a JSONL file: it is a binary file"),
    ("just some notes\nnot json either\n", r"no line is a JSON object; first bad line: notes.jsonl:1: invalid JSON"),
    ('[\n  {"image": "a.png", "caption": "x"},\n  {"image": "b.png", "caption": "y"}\n]\n',
     r"line 1 is '\[', it looks like one JSON document spread over lines"),
    ('{\n  "image": "a.png",\n  "caption": "x"\n}\n', r"line 1 is '\{'"),
    ("", r"is empty"),
    ("\n\n", r"is empty"),
])
def test_a_file_that_is_not_jsonl_is_refused_naming_it(tmp_path, content, match):
    path = tmp_path / "notes.jsonl"
    if content is None:
        Image.new("RGB", (4, 4)).save(path, format="PNG")
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match=match) as info:
        load_training_data(path)
    assert str(path) in str(info.value) or "notes.jsonl" in str(info.value)


def test_no_usable_row_is_an_error_listing_the_first_problems(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"image": f"gone{i}.png", "caption": "x"} for i in range(5)])
    with pytest.raises(InputError, match=r"d.jsonl: no usable row \(5 bad: d.jsonl:1: image gone0.png: no such file; "
                                         r".*d.jsonl:3: .*\(and 2 more\)"):
        load_training_data(path)
    with pytest.raises(InputError, match="no such file or folder"):
        load_training_data(tmp_path / "nowhere.jsonl")


def test_image_paths_may_not_leave_the_data_folder(tmp_path):
    data_dir = tmp_path / "data"
    png(tmp_path / "secret.png")
    png(data_dir / "sub" / "inside.png", (1, 2, 3))
    os.symlink(tmp_path / "secret.png", data_dir / "link.png")
    path = jsonl(data_dir / "d.jsonl", [
        {"image": "../secret.png", "caption": "x"},
        {"image": str(tmp_path / "secret.png"), "caption": "x"},
        {"image": "sub/../../secret.png", "caption": "x"},
        {"image": "link.png", "caption": "x"},
        {"image": str(data_dir / "sub" / "inside.png"), "caption": "absolute, inside: fine"},
        {"image": "sub/../sub/inside.png", "caption": "relative, inside: fine"},
    ])
    data = load_training_data(path, val_fraction=0)
    got = messages(data)
    assert sorted(got) == [1, 2, 3, 4]
    assert all("outside the folder of the data file" in m for m in got.values()), got
    assert len(data.images) == 1 and [e.line for e in data.examples] == [5, 6]


# -- image folders (metadata.jsonl / metadata.csv) ----------------------------------------------------


def test_an_image_folder_with_metadata_jsonl(tmp_path):
    png(tmp_path / "f" / "a.png")
    png(tmp_path / "f" / "b.png", (0, 9, 9))
    jsonl(tmp_path / "f" / "metadata.jsonl", [{"file_name": "a.png", "text": "A red square."},
                                              {"file_name": "b.png", "question": "Colour?", "answer": "teal"},
                                              {"file_name": "c.png", "text": "gone"}])
    data = load_training_data(tmp_path / "f", val_fraction=0)
    assert [(e.kind, e.answer) for e in data.examples] == [("caption", "A red square."), ("qa", "teal")]
    assert data.source == "metadata.jsonl" and list(messages(data)) == [3]


def test_an_image_folder_with_metadata_csv(tmp_path):
    folder = tmp_path / "f"
    png(folder / "a.png")
    png(folder / "b.png", (0, 9, 9))
    (folder / "metadata.csv").write_text(
        "file_name,question,answer,caption,type\n"
        "a.png,Is it red?,yes,,\n"
        "b.png,,,\"A teal square, small.\",\n"
        "b.png,What colour?,,,colour\n"
        "missing.png,Q?,a,,\n"
        "a.png,Shape?,square,,shape\n", encoding="utf-8")
    data = load_training_data(folder, val_fraction=0)
    assert [(e.kind, e.question, e.answer, e.type, e.line) for e in data.examples] == [
        ("qa", "Is it red?", "yes", "yes/no", 2), ("caption", "", "A teal square, small.", "caption", 3),
        ("qa", "Shape?", "square", "shape", 6)]
    got = messages(data)
    assert got == {4: "metadata.csv:4: empty answer", 5: "metadata.csv:5: image missing.png: no such file"}
    # A CSV file given directly works the same; one without a file_name column is refused.
    assert len(load_training_data(folder / "metadata.csv", val_fraction=0).examples) == 3
    (tmp_path / "other.csv").write_text("path,caption\na.png,x\n")
    with pytest.raises(InputError, match=r"other.csv: no file_name column \(line 1 has: path, caption\)"):
        load_training_data(tmp_path / "other.csv")


def test_a_folder_without_metadata_is_refused_with_a_hint(tmp_path):
    jsonl(tmp_path / "data.jsonl", [{"image": "a.png", "caption": "x"}])
    with pytest.raises(InputError, match=r"metadata.jsonl or metadata.csv .* pass the file itself: --data .*data.jsonl"):
        load_training_data(tmp_path)


# -- datasets ------------------------------------------------------------------------------------------


def test_a_saved_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [Image.new("RGB", (10, 10), (30 * i, 0, 0)) for i in range(4)]
    ds = datasets.Dataset.from_dict({
        "question": ["Colour?", "Colour?", "Is it dark?", "Anything?"],
        "answers": [[{"answer": "red"}] * 3 + [{"answer": "maroon"}], [{"answer": "black"}], [{"answer": "yes"}],
                    [{"answer": " "}]],
        "question_type": ["colour", "colour", None, None],
        "image": images,
    }).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "ds"))
    data = load_training_data(tmp_path / "ds", val_fraction=0)
    assert [(e.question, e.answer, e.type, e.line) for e in data.examples] == [
        ("Colour?", "red", "colour", 0), ("Colour?", "black", "colour", 1), ("Is it dark?", "yes", "yes/no", 2)]
    assert messages(data) == {3: "ds row 3: empty answer"}
    assert tuple(data.images[1][0, 0]) == (30, 0, 0)


def test_a_saved_dataset_dict_trains_on_train_and_its_validation_can_be_the_val_set(tmp_path):
    datasets = pytest.importorskip("datasets")

    def split(shade, n):
        return datasets.Dataset.from_dict({
            "image": [Image.new("RGB", (8, 8), (shade, i, 0)) for i in range(n)],
            "caption": [f"image {i}" for i in range(n)]}).cast_column("image", datasets.Image())

    datasets.DatasetDict({"train": split(10, 5), "validation": split(200, 2)}).save_to_disk(str(tmp_path / "dd"))
    data = load_training_data(tmp_path / "dd", val_fraction=0)
    assert len(data.examples) == 5 and any("split 'train'" in n and "--val" in n for n in data.notes)
    data = load_training_data(tmp_path / "dd", val=tmp_path / "dd" / "validation")
    assert len(data.train_images) == 5 and len(data.val_images) == 2 and data.val_source == "validation"
    # an undecodable image cell is a bad row like any other
    broken = datasets.Dataset.from_dict({"image": [{"bytes": b"\xff\xd8\xff\xe0 not a jpeg", "path": "x.jpg"},
                                                   {"bytes": _png_bytes(), "path": "ok.png"}],
                                         "caption": ["a", "b"]}).cast_column("image", datasets.Image())
    broken.save_to_disk(str(tmp_path / "broken"))
    data = load_training_data(tmp_path / "broken", val_fraction=0)
    assert len(data.examples) == 1 and list(messages(data)) == [0]
    assert messages(data)[0].startswith("broken row 0: image x.jpg: ")


def test_a_hub_id_loads_its_train_split_and_offline_fails_in_one_line(monkeypatch):
    datasets = pytest.importorskip("datasets")
    asked = []

    def fake_load_dataset(name, split=None):
        asked.append((name, split))
        return datasets.Dataset.from_dict({"image": [{"bytes": _png_bytes(), "path": "p.png"}],
                                           "question": ["Colour?"], "answer": ["grey"]}
                                          ).cast_column("image", datasets.Image())

    with monkeypatch.context() as m:
        m.setattr(datasets, "load_dataset", fake_load_dataset)
        assert load_training_data("someone/shapes", val_fraction=0).examples[0].answer == "grey"
        assert load_training_data("hf:someone/shapes:dev", val_fraction=0).source == "hf:someone/shapes:dev"
    assert asked == [("someone/shapes", "train"), ("someone/shapes", "dev")]

    def offline(name, split=None):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)  # what no network looks like, without waiting for it
    with pytest.raises(InputError, match="could not load the Hugging Face dataset") as info:
        load_training_data("hf:nobody/no-such-dataset-here")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="no such file"):  # a missing file is not taken for a hub id
        load_training_data("data/train.jsonl")


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (5, 5), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


# -- the split -----------------------------------------------------------------------------------------


def test_the_split_is_by_image_deterministic_and_independent_of_row_order(toy, tmp_path):
    a = load_training_data(toy.jsonl, val_fraction=0.25, seed=1)
    assert len(a.val_images) == 10 and len(a.train_images) == 30 and not set(a.val_images) & set(a.train_images)
    assert {e.image for e in a.val} == set(a.val_images) and {e.image for e in a.train} == set(a.train_images)
    assert len(a.train) + len(a.val) == len(a.examples)
    b = load_training_data(toy.jsonl, val_fraction=0.25, seed=1)
    assert b.val_images == a.val_images and b.examples == a.examples
    # the same images are held out when the rows come in another order
    lines = toy.jsonl.read_text().splitlines()
    random.Random(0).shuffle(lines)
    shuffled = toy.path / "shuffled.jsonl"
    shuffled.write_text("\n".join(lines) + "\n")
    c = load_training_data(shuffled, val_fraction=0.25, seed=1)
    assert sorted(c.image_names[i] for i in c.val_images) == sorted(a.image_names[i] for i in a.val_images)
    assert load_training_data(toy.jsonl, val_fraction=0.25, seed=2).val_images != a.val_images
    assert load_training_data(toy.jsonl, val_fraction=0).val_images == ()
    summary = a.summary()
    assert "train: 30 images" in summary and "val: 10 images" in summary and "7 bad rows skipped" in summary
    for bad in (-0.1, 1, 1.5, "0.1", True):
        with pytest.raises(InputError, match="val-fraction"):
            load_training_data(toy.jsonl, val_fraction=bad)


def test_val_names_the_held_out_set_and_shared_images_stay_held_out(tmp_path):
    for i in range(4):
        png(tmp_path / f"{i}.png", (i * 50, 0, 0))
    train = jsonl(tmp_path / "train.jsonl", [{"image": f"{i}.png", "caption": f"c{i}"} for i in range(3)])
    val = jsonl(tmp_path / "val.jsonl", [{"image": "2.png", "caption": "v2"}, {"image": "3.png", "caption": "v3"},
                                         {"image": "nope.png", "caption": "v"}])
    data = load_training_data(train, val=val, val_fraction=0.5)
    names = lambda ids: sorted(data.image_names[i] for i in ids)  # noqa: E731
    assert names(data.train_images) == ["0.png", "1.png"] and names(data.val_images) == ["2.png", "3.png"]
    assert [e.answer for e in data.val] == ["c2", "v2", "v3"] and [e.answer for e in data.train] == ["c0", "c1"]
    assert [p.message for p in data.problems] == ["val.jsonl:3: image nope.png: no such file"]
    assert any("1 images of train.jsonl are also in val.jsonl" in n for n in data.notes)
    assert "--val val.jsonl" in data.summary()
    jsonl(tmp_path / "empty-val.jsonl", [{"image": "nope.png", "caption": "v"}])
    with pytest.raises(InputError, match="empty-val.jsonl: no usable row"):
        load_training_data(train, val=tmp_path / "empty-val.jsonl")


# -- the toy dataset --------------------------------------------------------------------------------------


def test_the_toy_dataset_is_deterministic_balanced_and_foreign_to_the_scene_world(toy, tmp_path):
    from mmagent.scenes import vocab

    rows = [json.loads(line) for line in toy.jsonl.read_text().splitlines()[: toy.questions]]
    assert toy.images == 40 and 8 * 40 <= toy.questions <= 13 * 40
    answers = {t: [r["answer"] for r in rows if r["type"] == t] for t in ("yes/no", "colour", "shape", "count")}
    assert answers["yes/no"].count("yes") == answers["yes/no"].count("no") > 0
    assert set(answers["colour"]) <= set(COLOURS) and set(answers["shape"]) <= set(SHAPES)
    assert set(answers["count"]) <= {"1", "2", "3"}
    scene_words = set(vocab.COLOURS) | set(vocab.KINDS) | set(vocab.PLURAL.values()) | {w.lower() for w in vocab.WORDS}
    assert not (set(COLOURS) | set(SHAPES)) & scene_words
    assert all(len(r["answer"].split()) == 1 for r in rows)
    # the same (seed, index) gives the same bytes; fewer images are a prefix of more
    small = write_toy_dataset(tmp_path / "small", n_images=5, seed=3)
    lines = small.jsonl.read_text().splitlines()
    assert lines == toy.jsonl.read_text().splitlines()[: len(lines)]
    assert all((small.path / "images" / f"{i:06d}.png").read_bytes() == (toy.path / "images" / f"{i:06d}.png").read_bytes()
               for i in range(5))
    assert write_toy_dataset(tmp_path / "other", n_images=5, seed=4).jsonl.read_text().splitlines() != lines


def test_the_toy_bad_rows_are_exactly_the_problems_the_loader_reports(toy):
    data = load_training_data(toy.jsonl, val_fraction=0)
    assert {p.line for p in data.problems} == set(toy.bad_lines)
    assert len(data.examples) == toy.questions and len(data.images) == toy.images
    assert all(isinstance(p, Problem) and p.message.startswith(f"data.jsonl:{p.line}: ") for p in data.problems)


def test_the_toy_writer_refuses_to_replace_other_folders_and_has_a_command(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="not empty"):
        write_toy_dataset(tmp_path / "mine", n_images=2)
    with pytest.raises(InputError, match="not a toy dataset"):
        write_toy_dataset(tmp_path / "mine", n_images=2, overwrite=True)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "precious"
    assert toy_main(["--out", str(tmp_path / "t"), "--images", "3", "--size", "32"]) == 0
    assert "3 images" in capsys.readouterr().out and Image.open(tmp_path / "t" / "images" / "000002.png").size == (32, 32)
    assert toy_main(["--out", str(tmp_path / "t"), "--images", "2", "--overwrite"]) == 0
    assert len(list((tmp_path / "t" / "images").iterdir())) == 2 and not list(tmp_path.glob(".t.*"))
    assert toy_main(["--out", str(tmp_path / "t"), "--images", "0", "--overwrite"]) == 2


def test_answer_words_reads_what_each_image_shows_from_its_answers_and_leaves_the_rest_unknown():
    """The encoder's and the grounded start's per-patch targets: an open answer or a "yes" to a
    question naming words says the image shows them; a "no" naming one word says it does not; a
    "no" naming two says nothing; a word no question touches is unknown, not absent."""
    pytest.importorskip("torch")
    from types import SimpleNamespace

    from mmagent.train.user_data import MIN_WORD_COUNT, answer_words

    def qa(image, question, answer):
        return SimpleNamespace(image=image, kind="qa", question=question, answer=answer)

    vocab = [qa(9, "q", w) for w in ("cyan", "heart", "hexagon", "pink", "ring") for _ in range(MIN_WORD_COUNT)]
    rows = [qa(0, "Is there a pink heart?", "yes"), qa(0, "Is there a hexagon?", "no"),
            qa(1, "Is there a pink ring?", "no"), qa(1, "What colour is the ring?", "cyan"),
            qa(2, "Is there a ring?", "no"), qa(2, "Which shape is pink?", "ring"),  # "present" wins
            SimpleNamespace(image=0, kind="caption", question="", answer="ring")]
    targets, known, words = answer_words(vocab + rows, [0, 1, 2])
    assert words == ["cyan", "heart", "hexagon", "pink", "ring"]
    assert targets.tolist() == [[0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]
    assert known.tolist() == [[0, 1, 1, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]
    # a given vocabulary (held-out images are read with the training one)
    targets, known, words = answer_words(rows, [0], ["heart", "pink"])
    assert words == ["heart", "pink"] and targets.tolist() == [[1, 1]] and known.tolist() == [[1, 1]]


def test_answer_pairs_read_which_words_one_object_shows_together_from_the_questions():
    """The binding targets: an open answer and the answer word its question names ("What colour is
    the ring?" cyan) belong to one object; a yes/no naming two words says whether one object shows
    both ("Is there a pink ring?" no: none does); "together" wins over a contradicting "no";
    three named words, captions and images outside the list teach nothing; `most` caps a row."""
    pytest.importorskip("torch")
    from types import SimpleNamespace

    from mmagent.train.user_data import answer_pairs

    def qa(image, question, answer):
        return SimpleNamespace(image=image, kind="qa", question=question, answer=answer)

    words = ["cyan", "heart", "pink", "ring"]
    rows = [qa(0, "What colour is the ring?", "cyan"), qa(0, "Is there a pink ring?", "no"),
            qa(0, "Is there a pink heart or a cyan ring?", "yes"),  # three words: which two?
            qa(1, "Is there a pink heart?", "no"), qa(1, "Which shape is pink?", "heart"),  # together wins
            qa(1, "How many shapes are there?", "2"), SimpleNamespace(image=1, kind="caption", question="", answer="x"),
            qa(7, "What colour is the heart?", "pink")]  # not a listed image
    pairs, mask = answer_pairs(rows, [0, 1], words)
    got = [{tuple(p) for p, m in zip(row.tolist(), ms.tolist()) if m} for row, ms in zip(pairs, mask)]
    assert got == [{(0, 3, 1), (2, 3, 0)}, {(1, 2, 1)}]
    pairs, mask = answer_pairs(rows, [0], words, most=1)
    assert pairs.shape == (1, 1, 3) and mask.tolist() == [[1.0]]


def test_answer_counts_read_how_many_of_what_each_image_holds_from_questions_answered_with_a_number():
    """The CLS token's count targets: a digit or a number word answers; the thing counted is the
    answer words the question names (a plural names its word), none: everything; a key asked
    fewer than MIN_WORD_COUNT times, a count above MAX_COUNT and non-numbers teach nothing; how
    the data writes each number is kept (the adapter's count units say it that way)."""
    pytest.importorskip("torch")
    from types import SimpleNamespace

    from mmagent.train.user_data import MAX_COUNT, MIN_WORD_COUNT, answer_counts

    def qa(image, question, answer):
        return SimpleNamespace(image=image, kind="qa", question=question, answer=answer)

    words = ["cross", "heart", "pink"]
    often = [qa(9, "How many shapes are there?", "3") for _ in range(MIN_WORD_COUNT)] + \
        [qa(9, "How many pink crosses?", "2") for _ in range(MIN_WORD_COUNT)]
    rows = [qa(0, "How many objects are in the image?", "two"), qa(0, "How many pink crosses are there?", "1"),
            qa(1, "Count the shapes.", "2"), qa(1, "How many hearts?", "1"),  # (heart,): asked once only
            qa(2, "How many shapes?", str(MAX_COUNT + 1)), qa(2, "What colour is the heart?", "pink"),
            SimpleNamespace(image=0, kind="caption", question="How many", answer="4")]
    counts = answer_counts(often + rows, [0, 1, 2], words)
    assert counts.keys == [(), ("cross", "pink")]
    assert counts.targets.tolist() == [[2, 1], [2, -100], [-100, -100]]
    assert counts.said[2] == "2" and counts.said[1] == "1"  # "2" is written as a digit more often than "two"
    assert counts.units() == [(0, 2), (1, 1)]
    held = answer_counts(rows, [1], words, keys=counts.keys)  # held-out images: the training keys
    assert held.keys == counts.keys and held.targets.tolist() == [[2, -100]]


def test_pair_bce_is_low_when_one_patch_shows_both_words_and_high_when_they_sit_apart():
    """The binding loss: a pair said to be together is cheap only when one patch fires both words
    (not when each fires on a different patch); a pair said to be absent is expensive when a patch
    fires both; unset pairs count for nothing; saturated logits give finite gradients."""
    torch = pytest.importorskip("torch")
    from mmagent.train.encoder import pair_bce

    on, off = 8.0, -8.0
    together = torch.tensor([[[on, on], [off, off]]])  # (1 image, 2 patches, 2 words)
    apart = torch.tensor([[[on, off], [off, on]]])
    pair = torch.tensor([[[0, 1, 1]]])
    absent = torch.tensor([[[0, 1, 0]]])
    one = torch.ones(1, 1)
    assert pair_bce(together, pair, one) < 0.01 < 5 < pair_bce(apart, pair, one)
    assert pair_bce(apart, absent, one) < 0.01 < 5 < pair_bce(together, absent, one)
    assert pair_bce(apart, pair, torch.zeros(1, 1)) == 0
    logits = torch.tensor([[[60.0, 60.0], [-60.0, -60.0]]], requires_grad=True)
    pair_bce(logits, absent, one).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 0].gt(0.1).all()  # descent lowers both


def test_pair_accuracy_counts_pairs_shown_together_exactly_when_the_target_says_so():
    """The reported binding figure (`pairs_accuracy`, `probe_pair_accuracy`): right when one patch
    shows both words of a "together" pair, or no patch shows both of an "absent" one; None when no
    pair is set."""
    torch = pytest.importorskip("torch")
    from mmagent.train.encoder import pair_accuracy

    together = torch.tensor([[[8.0, 8.0], [-8.0, -8.0]]])
    apart = torch.tensor([[[8.0, -8.0], [-8.0, 8.0]]])
    both_kinds = torch.tensor([[[0, 1, 1], [0, 1, 0]]])  # the same words said together, then absent
    one = torch.ones(1, 2)
    assert pair_accuracy(together, both_kinds, one) == 0.5 == pair_accuracy(apart, both_kinds, one)
    assert pair_accuracy(together, both_kinds, torch.tensor([[1.0, 0.0]])) == 1.0
    assert pair_accuracy(apart, both_kinds, torch.tensor([[0.0, 1.0]])) == 1.0
    assert pair_accuracy(together, both_kinds, torch.zeros(1, 2)) is None
