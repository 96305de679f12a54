"""mmagent's built-in metrics: `metric(prediction, item) -> {"score": 0..1, other named numbers}`.

An item counts as *correct* (McNemar, telephone-loss attribution) when its score reaches the
metric's threshold:

    name          score                                                      correct when
    exact_match   normalized prediction == an accepted answer (1/0)          score = 1
    contains      an accepted answer occurs, whole tokens, in the prediction  score = 1
    vqa_accuracy  VQAv2 accuracy (10 annotator answers, leave-one-out)        score = 1   (>= 4 of 10 agree)
    anls          ANLS, tau = 0.5 (DocVQA / ST-VQA)                           score >= 0.5
    wer           1 - WER (jiwer; also "wer", "cer")                          score >= 0.9 (WER <= 10 %)
    field_match   fraction of reference fields matched (extraction)          score = 1   (every field)
    scene_answer  the scenes' own scorer (mmagent.scenes.scoring)             score = 1
    bleu          sentence BLEU / 100 (sacrebleu)                             score >= 0.3
    chrf          sentence chrF / 100 (sacrebleu)                             score >= 0.5
    scene_caption recall of the scene's objects named as "colour kind"        score = 1   (every object)

Normalization (`normalize`, used by exact_match, contains, field_match and the attribution in
`stats`): lowercase; apostrophes dropped ("don't" -> "dont"); thousands separators dropped
("1,000" -> "1000"); every other punctuation mark becomes a space, except a '.' or ',' between
two digits ("9.75" stays one token); the articles a/an/the dropped; the number words zero..twenty
written as digits; spaces collapsed.

vqa_accuracy is the official VQAv2 evaluation: answers and prediction go through the VQA answer
processing (its punctuation rule, number words zero..ten and "none" as digits, articles dropped,
contractions restored: "dont" -> "don't"), and with n annotator answers of which k equal the
prediction the score is the mean over the n leave-one-out subsets of min(1, matches / 3) — for 10
answers: k=0: 0, 1: 0.3, 2: 0.6, 3: 0.9, k>=4: 1. The prediction is compared whole, as the
official evaluation does (VQA prompts ask for "a single word or phrase"); nothing is pulled out of
a sentence. Beside it, "relaxed" is the same accuracy where an answer matches when it occurs as
whole tokens in the prediction (for pipelines that answer in sentences). A list of fewer than 3
answers is not a set of annotator votes but accepted answers: the score is 1 when the prediction
equals any of them (the leave-one-out formula would give 0 to a single right answer).

ANLS: per accepted answer, NL = Levenshtein(a, p) / max(len(a), len(p)) on lowercased strings
with whitespace stripped and collapsed; the answer's similarity is 1 - NL when NL < 0.5, else 0;
the score is the best over the accepted answers.

wer: prediction and reference lowercased, punctuation removed except within numbers ("9.75",
"1,000" -> "1000"), apostrophes dropped; several accepted transcripts: the best (lowest WER) one.
An empty reference gives WER 0 against an empty prediction and 1 against anything else.

field_match: the first JSON object in the prediction (``` fences and text around it tolerated);
a field matches when numbers are numerically equal ("9.75" == 9.75 == "$9.75" == "9.750"),
strings are equal after `normalize`, booleans are equal ("true"/"yes" count), a null reference
matches a missing, null or empty value, lists match as multisets of matching elements and objects
field by field. No JSON object: score 0 and "parsed" 0.

scene_caption: `item.meta["objects"]` lists [colour, kind] pairs; an object is named when the
caption says its colour then its kind, singular or plural, with at most one size word between
("a red circle", "two blue squares", "the red small circle"; "red and blue circles" names only
the blue one). Repeated pairs count once. "bleu" against the accepted answers is returned too
when the item has any.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

from ..errors import InputError, PluginError
from .core import EvalItem, Metric

# ---------------------------------------------------------------------------------------------
# Normalization

NUMBER_WORDS = {word: str(value) for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
ARTICLES = frozenset({"a", "an", "the"})
_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc`]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# Punctuation (and symbols) -> space, except a '.' or ',' with a digit on both sides.
_PUNCT = re.compile(r"(?<!\d)[.,]|[.,](?!\d)|[^\w\s.,]|_")


def normalize_text(text: Any, *, articles: bool = True, number_words: bool = True) -> str:
    """`text` lowercased, apostrophes and thousands separators dropped, other punctuation as
    spaces except within numbers; optionally without articles and with number words as digits."""
    text = _APOSTROPHES.sub("", str(text).lower())
    text = _PUNCT.sub(" ", _THOUSANDS.sub("", text))
    words = text.split()
    if number_words:
        words = [NUMBER_WORDS.get(w, w) for w in words]
    if articles:
        words = [w for w in words if w not in ARTICLES]
    return " ".join(words)


def normalize(text: Any) -> str:
    """The normalization of exact_match, contains, field_match and the telephone-loss attribution."""
    return normalize_text(text)


def tokens(text: Any) -> list[str]:
    return normalize(text).split()


def contains_tokens(haystack: list[str], needle: list[str]) -> bool:
    """Whether `needle` occurs as a contiguous run of whole tokens in `haystack` (an empty needle
    occurs only in an empty haystack)."""
    if not needle:
        return not haystack
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def accepted_answers(item: EvalItem, metric: str) -> list[str]:
    """The item's accepted answers as strings; a dict reference or none at all is an input error."""
    answer = item.answer
    if isinstance(answer, dict):
        raise InputError(f"metric '{metric}' needs a list of accepted answers, item {item.id} has fields "
                         "(use field_match)")
    if isinstance(answer, (str, int, float)):
        answer = [answer]
    answers = [str(a) for a in answer if a is not None]
    if not answers:
        raise InputError(f"metric '{metric}': item {item.id} has no reference answer")
    return answers


def _needs(module: str, metric: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise PluginError(f"metric '{metric}' needs {module} (pip install 'mmagent[eval]')") from exc


# ---------------------------------------------------------------------------------------------
# exact_match, contains


def exact_match(prediction: str, item: EvalItem) -> dict[str, float]:
    pred = normalize(prediction)
    return {"score": float(any(normalize(a) == pred for a in accepted_answers(item, "exact_match")))}


def contains(prediction: str, item: EvalItem) -> dict[str, float]:
    pred = tokens(prediction)
    return {"score": float(any(contains_tokens(pred, tokens(a)) for a in accepted_answers(item, "contains")))}


# ---------------------------------------------------------------------------------------------
# VQA accuracy

_VQA_PUNCT = ";/[]\"{}()=+\\_-><@`,?!"
_VQA_NUMBERS = {"none": "0", **{w: d for w, d in NUMBER_WORDS.items() if int(d) <= 10}}
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")
# The contractions the VQA evaluation restores, written whole; each form with any of its
# apostrophes left out maps to it ("dont", "couldnt've", "couldn'tve" -> ...).
_CONTRACTED = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't "
    "he'd he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've it'll ma'am mightn't "
    "mightn't've might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've she's "
    "should've shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd "
    "someone'd've someone'll someone's something'd something'd've something'll that's there'd there'd've "
    "there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll "
    "what're what's what've when's where'd where's where've who'd who'd've who'll who's who've why'll "
    "why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll "
    "you're you've").split()


def _contraction_map() -> dict[str, str]:
    mapping: dict[str, str] = {}
    for word in _CONTRACTED:
        marks = [i for i, ch in enumerate(word) if ch == "'"]
        for k in range(1, len(marks) + 1):
            for dropped in itertools.combinations(marks, k):
                mapping["".join(ch for i, ch in enumerate(word) if i not in dropped)] = word
    return mapping


_CONTRACTIONS = _contraction_map()


def vqa_normalize(text: Any) -> str:
    """The VQAv2 evaluation's answer processing (punctuation, digits, articles, contractions)."""
    text = str(text).replace("\n", " ").replace("\t", " ").strip()
    out = text
    number_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in _VQA_PUNCT:
        if mark in out:
            glued = number_comma or f"{mark} " in text or f" {mark}" in text
            out = out.replace(mark, "" if glued else " ")
    out = _PERIOD.sub("", out)
    words = [_VQA_NUMBERS.get(w, w) for w in out.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def vqa_score(matches: list[bool]) -> float:
    """VQA accuracy from which of the n answers match: the mean over leave-one-out subsets of
    min(1, matches/3); fewer than 3 answers: 1 when any matches."""
    n, k = len(matches), sum(matches)
    if n < 3:
        return float(k > 0)
    return sum(min(1.0, (k - hit) / 3) for hit in matches) / n


def vqa_accuracy(prediction: str, item: EvalItem) -> dict[str, float]:
    answers = [vqa_normalize(a) for a in accepted_answers(item, "vqa_accuracy")]
    pred = vqa_normalize(prediction)
    pred_words = pred.split()
    return {"score": vqa_score([a == pred for a in answers]),
            "relaxed": vqa_score([contains_tokens(pred_words, a.split()) for a in answers])}


# ---------------------------------------------------------------------------------------------
# ANLS


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each)."""
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError:
        return _levenshtein(a, b)
    return Levenshtein.distance(a, b)


def _levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def anls_score(prediction: str, answers: list[str], tau: float = 0.5) -> float:
    pred = " ".join(str(prediction).lower().split())
    best = 0.0
    for answer in answers:
        ref = " ".join(answer.lower().split())
        longest = max(len(ref), len(pred))
        nl = levenshtein(ref, pred) / longest if longest else 0.0
        best = max(best, 1.0 - nl if nl < tau else 0.0)
    return best


def anls(prediction: str, item: EvalItem) -> dict[str, float]:
    return {"score": anls_score(prediction, accepted_answers(item, "anls"))}


# ---------------------------------------------------------------------------------------------
# WER / CER


def wer_normalize(text: Any) -> str:
    """Lowercase, punctuation removed except within numbers (9.75 stays one word)."""
    return normalize_text(text, articles=False, number_words=False)


def wer(prediction: str, item: EvalItem) -> dict[str, float]:
    jiwer = _needs("jiwer", "wer")
    hyp = wer_normalize(prediction)
    best: tuple[float, float] | None = None
    for answer in accepted_answers(item, "wer"):
        ref = wer_normalize(answer)
        if not ref:
            pair = (0.0, 0.0) if not hyp else (1.0, 1.0)
        elif not hyp:
            pair = (1.0, 1.0)
        else:
            pair = (float(jiwer.wer(ref, hyp)), float(jiwer.cer(ref, hyp)))
        if best is None or pair < best:
            best = pair
    assert best is not None
    return {"score": max(0.0, 1.0 - best[0]), "wer": best[0], "cer": best[1]}


# ---------------------------------------------------------------------------------------------
# field_match (extraction)

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_CURRENCY = "$€£¥₹"


def first_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` (code fences and text around it are ignored), or None."""
    text = _FENCE.sub("\n", str(text))
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            pass
        else:
            if isinstance(obj, dict):
                return obj
        start = text.find("{", start + 1)
    return None


def as_number(value: Any) -> float | None:
    """A number from a number or a numeric string ("$9.75", "1,000", "9.75 USD", "12%"), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.strip().strip(_CURRENCY).strip()
    for suffix in ("%", "usd", "eur", "gbp"):
        if text.lower().endswith(suffix):
            text = text[: -len(suffix)].strip()
    if text[:1] in "-+" and text[1:2] in tuple(_CURRENCY):  # "-$5"
        text = text[0] + text[2:]
    match = _NUMBER.fullmatch(text)
    return float(match.group().replace(",", "")) if match else None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "false", "no"):
        return value.strip().lower() in ("true", "yes")
    return None


def values_match(reference: Any, value: Any) -> bool:
    """Whether an extracted value matches the reference value (see the module docstring)."""
    if reference is None:
        return value is None or (isinstance(value, (str, list, dict)) and not value)
    if isinstance(reference, bool):
        return _as_bool(value) is reference
    if isinstance(reference, dict):
        return isinstance(value, dict) and all(values_match(v, _field(value, k)) for k, v in reference.items())
    if isinstance(reference, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(reference):
            return False
        left = list(value)
        for ref in reference:
            hit = next((i for i, v in enumerate(left) if values_match(ref, v)), None)
            if hit is None:
                return False
            left.pop(hit)
        return True
    ref_number, number = as_number(reference), as_number(value)
    if ref_number is not None and number is not None:
        return math.isclose(ref_number, number, rel_tol=1e-9, abs_tol=1e-9)
    if value is None or isinstance(value, (dict, list)):
        return False
    return normalize(reference) == normalize(value)


def _field(obj: dict[str, Any], name: str) -> Any:
    if name in obj:
        return obj[name]
    wanted = re.sub(r"[\W_]+", "", name.lower())
    return next((v for k, v in obj.items() if re.sub(r"[\W_]+", "", str(k).lower()) == wanted), None)


def field_match(prediction: str, item: EvalItem) -> dict[str, float]:
    reference = item.answer
    if not isinstance(reference, dict) or not reference:
        raise InputError(f"metric 'field_match' needs a dict of reference fields, item {item.id} has "
                         f"{type(reference).__name__ if reference else 'none'}")
    parsed = first_json_object(prediction)
    fields = {f"field:{name}": float(parsed is not None and values_match(ref, _field(parsed, name)))
              for name, ref in reference.items()}
    return {"score": sum(fields.values()) / len(fields), "parsed": float(parsed is not None), **fields}


# ---------------------------------------------------------------------------------------------
# Scenes


def scene_answer(prediction: str, item: EvalItem) -> dict[str, float]:
    from ..scenes.scoring import is_correct

    answers = accepted_answers(item, "scene_answer")
    return {"score": float(any(is_correct(prediction, a, item.type or "") for a in answers))}


SIZE_WORDS = ("small", "large", "big", "little", "tiny", "huge", "medium")


def scene_caption(prediction: str, item: EvalItem) -> dict[str, float]:
    from ..scenes.vocab import PLURAL

    objects = item.meta.get("objects")
    if not isinstance(objects, list) or not objects or not all(
            isinstance(o, (list, tuple)) and len(o) == 2 and all(isinstance(x, str) for x in o) for o in objects):
        raise InputError(f"metric 'scene_caption': item {item.id} needs meta.objects, a list of "
                         "[colour, kind] pairs")
    words = re.findall(r"[a-z]+", str(prediction).lower())
    pairs = list(dict.fromkeys((c.lower(), k.lower()) for c, k in objects))

    def named(colour: str, kind: str) -> bool:
        kinds = {kind, PLURAL.get(kind, kind + "s")}
        for i, word in enumerate(words[:-1]):
            if word == colour:
                nxt = words[i + 1]
                if nxt in kinds or (nxt in SIZE_WORDS and i + 2 < len(words) and words[i + 2] in kinds):
                    return True
        return False

    out = {"score": sum(named(c, k) for c, k in pairs) / len(pairs)}
    answers = item.answer if isinstance(item.answer, list) else [item.answer] if isinstance(item.answer, str) else []
    if any(str(a).strip() for a in answers):
        out["bleu"] = _sacrebleu_score("sentence_bleu", prediction, [str(a) for a in answers], "scene_caption")
    return out


# ---------------------------------------------------------------------------------------------
# Captions


def _sacrebleu_score(function: str, prediction: str, references: list[str], metric: str) -> float:
    sacrebleu = _needs("sacrebleu", metric)
    value = float(getattr(sacrebleu, function)(str(prediction), references).score) / 100.0
    return min(1.0, max(0.0, value))  # sacrebleu's float sums can land a hair above 100


def bleu(prediction: str, item: EvalItem) -> dict[str, float]:
    value = _sacrebleu_score("sentence_bleu", prediction, accepted_answers(item, "bleu"), "bleu")
    return {"score": value, "bleu": value}


def chrf(prediction: str, item: EvalItem) -> dict[str, float]:
    value = _sacrebleu_score("sentence_chrf", prediction, accepted_answers(item, "chrf"), "chrf")
    return {"score": value, "chrf": value}


BUILTIN_METRICS: list[Metric] = [
    Metric("exact_match", "normalized prediction equals an accepted answer", exact_match, 1.0),
    Metric("contains", "an accepted answer occurs (whole tokens) in the prediction", contains, 1.0),
    Metric("vqa_accuracy", "VQAv2 accuracy: min(#matching annotator answers / 3, 1), leave-one-out averaged",
           vqa_accuracy, 1.0),
    Metric("anls", "average normalized Levenshtein similarity (tau 0.5), best accepted answer", anls, 0.5),
    Metric("wer", "1 - word error rate (jiwer; also wer and cer), numbers kept whole", wer, 0.9),
    Metric("field_match", "fraction of reference fields the prediction's JSON matches", field_match, 1.0),
    Metric("scene_answer", "the scenes' answer scorer (first answer word of the question's type)",
           scene_answer, 1.0),
    Metric("bleu", "sentence BLEU against the accepted answers (sacrebleu), in [0, 1]", bleu, 0.3),
    Metric("chrf", "sentence chrF against the accepted answers (sacrebleu), in [0, 1]", chrf, 0.5),
    Metric("scene_caption", "fraction of the scene's objects named as 'colour kind' (also bleu)",
           scene_caption, 1.0),
]
