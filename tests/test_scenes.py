"""The scene world: deterministic by seed, answers true to the objects, pixels true to the metadata,
written atomically, driven from the CLI. Answers are checked by an oracle written here, from the
objects alone, independently of mmagent/scenes/questions.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mmagent.errors import InputError
from mmagent.scenes import (COLOURS, KINDS, QUESTION_TYPES, generate_scene, load_questions, load_scenes,
                            render, write_dataset)

MMAGENT = str(Path(sys.executable).with_name("mmagent"))
PLURALS = {k + "s": k for k in KINDS}

# A spread of options: default, small images, crowded, always a word.
OPTIONS = [dict(), dict(size=64), dict(size=32, max_objects=4, word_prob=1.0), dict(max_objects=6, word_prob=0.5)]


def scenes(n=60, seed=7, **options):
    return [generate_scene(seed, i, **options) for i in range(n)]


def all_scenes():
    for k, options in enumerate(OPTIONS):
        yield from scenes(n=80, seed=100 + k, **options)


# ---------------------------------------------------------------------------------------------
# The oracle: answers recomputed from the objects

def matching(objects, size=None, colour=None, kind=None):
    return [o for o in objects if (size is None or o.size == size) and (colour is None or o.colour == colour)
            and (kind is None or o.kind == kind)]


def count_term(objects, term):
    """ "circles" or "red shapes" -> how many."""
    if term in PLURALS:
        return len(matching(objects, kind=PLURALS[term]))
    colour, shapes = term.split()
    assert shapes == "shapes" and colour in COLOURS, term
    return len(matching(objects, colour=colour))


def oracle(scene, question):
    objs, text = scene.objects, question.question
    yn = lambda b: "yes" if b else "no"  # noqa: E731
    if m := re.fullmatch(r"Is there a (\w+) (\w+)\?", text):
        return yn(bool(matching(objs, colour=m[1], kind=m[2])))
    if m := re.fullmatch(r"What colour is the (\w+)\?", text):
        [obj] = matching(objs, kind=m[1])  # only asked when the kind is unique
        return obj.colour
    if m := re.fullmatch(r"What shape is the (\w+) object\?", text):
        [obj] = matching(objs, colour=m[1])
        return obj.kind
    if text == "How many shapes are there?":
        return str(len(objs))
    if m := re.fullmatch(r"How many (.+) are there\?", text):
        return str(count_term(objs, m[1]))
    if m := re.fullmatch(r"Is the (?:(small|large) )?(\w+) (\w+) (to the left of|to the right of|above|below) "
                         r"the (?:(small|large) )?(\w+) (\w+)\?", text):
        [a] = matching(objs, size=m[1], colour=m[2], kind=m[3])  # the names are unambiguous
        [b] = matching(objs, size=m[5], colour=m[6], kind=m[7])
        relation = m[4]
        if relation in ("to the left of", "to the right of"):
            assert abs(a.x - b.x) > a.r + b.r, "left/right asked about objects that overlap in x"
            return yn(a.x < b.x if relation == "to the left of" else a.x > b.x)
        assert abs(a.y - b.y) > a.r + b.r, "above/below asked about objects that overlap in y"
        return yn(a.y < b.y if relation == "above" else a.y > b.y)
    if m := re.fullmatch(r"Are there more (.+) than (.+)\?", text):
        return yn(count_term(objs, m[1]) > count_term(objs, m[2]))
    if text == "What word is written in the image?":
        assert scene.word
        return scene.word.lower()
    raise AssertionError(f"question the oracle does not know: {text!r}")


def test_every_answer_is_true_to_the_objects():
    checked = Counter()
    for scene in all_scenes():
        for q in scene.questions:
            assert q.type in QUESTION_TYPES
            assert re.fullmatch(r"[a-z]+|\d+", q.answer), q
            assert oracle(scene, q) == q.answer, (scene.to_dict(), q)
            checked[q.type] += 1
    assert set(checked) == set(QUESTION_TYPES), checked


def test_all_question_types_appear_over_50_scenes():
    types = Counter(q.type for s in scenes(n=50, seed=3) for q in s.questions)
    assert set(types) == set(QUESTION_TYPES), types


def test_existence_and_comparison_answers_are_balanced():
    qs = [q for s in scenes(n=200, seed=11) for q in s.questions]
    for kind in ("existence", "comparison", "position"):
        answers = [q.answer for q in qs if q.type == kind]
        share = answers.count("yes") / len(answers)
        assert 0.35 <= share <= 0.65, (kind, share)
    counts = Counter(q.answer for q in qs if q.type == "count")
    assert {"0", "1", "2", "3", "4"} <= set(counts), counts


# ---------------------------------------------------------------------------------------------
# Layout and texts

def test_objects_do_not_overlap_and_stay_inside():
    for scene in all_scenes():
        assert 1 <= len(scene.objects)
        for i, a in enumerate(scene.objects):
            left, top, right, bottom = a.box()
            assert 0 <= left and right < scene.size and 0 <= top and bottom < scene.size
            if scene.word_band:
                assert bottom < scene.word_band[1], "object reaches into the word band"
            for b in scene.objects[i + 1:]:
                bl, bt, br, bb = b.box()
                assert right < bl or br < left or bottom < bt or bb < top, (a, b)


def test_object_count_respects_max_objects():
    assert max(len(s.objects) for s in scenes(n=100, seed=1, max_objects=2)) == 2
    assert max(len(s.objects) for s in scenes(n=100, seed=1)) == 4
    assert all(len(s.objects) == 1 for s in scenes(n=20, seed=1, max_objects=1))
    assert all(s.word is None for s in scenes(n=20, word_prob=0.0))
    assert all(s.word for s in scenes(n=20, word_prob=1.0))


def test_captions_hide_details_descriptions_tell_everything():
    colour_words = re.compile(r"\b(" + "|".join(COLOURS) + r"|small|large)\b", re.I)
    for scene in all_scenes():
        if len(scene.objects) >= 2:
            assert not colour_words.search(scene.caption), scene.caption
            assert not re.search(r"\b(two|three|four|\d)\b", scene.caption, re.I), scene.caption
        description = scene.description
        for obj in scene.objects:
            assert f"{obj.size} {obj.colour} {obj.kind}" in description, (obj, description)
        phrases = re.findall(r"\b(?:small|large) \w+ (?:circle|square|triangle)\b", description)
        assert len(phrases) == len(scene.objects)
        if scene.word:
            assert f"The word {scene.word} is written" in description
            assert scene.word not in scene.caption
        else:
            assert "word" not in description


# ---------------------------------------------------------------------------------------------
# Rendering: the pixels show what the metadata says

def test_pixels_at_object_centres_have_the_palette_colour():
    for options in OPTIONS:
        for scene in scenes(n=25, seed=5, **options):
            image = render(scene)
            assert image.size == (scene.size, scene.size) and image.mode == "RGB"
            px = image.load()
            for obj in scene.objects:
                assert px[obj.x, obj.y] == COLOURS[obj.colour], (obj, px[obj.x, obj.y])
                if obj.kind == "square":  # squares fill their box: the corners too
                    left, top, right, bottom = obj.box()
                    assert px[left, top] == px[right, bottom] == COLOURS[obj.colour]
                elif obj.kind == "triangle":  # the top corners of the box stay background
                    left, top, right, _ = obj.box()
                    assert px[left, top] == px[right, top] == scene.background
            colours = {rgb: count for count, rgb in image.getcolors(maxcolors=1 << 16)}
            for name, rgb in COLOURS.items():  # no palette colour without an object of it
                assert (rgb in colours) == any(o.colour == name for o in scene.objects), name
            if scene.word:
                _, band_top, _, band_bottom = scene.word_band
                band = [px[x, y] for x in range(scene.size) for y in range(band_top, band_bottom + 1)]
                assert (255, 255, 255) in band and (0, 0, 0) in band  # black text on a white box
            else:
                assert (0, 0, 0) not in colours


def test_bigger_objects_cover_more_pixels():
    scene = generate_scene(0, 0, max_objects=1)
    image = render(scene)
    area = {rgb: count for count, rgb in image.getcolors(maxcolors=1 << 16)}[COLOURS[scene.objects[0].colour]]
    side = 2 * scene.objects[0].r + 1
    expected = {"square": side * side, "circle": 0.785 * side * side, "triangle": 0.5 * side * side}
    assert abs(area - expected[scene.objects[0].kind]) < 0.15 * side * side


# ---------------------------------------------------------------------------------------------
# Determinism and datasets on disk

def read_dataset(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_prefix_property_other_seed_differs(tmp_path):
    a = read_dataset(write_dataset(tmp_path / "a", 12, seed=42, size=64))
    b = read_dataset(write_dataset(tmp_path / "b", 12, seed=42, size=64))
    assert a == b
    small = read_dataset(write_dataset(tmp_path / "small", 5, seed=42, size=64))
    for name, data in small.items():
        if name.startswith("images/"):
            assert data == a[name]
        elif name.endswith(".jsonl"):
            assert a[name].startswith(data) and len(a[name]) > len(data)
    assert len([n for n in a if n.startswith("images/")]) == 12
    other = read_dataset(write_dataset(tmp_path / "c", 12, seed=43, size=64))
    assert other["scenes.jsonl"] != a["scenes.jsonl"]
    assert sum(other[n] != a[n] for n in a if n.startswith("images/")) >= 10
    assert generate_scene("x", 3) == generate_scene("x", 3) != generate_scene("x", 4)


def test_dataset_files_and_loaders(tmp_path):
    out = write_dataset(tmp_path / "d", 10, seed=1, size=64)
    scene_rows = load_scenes(out)
    assert [s["id"] for s in scene_rows] == list(range(10))
    for row in scene_rows:
        assert {"id", "image", "caption", "description", "objects", "word"} <= set(row)
        assert Path(row["image_path"]).is_file() and row["image"] == f"images/{row['id']:06d}.png"
        scene = generate_scene(1, row["id"], size=64)
        assert row["objects"] == scene.to_dict()["objects"]
    questions = load_questions(out)
    assert questions and all({"image", "question", "answer", "type", "scene"} <= set(q) for q in questions)
    assert all((out / q["image"]).is_file() for q in questions)
    counts = Counter(q["scene"] for q in questions)
    assert all(counts[i] == len(generate_scene(1, i, size=64).questions) for i in range(10))
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["questions"] == len(questions) and sum(meta["question_types"].values()) == len(questions)
    assert {q["type"] for q in load_questions(out, "count")} == {"count"}
    with pytest.raises(InputError, match="unknown question type"):
        load_questions(out, ["colour", "texture"])
    with pytest.raises(InputError, match="not a scenes dataset"):
        load_questions(tmp_path)


def test_interrupted_write_leaves_nothing_and_keeps_the_old_dataset(tmp_path, monkeypatch):
    render_module = sys.modules["mmagent.scenes.drawing"]

    calls = {"n": 0}
    real = render_module.render

    def flaky(scene):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(scene)

    monkeypatch.setattr(render_module, "render", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "new", 10, seed=0, size=32)
    assert list(tmp_path.iterdir()) == []  # no dataset, no temporary directory

    monkeypatch.setattr(render_module, "render", real)
    old = read_dataset(write_dataset(tmp_path / "d", 3, seed=0, size=32))
    monkeypatch.setattr(render_module, "render", flaky)
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "d", 10, seed=9, size=32, overwrite=True)
    assert read_dataset(tmp_path / "d") == old
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_overwrite_rules(tmp_path):
    out = write_dataset(tmp_path / "d", 2, size=32)
    with pytest.raises(InputError, match="not empty"):
        write_dataset(out, 2, size=32)
    write_dataset(out, 3, seed=5, size=32, overwrite=True)
    assert len(load_scenes(out)) == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    (tmp_path / "empty").mkdir()
    write_dataset(tmp_path / "empty", 1, size=32)  # an empty directory is fine without overwrite
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(InputError, match="not a scenes dataset"):
        write_dataset(precious, 1, size=32, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "n must be"), (dict(n=-3), "n must be"), (dict(n=2.5), "n must be"),
    (dict(size=31), "size must be"), (dict(max_objects=0), "max_objects"), (dict(word_prob=1.5), "word_prob"),
])
def test_bad_options_are_input_errors(tmp_path, kwargs, message):
    args = {"n": 2, **kwargs}
    with pytest.raises(InputError, match=message):
        write_dataset(tmp_path / "d", args.pop("n"), **args)
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------------------------
# CLI and import weight

def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MMAGENT, "scenes", *args], capture_output=True, text=True, timeout=60)


def test_cli_writes_dataset_and_json_summary(tmp_path):
    result = run("--n", "6", "--seed", "2", "--size", "64", "--out", str(tmp_path / "d"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["scenes"] == 6 and summary["size"] == 64
    assert summary["questions"] == len(load_questions(tmp_path / "d"))
    assert set(summary["question_types"]) == set(QUESTION_TYPES)
    assert len(list((tmp_path / "d" / "images").glob("*.png"))) == 6
    table = run("--n", "3", "--size", "32", "--out", str(tmp_path / "d"), "--overwrite")
    assert table.returncode == 0 and "existence" in table.stdout and "Wrote 3 scenes" in table.stdout


def test_cli_bad_arguments_are_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    for args, fragment in [
        (("--n", "0", "--out", str(tmp_path / "a")), "n must be"),
        (("--n", "2", "--size", "16", "--out", str(tmp_path / "a")), "size must be"),
        (("--n", "2", "--out", str(tmp_path / "file")), "not a directory"),
        (("--n", "2", "--out", str(tmp_path / "file" / "sub")), "not a directory"),
        (("--n", "2", "--out", str(tmp_path / "full")), "not empty"),
    ]:
        result = run(*args)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], result.stderr
    assert not (tmp_path / "a").exists()


def test_import_pulls_in_no_torch_pil_or_numpy():
    code = ("import sys, mmagent.scenes\n"
            "print(','.join(m for m in ('torch', 'PIL', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr
