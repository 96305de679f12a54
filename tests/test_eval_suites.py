"""Suites as YAML (`mmagent.eval.suites`) and the built-in suites' generators
(`mmagent.eval.generators`): loading and its errors, determinism, limits, media that decodes, the
scene questions' evidence rules and the scene seeds' distance from every training seed."""

from __future__ import annotations

import io
import json
import re
import wave
from pathlib import Path

import pytest

from mmagent.content import load_media
from mmagent.errors import InputError
from mmagent.eval import generators as gen
from mmagent.eval.core import EvalItem, Suite
from mmagent.eval.suites import KEYS, builtin_suites, load_suite_file
from mmagent.scenes import QUESTION_TYPES, generate_scene
from mmagent.scenes.model import Question, Scene, SceneObject

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = {"asr", "extraction", "ocr", "receipts-qa", "scenes-caption", "scenes-vqa"}
IMAGE_GENERATORS = {"scenes_vqa": gen.scenes_vqa, "scenes_caption": gen.scenes_caption, "ocr": gen.ocr,
                    "extraction": gen.extraction, "receipts_qa": gen.receipts_qa}


def write(folder: Path, text: str, name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# -- YAML suites --------------------------------------------------------------------------------


def test_a_full_suite_file_loads_with_its_data_path_resolved(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "items.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    path = write(tmp_path, """
name: my-suite
description: My items, read from a file
source: data/items.jsonl
metric: contains
prompt: "Answer briefly. {question}"
pipelines: [tools, unified]
limit: 12
mapping: {question: q, answer: answers}
extra_metrics: [exact_match, anls]
max_tokens: 48
""")
    suite = load_suite_file(path)
    assert suite == Suite(name="my-suite", description="My items, read from a file", source="",
                          metric="contains", prompt="Answer briefly. {question}", pipelines=("tools", "unified"),
                          limit=12, extra_metrics=("exact_match", "anls"), max_tokens=48,
                          origin=str(path.resolve()))
    assert suite.source == str((tmp_path / "data" / "items.jsonl").resolve())
    assert suite.mapping == {"question": "q", "answer": "answers"}
    assert suite.generator() is None
    assert set(KEYS) == {"name", "description", "source", "metric", "prompt", "pipelines", "limit", "mapping",
                         "extra_metrics", "max_tokens"}


def test_a_minimal_suite_file_takes_the_defaults_and_a_folder_source(tmp_path):
    (tmp_path / "ds").mkdir()
    suite = load_suite_file(write(tmp_path, "name: tiny\nsource: ds\n"))
    assert (suite.metric, suite.prompt, suite.pipelines, suite.limit, suite.extra_metrics, suite.max_tokens,
            suite.description) == ("exact_match", "{question}", ("tools", "adapter"), None, (), None, "")
    assert suite.source == str((tmp_path / "ds").resolve())


def test_generator_and_hugging_face_sources(tmp_path):
    suite = load_suite_file(write(tmp_path, "name: g\nsource: mmagent.eval.generators:ocr\n"))
    assert suite.source == "mmagent.eval.generators:ocr" and suite.generator() is gen.ocr
    suite = load_suite_file(write(tmp_path, "name: h\nsource: hf:lmms-lab/textvqa:validation\n"))
    assert suite.source == "hf:lmms-lab/textvqa:validation" and suite.generator() is None


BAD_FILES = [
    ("name: x\nsource: mmagent.eval.generators:ocr\ncolour: red\n", "colour"),
    ("name: x\nsource: mmagent.eval.generators:ocr\norigin: /tmp\n", "origin"),
    ("description: no name\nsource: mmagent.eval.generators:ocr\n", "name"),
    ("name: x\n", "source"),
    ("name: 12\nsource: mmagent.eval.generators:ocr\n", "name"),
    ("name: two words\nsource: mmagent.eval.generators:ocr\n", "name"),
    ("name: x\nsource: mmagent.eval.generators:ocr\nlimit: '60'\n", "limit"),
    ("name: x\nsource: mmagent.eval.generators:ocr\nlimit: 0\n", "limit"),
    ("name: x\nsource: mmagent.eval.generators:ocr\nlimit: true\n", "limit"),
    ("name: x\nsource: mmagent.eval.generators:ocr\nmax_tokens: 2.5\n", "max_tokens"),
    ("name: x\nsource: mmagent.eval.generators:ocr\npipelines: tools,adapter\n", "pipelines"),
    ("name: x\nsource: mmagent.eval.generators:ocr\npipelines: []\n", "pipelines"),
    ("name: x\nsource: mmagent.eval.generators:ocr\nextra_metrics: [bleu, 3]\n", "extra_metrics"),
    ("name: x\nsource: mmagent.eval.generators:ocr\nmapping: [question]\n", "mapping"),
    ("name: x\nsource: mmagent.eval.generators:ocr\nmetric: [anls]\n", "metric"),
    ("name: x\nsource: mmagent.eval.generators:ocr\ndescription: {a: 1}\n", "description"),
    ("name: x\nsource: mmagent.eval.generators:ocr\nprompt: 'Say {question'\n", "prompt"),
    ("name: x\nsource: [a, b]\n", "source"),
    ("name: x\nsource: missing/items.jsonl\n", "source"),
    ("name: x\nsource: no_such_module_xyz:make\n", "source"),
    ("name: x\nsource: mmagent.eval.generators:no_such_function\n", "source"),
    ("name: x\nsource: mmagent.eval.generators:FULL_SIZE\n", "source"),
    ("name: x\nsource: 'hf:'\n", "source"),
]


@pytest.mark.parametrize("text, key", BAD_FILES, ids=[f"{k}-{i}" for i, (_, k) in enumerate(BAD_FILES)])
def test_a_bad_suite_file_is_an_input_error_naming_the_file_and_the_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_suite_file(path)
    message = str(caught.value)
    assert str(path) in message and f"'{key}'" in message and "\n" not in message


@pytest.mark.parametrize("text, what", [
    ("name: x\nsource: [unclosed\n", "invalid YAML at line"),
    ("name: x\n  source: y\n", "invalid YAML at line"),
    ("- name: x\n", "must be a mapping"),
    ("", "an empty file"),
    ("just a string", "must be a mapping"),
])
def test_a_file_that_is_not_a_suite_mapping_is_an_input_error(tmp_path, text, what):
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=re.escape(what)) as caught:
        load_suite_file(path)
    assert str(path) in str(caught.value)


def test_a_missing_or_unreadable_suite_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_suite_file(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="is a folder"):
        load_suite_file(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(InputError, match="not UTF-8"):
        load_suite_file(tmp_path / "bin.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\nsource: x\n")
    with pytest.raises(InputError, match="invalid YAML"):
        load_suite_file(path)


# -- the built-in suites ------------------------------------------------------------------------


def test_builtin_suites_are_the_yaml_files_in_a_stable_order():
    suites = builtin_suites()
    assert [s.name for s in suites] == sorted(BUILTIN)
    assert [s.name for s in builtin_suites()] == [s.name for s in suites]
    for suite in suites:
        assert Path(suite.origin).name == f"{suite.name}.yaml"
        assert suite.description and "\n" not in suite.description and len(suite.description) < 120
        assert suite.generator() is getattr(gen, suite.name.replace("-", "_"))
        assert suite.prompt == "{question}" and suite.pipelines == ("tools", "adapter")
        assert suite.limit and suite.limit <= gen.FULL_SIZE[suite.name.replace("-", "_")]


def test_builtin_suites_are_registered_and_their_metrics_exist():
    from mmagent.eval import get_metrics, get_suites

    assert BUILTIN <= {s.name for s in get_suites()}
    metrics = {m.name for m in get_metrics()}
    for suite in builtin_suites():
        assert suite.metric in metrics and set(suite.extra_metrics) <= metrics, suite.name
    expected = {"scenes-vqa": ("scene_answer", ()), "scenes-caption": ("scene_caption", ("bleu",)),
                "ocr": ("anls", ("exact_match", "contains")), "asr": ("wer", ()), "extraction": ("field_match", ()),
                "receipts-qa": ("contains", ("exact_match",))}
    assert {s.name: (s.metric, s.extra_metrics) for s in builtin_suites()} == expected


def test_the_suites_folder_ships_as_package_data():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"mmagent.eval" = ["suites/*.yaml"]' in pyproject


# -- generators: the shared contract ------------------------------------------------------------


def items_and_bytes(fn, limit, seed, folder):
    items = list(fn(limit, seed, folder))
    files = {Path(p).name: Path(p).read_bytes() for item in items for p in item.images + item.audio}
    return items, files


def relative(items: list[EvalItem], folder: Path) -> list[dict]:
    rows = []
    for item in items:
        row = item.to_json()
        row["images"] = [str(Path(p).relative_to(folder)) for p in item.images]
        row["audio"] = [str(Path(p).relative_to(folder)) for p in item.audio]
        rows.append(row)
    return rows


@pytest.mark.parametrize("name", sorted(IMAGE_GENERATORS))
def test_generators_are_deterministic_in_ids_items_and_file_bytes(tmp_path, name):
    fn = IMAGE_GENERATORS[name]
    first, first_files = items_and_bytes(fn, 9, 3, tmp_path / "a")
    second, second_files = items_and_bytes(fn, 9, 3, tmp_path / "b")
    assert relative(first, tmp_path / "a") == relative(second, tmp_path / "b")
    assert first_files == second_files and first_files
    ids = [item.id for item in first]
    assert len(set(ids)) == len(ids) == 9
    other = [item.to_json() for item in fn(9, 4, tmp_path / "a")]
    assert other != [item.to_json() for item in first]  # another seed, other items
    assert {p for item in fn(9, 4, tmp_path / "a") for p in item.images}.isdisjoint(
        {p for item in first for p in item.images})  # ... in other files


@pytest.mark.parametrize("name", sorted(IMAGE_GENERATORS))
def test_generators_honour_the_limit_and_a_shorter_run_is_a_prefix(tmp_path, name):
    fn = IMAGE_GENERATORS[name]
    long = list(fn(7, 0, tmp_path))
    short = list(fn(3, 0, tmp_path))
    assert len(long) == 7 and len(short) == 3
    assert [i.to_json() for i in short] == [i.to_json() for i in long[:3]]
    assert list(fn(0, 0, tmp_path / "none")) == []
    assert not any((tmp_path / "none").iterdir())


@pytest.mark.parametrize("name", sorted(IMAGE_GENERATORS))
def test_generated_media_exist_are_absolute_and_decode(tmp_path, name):
    for item in IMAGE_GENERATORS[name](6, 0, tmp_path):
        assert item.images and not item.audio
        for path in item.images:
            assert Path(path).is_absolute() and Path(path).parent == tmp_path
            part = load_media(path, expect="image")
            assert part.width >= 32 and part.height >= 16
        assert item.question and item.answer and item.type


@pytest.mark.parametrize("name", sorted(IMAGE_GENERATORS))
def test_a_rerun_leaves_right_files_alone_and_repairs_wrong_ones(tmp_path, name):
    fn = IMAGE_GENERATORS[name]
    items = list(fn(4, 0, tmp_path))
    paths = sorted({Path(p) for item in items for p in item.images})
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}
    good = paths[0].read_bytes()
    paths[-1].write_bytes(b"not a png")
    assert [i.to_json() for i in fn(4, 0, tmp_path)] == [i.to_json() for i in items]
    for path in paths[:-1]:
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == before[path], "rewritten"
    load_media(paths[-1], expect="image")
    assert paths[0].read_bytes() == good
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("limit, seed, message", [(-1, 0, "limit"), (2.5, 0, "limit"), (True, 0, "limit"),
                                                  (3, "0", "seed"), (3, None, "seed")])
def test_generators_reject_bad_arguments(tmp_path, limit, seed, message):
    for fn in (*IMAGE_GENERATORS.values(), gen.asr):
        with pytest.raises(InputError, match=message):
            next(iter(fn(limit, seed, tmp_path)))


def test_a_media_folder_that_is_a_file_is_an_input_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        next(iter(gen.ocr(2, 0, tmp_path / "file")))


def test_no_limit_takes_the_full_size(tmp_path, monkeypatch):
    monkeypatch.setitem(gen.FULL_SIZE, "ocr", 5)
    assert len(list(gen.ocr(None, 0, tmp_path))) == 5


def test_prompts_fill_for_every_builtin_item(tmp_path):
    suites = {s.name: s for s in builtin_suites()}
    for name, fn in IMAGE_GENERATORS.items():
        for item in fn(4, 0, tmp_path):
            assert suites[name.replace("_", "-")].prompt_for(item) == item.question


# -- scenes-vqa ---------------------------------------------------------------------------------


def test_scenes_vqa_asks_every_question_of_whole_scenes_in_order(tmp_path):
    items = list(gen.scenes_vqa(150, 0, tmp_path))
    assert len(items) == 150
    assert {i.type for i in items} == set(QUESTION_TYPES)  # read included
    scene_index = -1
    for item in items:
        scene = generate_scene(gen.scene_seed(0), item.meta["scene"], size=128)
        number = int(item.id.split("-q")[1])
        question = scene.questions[number]
        assert item.id == f"s{scene.index}-q{number}"
        assert (item.question, item.answer, item.type) == (question.question, [question.answer], question.type)
        assert item.meta["description"] == scene.description and item.meta["caption"] == scene.caption
        assert item.meta["scene_seed"] == gen.scene_seed(0)
        assert scene.index in (scene_index, scene_index + 1)  # scenes in order, none skipped
        if scene.index == scene_index + 1:
            assert number == 0  # a scene starts at its first question
        scene_index = scene.index
    last = items[-1].meta["scene"]
    for index in range(last):  # whole scenes before the last one
        assert sum(i.meta["scene"] == index for i in items) == len(generate_scene(gen.scene_seed(0), index).questions)
    part = load_media(items[0].images[0], expect="image")
    assert (part.width, part.height) == (128, 128)


def test_scenes_vqa_reference_answers_score_full_marks_and_wrong_ones_zero(tmp_path):
    from mmagent.eval import get_metrics

    metric = get_metrics().get("scene_answer")
    for item in gen.scenes_vqa(40, 0, tmp_path):
        assert metric(f"The answer is {item.answer[0]}.", item)["score"] == 1.0
        wrong = {"yes": "no", "no": "yes"}.get(item.answer[0], "purple" if item.answer[0] != "purple" else "red")
        if item.type in ("existence", "position", "comparison", "colour"):
            assert metric(wrong, item)["score"] == 0.0


def phrase_in(phrase: str, text: str) -> bool:
    words = re.findall(r"[a-z0-9]+", text.lower())
    wanted = re.findall(r"[a-z0-9]+", phrase.lower())
    return any(words[i:i + len(wanted)] == wanted for i in range(len(words) - len(wanted) + 1))


def test_scene_evidence_is_in_the_true_description_and_never_in_the_generic_caption(tmp_path):
    """The evidence is what a text must state: the true description states everything, so every
    fact is in it; the generic caption (no colours, no words) states none."""
    items = list(gen.scenes_vqa(400, 1, tmp_path))
    for item in items:
        assert item.evidence, item.id
        for fact in item.evidence:
            assert phrase_in(fact, item.meta["description"]), (item.id, fact)
            assert not phrase_in(fact, item.meta["caption"]), (item.id, fact)


def scene(objects: list[tuple[str, str, str, int, int]], word: str | None = None) -> Scene:
    made = [SceneObject(kind, colour, size, x, y, 10) for kind, colour, size, x, y in objects]
    return Scene(seed="t", index=0, size=128, background=(240, 240, 240), objects=made, word=word, word_band=None)


# red circle top left, blue square top right, small red circle bottom centre, large red circle middle
TEST_SCENE = scene([("circle", "red", "small", 20, 20), ("square", "blue", "large", 110, 15),
                    ("circle", "red", "small", 64, 110), ("triangle", "green", "large", 64, 64)], word="STOP")
EVERY = ["red circle", "blue square", "green triangle", "red circle"]  # description order


@pytest.mark.parametrize("qtype, question, answer, evidence", [
    ("existence", "Is there a blue square?", "yes", ["blue square"]),
    ("existence", "Is there a green circle?", "no", EVERY),
    ("colour", "What colour is the square?", "blue", ["blue square"]),
    ("shape", "What shape is the green object?", "triangle", ["green triangle"]),
    ("count", "How many shapes are there?", "4", EVERY),
    ("count", "How many circles are there?", "2", ["red circle", "red circle"]),
    ("count", "How many red shapes are there?", "2", ["red circle", "red circle"]),
    ("count", "How many yellow shapes are there?", "0", EVERY),
    ("position", "Is the blue square to the right of the green triangle?", "yes", ["blue square", "green triangle"]),
    ("position", "Is the large blue square above the green triangle?", "yes", ["large blue square", "green triangle"]),
    ("comparison", "Are there more circles than squares?", "yes", ["red circle", "blue square", "red circle"]),
    ("comparison", "Are there more blue shapes than green shapes?", "no", ["blue square", "green triangle"]),
    ("comparison", "Are there more purple shapes than red shapes?", "no", EVERY),
    ("read", "What word is written in the image?", "stop", ["STOP"]),
])
def test_scene_evidence_rules(qtype, question, answer, evidence):
    assert gen.scene_evidence(TEST_SCENE, Question(qtype, question, answer)) == evidence


def test_scene_evidence_refuses_a_question_it_does_not_know():
    with pytest.raises(ValueError, match="update scene_evidence"):
        gen.scene_evidence(TEST_SCENE, Question("colour", "Which colour is the square?", "blue"))


def test_scene_evidence_knows_every_generated_question_form():
    for index in range(300):
        generated = generate_scene("evidence-forms", index)
        for question in generated.questions:
            gen.scene_evidence(generated, question)


def training_seed_prefixes() -> set[str]:
    """The scene seed namespaces of the training code: make_scenes(f"<prefix>-{recipe.seed}", ...)."""
    prefixes = set()
    for path in (ROOT / "mmagent" / "train").glob("*.py"):
        for call in re.findall(r"make_scenes\(\s*f?[\"']([^\"']*)[\"']", path.read_text()):
            assert call.endswith("{recipe.seed}"), f"{path.name}: unexpected scene seed {call!r}"
            prefixes.add(call.removesuffix("{recipe.seed}"))
    return prefixes


def test_the_eval_scenes_are_disjoint_from_every_training_seed(tmp_path):
    prefixes = training_seed_prefixes()
    assert {"train-", "eval-", "calibrate-", "adapter-train-", "heldout-"} <= prefixes
    used_elsewhere = {"pytest-heldout", "telephone-1"}  # tests, the telephone benchmark
    for seed in range(-3, 200):
        name = gen.scene_seed(seed)
        assert name not in used_elsewhere
        for prefix in prefixes:  # recipe.seed is an int: no int makes the suite's seed string
            assert not re.fullmatch(re.escape(prefix) + r"-?\d+", name), (name, prefix)
    items = list(gen.scenes_vqa(20, 0, tmp_path))
    assert {i.meta["scene_seed"] for i in items} == {gen.scene_seed(0)}
    trained = {generate_scene(f"{p}0", i).description for p in prefixes for i in range(5)}
    assert not trained & {i.meta["description"] for i in items}


# -- scenes-caption -----------------------------------------------------------------------------


def test_scenes_caption_is_one_item_per_scene_with_its_objects(tmp_path):
    items = list(gen.scenes_caption(12, 0, tmp_path))
    vqa = {i.meta["scene"]: i for i in gen.scenes_vqa(60, 0, tmp_path)}
    assert [i.id for i in items] == [f"s{n}" for n in range(12)]
    for n, item in enumerate(items):
        scene_ = generate_scene(gen.scene_seed(0), n)
        assert item.question == "Describe the image."
        assert item.answer == [scene_.description, scene_.caption]
        assert sorted(map(tuple, item.meta["objects"])) == sorted((o.colour, o.kind) for o in scene_.objects)
        assert item.type == f"objects-{len(scene_.objects)}" and item.meta["word"] == scene_.word
        if n in vqa:
            assert item.images == vqa[n].images  # the same scene, the same file


def test_scenes_caption_references_score_full_marks(tmp_path):
    from mmagent.eval import get_metrics

    metric = get_metrics().get("scene_caption")
    for item in gen.scenes_caption(5, 0, tmp_path):
        assert metric(item.answer[0], item)["score"] == 1.0
        assert metric(item.answer[1], item)["score"] == 0.0  # the generic caption names no colour


# -- OCR ----------------------------------------------------------------------------------------


def test_ocr_items_are_words_phrases_and_numbers(tmp_path):
    items = list(gen.ocr(30, 0, tmp_path))
    assert [i.type for i in items[:3]] == ["word", "phrase", "number"]
    assert {i.type for i in items} == {"word", "phrase", "number"}
    for item in items:
        assert item.question == "What text is written in the image? Reply with the text only."
        assert item.id.startswith("ocr-") and len(item.answer) == 1 and item.evidence == item.answer
        text = item.answer[0]
        if item.type == "word":
            assert " " not in text
        elif item.type == "phrase":
            assert 2 <= len(text.split()) <= 4
        else:
            assert re.fullmatch(r"[$0-9./:]+", text)
    assert any(re.fullmatch(r"\d+\.\d\d", i.answer[0]) for i in items)  # a price like 9.75
    sizes = {load_media(i.images[0], expect="image").height for i in items}
    assert len(sizes) > 5  # font sizes and paddings vary


@pytest.mark.slow
def test_ocr_images_are_legible_to_the_offline_ocr(tmp_path):
    pytest.importorskip("rapidocr_onnxruntime")
    from mmagent.backends import get_backend

    reader = get_backend("ocr", "rapidocr", threads=1)
    items = list(gen.ocr(12, 0, tmp_path))
    read = [reader.read(load_media(i.images[0], expect="image")).text.strip() for i in items]
    right = sum(r.replace(" ", "").lower() == i.answer[0].replace(" ", "").lower() for r, i in zip(read, items))
    assert right >= 10, list(zip(read, [i.answer[0] for i in items]))


# -- extraction ---------------------------------------------------------------------------------


def test_extraction_receipts_have_a_shop_items_and_their_total(tmp_path):
    items = list(gen.extraction(20, 0, tmp_path))
    assert {i.type for i in items} <= {"items-2", "items-3", "items-4"} and len({i.type for i in items}) > 1
    for item in items:
        assert set(item.answer) == {"shop", "total"} and item.answer["shop"] in gen.SHOPS
        prices = [float(price) for _, price in item.meta["items"]]
        assert len(prices) == int(item.type.split("-")[1])
        assert item.answer["total"] == round(sum(prices), 2)
        assert item.evidence == [item.answer["shop"], f"{item.answer['total']:.2f}"]
        assert '{"shop": "...", "total": 0.0}' in item.question


def test_extraction_reference_scores_full_marks(tmp_path):
    from mmagent.eval import get_metrics

    metric = get_metrics().get("field_match")
    for item in gen.extraction(5, 0, tmp_path):
        assert metric(json.dumps(item.answer), item)["score"] == 1.0
        assert metric(json.dumps({**item.answer, "total": item.answer["total"] + 1}), item)["score"] == 0.5


def test_receipt_questions_ask_the_extraction_receipts_their_total_and_their_shop(tmp_path):
    """Item 2k asks receipt k's total (as printed), 2k + 1 its shop, on the very image the
    extraction suite draws for receipt k; the reference answer scores full marks, another shop none."""
    from mmagent.eval import get_metrics

    asked = list(gen.receipts_qa(6, 0, tmp_path / "qa"))
    receipts = list(gen.extraction(3, 0, tmp_path / "ex"))
    assert [i.type for i in asked] == ["receipt-total", "receipt-shop"] * 3
    assert len({i.id for i in asked}) == 6
    contains = get_metrics().get("contains")
    for k, receipt in enumerate(receipts):
        total, shop = asked[2 * k], asked[2 * k + 1]
        assert total.answer == f"{receipt.answer['total']:.2f}" and shop.answer == receipt.answer["shop"]
        assert Path(total.images[0]).read_bytes() == Path(receipt.images[0]).read_bytes() == \
            Path(shop.images[0]).read_bytes()
        assert contains(f"The total is {total.answer}.", total)["score"] == 1.0
        other = next(s for s in gen.SHOPS if s != shop.answer and shop.answer not in s)
        assert contains(f"It is from {other}.", shop)["score"] == 0.0


@pytest.mark.slow
def test_receipts_are_legible_to_the_offline_ocr(tmp_path):
    pytest.importorskip("rapidocr_onnxruntime")
    from mmagent.backends import get_backend

    reader = get_backend("ocr", "rapidocr", threads=1)
    for item in gen.extraction(4, 0, tmp_path):
        text = reader.read(load_media(item.images[0], expect="image")).text.replace(" ", "")
        shop, total = item.evidence
        assert shop.replace(" ", "") in text and total in text, text


# -- ASR ----------------------------------------------------------------------------------------


class FakeVoice:
    """Speech stand-in: a WAV whose samples spell the text (deterministic, instant)."""

    name, model_id, options = "fake", "fake-voice", {"noise_scale": 0}

    def __init__(self):
        self.calls = []

    def synthesize(self, text):
        self.calls.append(text)
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16000)
            out.writeframes(text.encode().ljust(16000, b"\0"))
        return load_media(buffer.getvalue(), expect="audio")


def test_asr_items_are_spoken_sentences_written_once(tmp_path, monkeypatch):
    voice = FakeVoice()
    monkeypatch.setattr(gen, "_speech_backend", lambda: voice)
    items = list(gen.asr(6, 0, tmp_path))
    assert [i.id for i in items] == [f"asr-{n}" for n in range(6)]
    assert [i.type for i in items] == ["integer", "decimal", "year"] * 2
    assert voice.calls == [i.answer[0] for i in items]
    for item in items:
        assert item.question == "Repeat exactly what is said in the recording."
        assert not item.images and len(item.audio) == 1 and item.evidence == item.answer
        assert re.search(r"\d", item.answer[0]) and any(n in item.answer[0] for n in gen.NAMES + gen.CITIES)
        assert load_media(item.audio[0], expect="audio").duration > 0
    assert re.search(r"\d+\.\d", items[1].answer[0]) and re.search(r"\b(19|20)\d\d\b", items[2].answer[0])
    again = list(gen.asr(6, 0, tmp_path))
    assert [i.to_json() for i in again] == [i.to_json() for i in items]
    assert len(voice.calls) == 6  # resume: nothing synthesized again
    assert [i.to_json() for i in gen.asr(3, 0, tmp_path)] == [i.to_json() for i in items[:3]]


def test_asr_without_a_tts_backend_is_an_input_error(tmp_path, monkeypatch):
    import mmagent.backends

    def missing(*args, **kwargs):
        from mmagent.errors import BackendNotFoundError

        raise BackendNotFoundError("no backend for role 'tts'")

    monkeypatch.setattr(mmagent.backends, "get_backend", missing)
    with pytest.raises(InputError, match="asr suite .* tts backend.*not available"):
        list(gen.asr(2, 0, tmp_path))


def test_asr_when_speech_fails_is_an_input_error(tmp_path, monkeypatch):
    class Broken(FakeVoice):
        def synthesize(self, text):
            raise ImportError("No module named 'piper'")

    monkeypatch.setattr(gen, "_speech_backend", Broken)
    with pytest.raises(InputError, match="cannot synthesize speech.*piper"):
        list(gen.asr(2, 0, tmp_path))


@pytest.mark.slow
def test_asr_with_the_offline_voice_is_deterministic(tmp_path, zoo_model, models_home, monkeypatch):
    zoo_model("piper-en-us-joe-medium")
    monkeypatch.setenv("MMAGENT_HOME", str(models_home))
    first, first_files = items_and_bytes(gen.asr, 2, 0, tmp_path / "a")
    second, second_files = items_and_bytes(gen.asr, 2, 0, tmp_path / "b")
    assert relative(first, tmp_path / "a") == relative(second, tmp_path / "b")
    assert first_files == second_files
    for item in first:
        audio = load_media(item.audio[0], expect="audio")
        assert audio.sample_rate == 22050 and 1.0 < audio.duration < 10.0
