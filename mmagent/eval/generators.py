"""The built-in suites' item generators: `(limit, seed, media_dir) -> Iterator[EvalItem]`.

Every item depends on (seed, its index) alone: the same arguments give the same items (ids,
questions, answers, media paths) and the same media bytes, and a shorter run is a prefix of a
longer one. Media files are written under `media_dir` with stable names (the suite, the seed and
the index in the name) atomically, and a file that already holds the right bytes is left alone, so
`--resume` and several workers sharing a folder see the same paths. `limit=None` takes the
generator's full size (`FULL_SIZE`).

    scenes_vqa      scene-world questions of every type (scene_answer)        item "s12-q3"
    scenes_caption  one "Describe the image." per scene (scene_caption)       item "s12"
    ocr             rendered words, phrases and numbers (ANLS)                 item "ocr-7"
    asr             synthesized sentences with numbers and names (WER)        item "asr-7"
    extraction      rendered receipts -> {"shop", "total"} (field_match)       item "receipt-7"
    receipts_qa     the same receipts asked their total or their shop (contains) item "receipt-7-total"

PIL and the TTS backend are imported when a generator runs, not with this module.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import secrets
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError
from .core import EvalItem

#: Items a generator makes when no limit is given.
FULL_SIZE = {"scenes_vqa": 1000, "scenes_caption": 200, "ocr": 300, "asr": 100, "extraction": 200, "receipts_qa": 200}

#: The scene seed of the eval suites is SCENE_SEED_PREFIX + seed: a namespace no training run uses
#: (training draws from "train-N", "eval-N", "calibrate-N", "adapter-train-N", "heldout-N"; the
#: tests from "pytest-heldout", the telephone benchmark from "telephone-1"; docs/scene-vlm.md).
SCENE_SEED_PREFIX = "mmagent-suite-"
#: The image side the shipped scene VLM was trained on (mmagent.train.scene_data.IMAGE_SIZE).
SCENE_SIZE = 128

VQA_QUESTION = "{question}"
CAPTION_QUESTION = "Describe the image."
OCR_QUESTION = "What text is written in the image? Reply with the text only."
ASR_QUESTION = "Repeat exactly what is said in the recording."
RECEIPT_QUESTIONS = {"receipt-total": "What is the total on the receipt?",
                     "receipt-shop": "Which shop is this receipt from?"}
EXTRACTION_QUESTION = ('Extract the shop name and the total from this receipt. Reply with JSON only: '
                       '{"shop": "...", "total": 0.0}')


# -- shared -------------------------------------------------------------------------------------


def _arguments(name: str, limit: int | None, seed: int, media_dir: str | os.PathLike[str]) -> tuple[int, Path]:
    if limit is None:
        limit = FULL_SIZE[name]
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InputError(f"{name}: limit must be a non-negative integer or None, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"{name}: seed must be an integer, got {seed!r}")
    folder = Path(media_dir).expanduser().absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{name}: media folder {folder} is not a folder") from None
    return limit, folder


def write_once(path: Path, data: bytes) -> str:
    """Write `data` to `path` unless it already holds exactly that; atomically (a temporary file in
    the same folder, then a rename), so a reader or a killed run never sees half a file. The path."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return str(path)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return str(path)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _font(size: int):
    """Pillow's bundled scalable font (Aileron) at `size` px: the same glyphs on every machine."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, ImportError, OSError) as exc:
        raise InputError(f"rendering text needs Pillow >= 10.1 with FreeType (ImageFont.load_default(size=...)): "
                         f"{type(exc).__name__}: {exc}") from None


# -- scenes -------------------------------------------------------------------------------------


def scene_seed(seed: int) -> str:
    """The `generate_scene` seed of the eval suites' scenes for run seed `seed`."""
    return f"{SCENE_SEED_PREFIX}{seed}"


def _scenes(seed: int, folder: Path) -> Iterator[tuple[Any, str]]:
    """(scene, its image path) for scenes 0, 1, 2... of the suite's seed, each image written once."""
    from ..scenes import generate_scene, render

    index = 0
    while True:
        scene = generate_scene(scene_seed(seed), index, size=SCENE_SIZE)
        path = write_once(folder / f"scene-{seed}-{index:05d}.png", _png(render(scene)))
        yield scene, path
        index += 1


def _object_phrase(obj) -> str:
    return f"{obj.colour} {obj.kind}"


def _in_reading_order(scene) -> list:
    """The objects in the order the scene's description lists them."""
    from ..scenes.vocab import ROWS

    return sorted(scene.objects, key=lambda o: (ROWS.index(o.row(scene.size)), o.x))


def _group(scene, group: str) -> list:
    """The objects a question's group names: "shapes", "circles", "red shapes"."""
    from ..scenes.vocab import COLOURS, PLURAL

    singular = {plural: kind for kind, plural in PLURAL.items()}
    objects = _in_reading_order(scene)
    if group == "shapes":
        return objects
    if group in singular:
        return [o for o in objects if o.kind == singular[group]]
    colour = group.removesuffix(" shapes")
    if colour in COLOURS and group.endswith(" shapes"):
        return [o for o in objects if o.colour == colour]
    raise ValueError(f"unknown group {group!r}")


_QUESTION_PATTERNS = {
    "existence": re.compile(r"Is there an? (\w+) (\w+)\?"),
    "colour": re.compile(r"What colour is the (\w+)\?"),
    "shape": re.compile(r"What shape is the (\w+) object\?"),
    "count": re.compile(r"How many (.+) are there\?"),
    "position": re.compile(r"Is the (.+?) (?:to the left of|to the right of|above|below) the (.+)\?"),
    "comparison": re.compile(r"Are there more (.+) than (.+)\?"),
    "read": re.compile(r"What word is written in the image\?"),
}


def scene_evidence(scene, question) -> list[str]:
    """The facts a caption or OCR text must state for `question`'s answer to be derivable from it
    (what telephone-loss attribution looks for in the tool chain's intermediate texts): every
    phrase listed is needed.

    An object is stated as "<colour> <kind>" ("red circle"), the words the scene's description uses
    ("a large red circle at the top left"), so a fact is present when that phrase is. An absence
    ("no", a count of 0) cannot be stated by one phrase, but a text that lists every object shows
    it: its evidence is every object in the scene.

        existence  "yes": the object asked about, ["blue circle"]; "no": every object
        colour     the one object of that kind, ["red circle"] (its colour is the answer)
        shape      the one object of that colour, ["red circle"] (its kind is the answer)
        count      one phrase per object counted, in the description's order (duplicates kept:
                   two red circles -> ["red circle", "red circle"]); a count of 0: every object.
                   Counts are derived by listing the objects: neither the scene captioner nor the
                   description writes a number, so digits or number words would never be found,
                   even in the true description
        position   the two objects as the question names them (["large red circle", "blue
                   square"]); their relation is a matter of coordinates a text states only roughly
                   ("at the top left"), so it is not looked for
        comparison one phrase per object of either group compared; when a group is empty (its
                   count, 0, is an absence): every object
        read       the word as printed (["STOP"])

    Objects are listed in the description's order (top row first, then left to right).
    """
    match = _QUESTION_PATTERNS[question.type].fullmatch(question.question)
    if match is None:
        raise ValueError(f"unexpected {question.type} question {question.question!r}: "
                         "mmagent.scenes.questions changed; update scene_evidence")
    every = [_object_phrase(o) for o in _in_reading_order(scene)]
    kind = question.type
    if kind == "existence":
        return [f"{match[1]} {match[2]}"] if question.answer == "yes" else every
    if kind == "colour":
        return [f"{question.answer} {match[1]}"]
    if kind == "shape":
        return [f"{match[1]} {question.answer}"]
    if kind == "count":
        return [_object_phrase(o) for o in _group(scene, match[1])] or every
    if kind == "position":
        return [match[1], match[2]]
    if kind == "comparison":
        first, second = _group(scene, match[1]), _group(scene, match[2])
        if not first or not second:
            return every
        return [_object_phrase(o) for o in _in_reading_order(scene) if o in first or o in second]
    return [scene.word]


def scenes_vqa(limit: int | None, seed: int, media_dir: str | os.PathLike[str]) -> Iterator[EvalItem]:
    """Every question of scenes 0, 1, 2... (128 px, as the shipped scene VLM sees them) of scene
    seed "mmagent-suite-<seed>", in order, until `limit` questions: all types of
    `mmagent.scenes.QUESTION_TYPES`, "read" on scenes with a printed word. Item "s<scene>-q<n>",
    type = the question type, answer = [the exact one-word answer], evidence = `scene_evidence`,
    meta = the scene's index, seed, true description and generic caption."""
    limit, folder = _arguments("scenes_vqa", limit, seed, media_dir)
    if limit == 0:
        return
    made = 0
    for scene, path in _scenes(seed, folder):
        for number, question in enumerate(scene.questions):
            yield EvalItem(
                id=f"s{scene.index}-q{number}", question=question.question, answer=[question.answer],
                images=[path], type=question.type, evidence=scene_evidence(scene, question),
                meta={"scene": scene.index, "scene_seed": scene.seed, "description": scene.description,
                      "caption": scene.caption})
            made += 1
            if made == limit:
                return


def scenes_caption(limit: int | None, seed: int, media_dir: str | os.PathLike[str]) -> Iterator[EvalItem]:
    """One item per scene (the same scenes and images as `scenes_vqa`): "Describe the image.",
    answer = [the true description, the generic caption], meta["objects"] = [[colour, kind], ...]
    in the description's order (and meta["word"], the printed word or None), evidence = the
    objects as "<colour> <kind>" and the word, type = "objects-<n>"."""
    limit, folder = _arguments("scenes_caption", limit, seed, media_dir)
    if limit == 0:
        return
    for scene, path in _scenes(seed, folder):
        objects = _in_reading_order(scene)
        yield EvalItem(
            id=f"s{scene.index}", question=CAPTION_QUESTION, answer=[scene.description, scene.caption],
            images=[path], type=f"objects-{len(objects)}",
            evidence=[_object_phrase(o) for o in objects] + ([scene.word] if scene.word else []),
            meta={"objects": [[o.colour, o.kind] for o in objects], "word": scene.word, "scene": scene.index,
                  "scene_seed": scene.seed})
        if scene.index + 1 == limit:
            return


# -- OCR ----------------------------------------------------------------------------------------

OCR_WORDS = (
    "PHARMACY", "Bakery", "EXIT", "Welcome", "Station", "LIBRARY", "Garden", "Museum", "PARKING", "Coffee",
    "Hotel", "TICKETS", "Florist", "Entrance", "Market", "OPEN", "Closed", "Pizza", "Cinema", "Harbour",
    "delivery", "reception", "Platform", "BANK", "Theatre", "Laundry", "Gallery", "Kitchen", "Stairs", "POLICE",
)
OCR_PHRASES = (
    "Fresh bread daily", "NO PARKING", "Open 24 hours", "Mind the gap", "Please wait here", "Staff only",
    "Keep door closed", "Sale ends Friday", "Push to open", "Fire exit", "Wet floor", "Out of order",
    "Lost and found", "Now hiring", "Free wifi inside", "Back in five minutes", "Hot drinks", "Room for rent",
    "Do not disturb", "Last train tonight", "City centre", "Cash only", "Ring the bell", "Sold out",
)
#: (ink, background) pairs: dark on light mostly, some light on dark.
OCR_COLOURS = (
    ((0, 0, 0), (255, 255, 255)), ((20, 20, 60), (245, 240, 225)), ((120, 20, 20), (250, 250, 240)),
    ((10, 80, 30), (235, 245, 235)), ((60, 60, 60), (220, 230, 240)), ((0, 0, 0), (250, 230, 120)),
    ((255, 255, 255), (30, 60, 140)), ((250, 250, 210), (40, 40, 40)), ((255, 255, 255), (150, 30, 30)),
)


def _ocr_number(rng: random.Random, form: int) -> str:
    if form == 0:
        return f"{rng.randint(1, 99)}.{rng.randrange(100):02d}"  # a price: 9.75
    if form == 1:
        return f"${rng.randint(1, 250)}.{rng.randrange(0, 100, 5):02d}"
    if form == 2:
        return str(rng.randint(100, 99999))
    if form == 3:
        return f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(1990, 2030)}"
    return f"{rng.randint(0, 23)}:{rng.randrange(0, 60, 5):02d}"


def ocr_text(seed: int, index: int) -> tuple[str, str, random.Random]:
    """(text, type, the rng that goes on to draw its look) of OCR item `index`: a word, a phrase and a
    number in turn; the numbers a price, a dollar amount, an integer, a date and a time in turn."""
    rng = random.Random(f"mmagent-suite:ocr:{seed}:{index}")
    kind = ("word", "phrase", "number")[index % 3]
    if kind == "word":
        text = rng.choice(OCR_WORDS)
    elif kind == "phrase":
        text = rng.choice(OCR_PHRASES)
    else:
        text = _ocr_number(rng, (index // 3) % 5)
    return text, kind, rng


def _render_text(text: str, rng: random.Random):
    from PIL import Image, ImageDraw

    size = rng.randint(18, 44)
    ink, background = rng.choice(OCR_COLOURS)
    font = _font(size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    pad_x, pad_y = rng.randint(8, 40), rng.randint(8, 30)
    image = Image.new("RGB", (right - left + 2 * pad_x, bottom - top + 2 * pad_y), background)
    ImageDraw.Draw(image).text((pad_x - left, pad_y - top), text, fill=ink, font=font)
    return image


def ocr(limit: int | None, seed: int, media_dir: str | os.PathLike[str]) -> Iterator[EvalItem]:
    """Rendered text on a plain background, one line each: a word, a short phrase or a number
    (price "9.75", "$12.40", an integer, a date, a time), in turn; font size 18-44 px (Pillow's
    bundled font), nine ink/background pairs (some light on dark). Item "ocr-<n>", answer = [the
    text], type = word | phrase | number, evidence = [the text]."""
    limit, folder = _arguments("ocr", limit, seed, media_dir)
    for index in range(limit):
        text, kind, rng = ocr_text(seed, index)
        path = write_once(folder / f"ocr-{seed}-{index:05d}.png", _png(_render_text(text, rng)))
        yield EvalItem(id=f"ocr-{index}", question=OCR_QUESTION, answer=[text], images=[path], type=kind,
                       evidence=[text])


# -- extraction ---------------------------------------------------------------------------------

SHOPS = (
    "CORNER CAFE", "GREEN LEAF MARKET", "CITY BAKERY", "BLUE MOON DINER", "PARK STREET DELI", "SUNRISE GROCERY",
    "RIVERSIDE BOOKS", "OLD TOWN PHARMACY", "HARBOUR FISH BAR", "MAPLE COFFEE HOUSE", "NORTH STAR PIZZA",
    "GOLDEN WOK", "FRESH MART", "HILLTOP HARDWARE", "LUNA GELATO", "STATION NEWS", "BRIGHT SIDE BISTRO",
    "SILVER SPOON", "PINE VALLEY FARM SHOP", "THE NOODLE BAR",
)
#: (item, lowest price, highest price) in cents.
PRODUCTS = (
    ("Coffee", 250, 450), ("Bagel", 175, 325), ("Orange juice", 300, 500), ("Sandwich", 450, 850),
    ("Muffin", 200, 375), ("Tea", 150, 300), ("Salad", 550, 1100), ("Soup", 400, 700), ("Croissant", 175, 300),
    ("Water", 100, 250), ("Cookie", 125, 250), ("Pasta", 850, 1450), ("Pizza slice", 300, 550),
    ("Apple pie", 325, 525), ("Milk", 120, 260), ("Bread", 225, 475), ("Eggs", 280, 520), ("Cheese", 450, 900),
    ("Notebook", 299, 899), ("Batteries", 499, 1299), ("Umbrella", 1200, 2500), ("Flowers", 800, 2000),
)


def receipt(seed: int, index: int) -> tuple[str, list[tuple[str, int]], int, random.Random]:
    """(shop, [(item, cents)], total cents, the rng that goes on to draw its look) of receipt `index`."""
    rng = random.Random(f"mmagent-suite:extraction:{seed}:{index}")
    shop = rng.choice(SHOPS)
    lines = []
    for name, low, high in rng.sample(PRODUCTS, rng.randint(2, 4)):
        lines.append((name, rng.randrange(low, high + 1, 5) if low % 5 == 0 else rng.randint(low, high)))
    return shop, lines, sum(cents for _, cents in lines), rng


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _render_receipt(shop: str, lines: list[tuple[str, int]], total: int, rng: random.Random):
    """Like examples/media/receipt.png: the shop on top, one line per item with its price, TOTAL."""
    from PIL import Image, ImageDraw

    width = rng.randint(420, 540)
    margin = rng.randint(24, 40)
    big, small = _font(rng.randint(24, 30)), _font(rng.randint(18, 22))
    step = rng.randint(44, 56)
    paper = rng.choice(((255, 255, 255), (252, 250, 242), (246, 246, 246)))
    height = margin + 50 + step * len(lines) + 70 + margin
    image = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(image)
    ink = (0, 0, 0)
    price_right = width - margin - rng.randint(0, 60)

    def right_aligned(y: int, text: str, font) -> None:
        left, _, right, _ = draw.textbbox((0, 0), text, font=font)
        draw.text((price_right - (right - left) - left, y), text, fill=ink, font=font)

    y = margin
    x = margin  # the shop's words one by one, a wide space apart (the font's own space is narrow in
    for word in shop.split():  # capitals: OCR reads "CORNERCAFE")
        draw.text((x, y), word, fill=ink, font=big)
        x += round(draw.textlength(word, font=big) + 0.5 * big.size)
    y += 50
    for name, cents in lines:
        draw.text((margin, y), name, fill=ink, font=small)
        right_aligned(y, _money(cents), small)
        y += step
    draw.line((margin, y + 4, price_right, y + 4), fill=(120, 120, 120), width=1)
    y += 16
    draw.text((margin, y), "TOTAL", fill=ink, font=big)
    right_aligned(y, _money(total), big)
    return image


def extraction(limit: int | None, seed: int, media_dir: str | os.PathLike[str]) -> Iterator[EvalItem]:
    """Receipt images (a shop name, 2-4 items with prices, a TOTAL), drawn like
    examples/media/receipt.png with some variety of width, font size and paper. Item "receipt-<n>",
    answer = {"shop": the shop as printed, "total": the total as a number}, evidence = [the shop,
    the total as printed ("9.75")], type = "items-<n>", meta["items"] = [[name, price], ...]."""
    limit, folder = _arguments("extraction", limit, seed, media_dir)
    for index in range(limit):
        shop, lines, total, rng = receipt(seed, index)
        path = write_once(folder / f"receipt-{seed}-{index:05d}.png", _png(_render_receipt(shop, lines, total, rng)))
        yield EvalItem(id=f"receipt-{index}", question=EXTRACTION_QUESTION,
                       answer={"shop": shop, "total": round(total / 100, 2)}, images=[path],
                       type=f"items-{len(lines)}", evidence=[shop, _money(total)],
                       meta={"items": [[name, _money(cents)] for name, cents in lines]})


def receipts_qa(limit: int | None, seed: int, media_dir: str | os.PathLike[str]) -> Iterator[EvalItem]:
    """The extraction suite's receipts (same seed, same images) asked one field at a time, as a
    person asks: "What is the total on the receipt?" (type receipt-total, answer the total as
    printed, "9.75") and "Which shop is this receipt from?" (receipt-shop, the shop's name), in
    turn: item 2k is receipt k's total, 2k + 1 its shop. The router's receipt types are fitted
    on this suite."""
    limit, folder = _arguments("receipts_qa", limit, seed, media_dir)
    for n in range(limit):
        index, kind = divmod(n, 2)
        shop, lines, total, rng = receipt(seed, index)
        path = write_once(folder / f"receipt-{seed}-{index:05d}.png", _png(_render_receipt(shop, lines, total, rng)))
        qtype = ("receipt-total", "receipt-shop")[kind]
        answer = _money(total) if kind == 0 else shop
        yield EvalItem(id=f"receipt-{index}-{qtype.split('-')[1]}", question=RECEIPT_QUESTIONS[qtype], answer=answer,
                       images=[path], type=qtype, evidence=[answer])


# -- ASR ----------------------------------------------------------------------------------------

NAMES = ("Anna", "David", "Maria", "James", "Sarah", "Peter", "Laura", "Michael", "Emma", "Daniel", "Sophie",
         "Thomas", "Olivia", "Robert", "Grace", "Henry")
CITIES = ("London", "Paris", "Berlin", "Chicago", "Toronto", "Madrid", "Boston", "Dublin", "Sydney", "Denver",
          "Vienna", "Seattle")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
#: type -> sentence templates ({name}, {other}, {city}, {day}, {n}, {m}, {decimal}, {year}).
SENTENCES = {
    "integer": (
        "{name} booked {n} seats on the train to {city}.",
        "Flight {n} to {city} leaves from gate {m} on {day}.",
        "{name} and {other} scored {n} points in the final game.",
        "The meeting with {name} is in room {n} on {day}.",
    ),
    "decimal": (
        "The parcel for {name} weighs {decimal} kilograms.",
        "{name} ran {decimal} miles along the river in {city}.",
        "The coffee in {city} cost {name} {decimal} euros on {day}.",
    ),
    "year": (
        "{name} moved to {city} in {year}.",
        "The old library in {city} opened in {year}.",
        "{name} met {other} in {city} in {year}.",
    ),
}


def asr_sentence(seed: int, index: int) -> tuple[str, str]:
    """(sentence, type) of ASR item `index`: types integer, decimal, year in turn."""
    rng = random.Random(f"mmagent-suite:asr:{seed}:{index}")
    kind = tuple(SENTENCES)[index % len(SENTENCES)]
    name, other = rng.sample(NAMES, 2)
    values = {"name": name, "other": other, "city": rng.choice(CITIES), "day": rng.choice(DAYS),
              "n": rng.randint(12, 99), "m": rng.randint(11, 40),
              "decimal": f"{rng.randint(1, 20)}.{rng.randint(1, 9)}", "year": rng.randint(1950, 2024)}
    return rng.choice(SENTENCES[kind]).format(**values), kind


def _speech_backend():
    """The configured TTS backend, deterministic (piper without noise); InputError when none works."""
    from ..backends import get_backend

    try:
        tts = get_backend("tts", noise_scale=0, noise_w_scale=0)
    except Exception as exc:  # noqa: BLE001 - any reason the TTS cannot be had is reported the same way
        raise InputError(f"the asr suite synthesizes its speech with the tts backend, which is not available: "
                         f"{type(exc).__name__}: {exc}") from None
    return tts


def asr(limit: int | None, seed: int, media_dir: str | os.PathLike[str]) -> Iterator[EvalItem]:
    """Sentences with names and numbers (integers, decimals like "4.5", years), spoken by the
    configured TTS backend (the offline piper voice, without noise: deterministic) into WAV files.
    Item "asr-<n>", answer = [the sentence], type = integer | decimal | year, evidence = [the
    sentence]. A file's name carries a hash of the text and the voice, so a file already there is
    that speech and is not synthesized again (resume costs nothing)."""
    limit, folder = _arguments("asr", limit, seed, media_dir)
    tts = None
    for index in range(limit):
        text, kind = asr_sentence(seed, index)
        if tts is None:
            tts = _speech_backend()
        voice = f"{tts.name}:{tts.model_id}:{sorted(tts.options.items())}"
        digest = hashlib.sha256(f"{voice}\n{text}".encode()).hexdigest()[:10]
        path = folder / f"asr-{seed}-{index:05d}-{digest}.wav"
        if not path.is_file():
            try:
                audio = tts.synthesize(text)
                data = audio.read_bytes()
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - a missing voice, package or model is an unusable suite
                raise InputError(f"the asr suite cannot synthesize speech with tts/{tts.name}: "
                                 f"{type(exc).__name__}: {exc}") from None
            write_once(path, data)
        yield EvalItem(id=f"asr-{index}", question=ASR_QUESTION, answer=[text], audio=[str(path)], type=kind,
                       evidence=[text])
