"""LLaVA-recipe adapter training into a frozen LLM, producing a transformers LLaVA folder.

Frozen vision encoder (mmagent's own from `train_encoder`, or a pretrained CLIP / SigLIP /
DINOv2: `mmagent.train.vision`) + frozen SmolLM2-135M-Instruct; the projector (LLaVA's 2-layer
MLP, a linear one, or a query adapter) learns, with LoRA on the LLM from stage 2: stage 1 on
captioning, stage 2 on question answering, stage 3 on every question type equally often, stage 4
(scenes) on the relation types, position answered with its reasons (`relation_examples`). The
data is the scene world's (generated) or the user's own (`recipe.data`:
`mmagent.train.user_data`), held out by image. The loss covers the answer tokens only, and the LM head runs on
those positions only (left padding puts every answer at the end). The result is a
`LlavaForConditionalGeneration` + `LlavaProcessor` folder that the `vlm` plugin loads like any
other model; `export_small` keeps only what was trained here (encoder + projector, a few MB).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..errors import InputError
from ..scenes.prompts import CAPTION_PROMPT, DESCRIBE_PROMPT, QA_SYSTEM
from ..scenes.vocab import WORDS
from .encoder import known_bce, pair_accuracy, pair_bce
from .loop import Ranks, TrainableState, batch_indices, logged_seconds, pin_recipe, run_loop, warmup_cosine
from .scene_data import PLACES, SIZED, make_scenes
from .vision import Tower, load_tower, locate, preprocess, unfreeze_last

IMAGE_TOKEN = "<image>"
QA_TYPES = ("existence", "colour", "shape", "count", "position", "comparison")
#: with `places_and_signs`: the printed word too
READ_TYPES = (*QA_TYPES, "read")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SUFFIX = " Answer with one word."



@dataclass
class AdapterRecipe:
    seed: int = 0
    projector: str = "mlp"  # mlp | linear (LLaVA) | resampler (perceiver) | qformer (Q-Former-lite)
    num_queries: int = 4  # resampler / qformer only
    lora_rank: int = 16  # > 0: stage 2 also trains LoRA (peft) on the LLM
    lora_modules: str = "all"  # all: attention + MLP projections; attention: q/k/v/o only
    lora_lr: float = 1e-3
    train_scenes: int = 3000
    eval_scenes: int = 200
    probe_scenes: int = 1500  # the grounded start's linear probe (mlp)
    caption_steps: int = 20
    qa_steps: int = 450
    focus_steps: int = 500  # stage 3: QA again, every type equally often (colour/shape are rarer)
    #: stage 4 (scenes): position (said with its reasons), comparison and count questions, on a
    #: fresh LoRA over the merged stages 2-3 (`relation_examples`)
    relations_steps: int = 400
    #: stage 4's share of position questions; None: position three times over, comparison and count
    #: once, 30 % others (`relation_examples`)
    position_share: float | None = None
    #: start from a trained model (a `small` export: its encoder, projector and LoRA folded in)
    #: instead of a fresh projector; its stages' steps can then be 0
    init: str | None = None
    batch_size: int = 16
    lr: float | None = None  # the projector's; None: 3e-5 from a grounded start (mlp), else 1e-3
    checkpoint_every: int = 25
    llm: str = "smollm2-135m-instruct"
    #: a pretrained CLIP / SigLIP / DINOv2 (HF id or folder) instead of mmagent's own encoder
    vision_encoder: str | None = None
    unfreeze_vision_layers: int = 0  # > 0: the tower's last layers train too (at vision_lr)
    vision_lr: float = 1e-5
    #: the user's data (JSONL, an image folder with metadata, a `datasets` source); None: scenes
    data: str | None = None
    val: str | None = None  # a held-out source of its own; else val_fraction of the images
    val_fraction: float = 0.1
    device: str = "auto"  # auto: CUDA when there is one, else CPU
    #: training arithmetic: auto: bf16 autocast where the device has it natively (CUDA; a CPU with
    #: AVX512-BF16 / AMX), else float32; fp32 or bf16 force one (`training_bf16`)
    precision: str = "auto"
    #: scenes: train read-the-word questions too and start the projector with position and
    #: printed-word units (needs an encoder trained with `EncoderRecipe.places_and_signs`)
    places_and_signs: bool = False
    #: stage 2's conversations: up to this many questions about one image in one sequence; None:
    #: 4 on the user's data (about 2x the answers per second of CPU), 1 in the scene world
    turns: int | None = None


def build_llava(encoder: Path | Tower | None, recipe: AdapterRecipe):
    """Assemble (model, processor): the vision tower (`encoder`: a `train_encoder` folder, a loaded
    `Tower`, or None with `recipe.vision_encoder`), a fresh projector, SmolLM2 with <image>."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from mmagent.zoo import get_zoo

    tower = encoder if isinstance(encoder, Tower) else load_tower(encoder, recipe.vision_encoder)
    zoo = get_zoo()
    llm_dir = zoo.ensure(recipe.llm) if recipe.llm in zoo.specs else locate(recipe.llm, "--llm")
    try:
        tokenizer = AutoTokenizer.from_pretrained(llm_dir)
        llm = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32)
    except (OSError, ValueError) as exc:  # a folder without a causal LM's config, weights or tokenizer
        raise InputError(f"--llm {recipe.llm}: not a transformers causal LM ({' '.join(str(exc).split())[:200]})") \
            from None
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    old_rows = llm.get_input_embeddings().weight.shape[0]
    llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():  # new rows (<image>) = the mean embedding: deterministic, so a rebuild is exact
        for table in {id(t): t for t in (llm.get_input_embeddings(), llm.get_output_embeddings())}.values():
            table.weight[old_rows:] = table.weight[:old_rows].mean(0)
    vision = tower.model
    common = dict(vision_config=vision.config, text_config=llm.config,
                  image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                  vision_feature_select_strategy=tower.strategy, vision_feature_layer=-1)
    if recipe.projector in ("mlp", "linear"):
        patch_size = tower.patch_size  # one image token per patch
        config = LlavaConfig(**common, projector_hidden_act="gelu" if recipe.projector == "mlp" else "linear",
                             image_seq_length=tower.patches + (tower.extra_tokens if tower.strategy == "full" else 0))
        model = LlavaForConditionalGeneration(config)
    else:
        from .arch import QueryAdapterConfig, QueryAdapterLlava, register_architectures

        side = math.isqrt(recipe.num_queries)
        if side * side != recipe.num_queries or tower.image_size % side:
            raise InputError(f"num_queries must be a square whose root divides the image size {tower.image_size} "
                             f"(1, 4, 16, 64)")
        register_architectures()
        patch_size = tower.image_size // side  # the processor's patch grid = the query count
        config = QueryAdapterConfig(**common, projector_type=recipe.projector, num_queries=recipe.num_queries,
                                    image_seq_length=recipe.num_queries)
        model = QueryAdapterLlava(config)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(llm.model.state_dict())
    model.lm_head.load_state_dict(llm.lm_head.state_dict())
    processor = LlavaProcessor(image_processor=tower.image_processor, tokenizer=tokenizer, patch_size=patch_size,
                               vision_feature_select_strategy=tower.strategy,
                               num_additional_image_tokens=tower.extra_tokens, chat_template=CHAT_TEMPLATE)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("model.multi_modal_projector")
    if recipe.unfreeze_vision_layers:
        unfreeze_last(model.model.vision_tower, recipe.unfreeze_vision_layers)
    return model, processor


def image_tokens(processor) -> int:
    """How many <image> tokens one image becomes (the processor's own rule)."""
    ip = processor.image_processor
    crop, size = getattr(ip, "crop_size", None), getattr(ip, "size", None) or {}
    if getattr(ip, "do_center_crop", False) and isinstance(crop, dict) and crop.get("height"):
        side = crop["height"]
    else:
        side = size.get("height") or size.get("shortest_edge")
    drop = 1 if processor.vision_feature_select_strategy == "default" else 0
    return (side // processor.patch_size) ** 2 + processor.num_additional_image_tokens - drop


def _prompt(processor, system: str | None, text: str) -> str:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]})
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return prompt.replace(IMAGE_TOKEN, IMAGE_TOKEN * image_tokens(processor))


@dataclass(frozen=True)
class Example:
    scene: int  # index into the scene list
    system: str | None
    text: str
    answer: str
    type: str
    #: further (question, answer) turns about the same image in the same conversation (LLaVA's
    #: multi-turn instruction data: the image is read once for all of them)
    more: tuple[tuple[str, str], ...] = ()


def stage_examples(captions: list[Example], questions: list[Example], kind: str,
                   types: tuple[str, ...] | None = None, turns: int = 1) -> list[Example]:
    """Stage 1 ("caption"): the captions. Stage 2 ("mixed"): every question, half with the
    adapter graph's system prompt and half without (a quarter of those with a one-word suffix
    when the answer is one word), so the model answers the graph and plain users alike, plus a
    quarter of the captions. Stage 3 ("balanced"): the same with every type equally often.
    `questions` carry the plain question text (system None); `types`: the order of the types.
    `turns` > 1 (stage 2): an image's questions are asked as conversations of up to `turns`
    turns (`Example.more`), each answer trained on: several answers for one read of the image."""
    if kind == "caption":
        return list(captions)
    if kind == "balanced":  # the mixed set with every QA type repeated up to the most common one's size
        mixed = stage_examples(captions, questions, "mixed", types)
        order = types or tuple(dict.fromkeys(q.type for q in questions))
        by_type = [[e for e in mixed if e.type == t] for t in order]
        most = max(map(len, by_type), default=0)
        return [e for e in mixed if e.type == "caption"] + [v[i % len(v)] for v in by_type if v for i in range(most)]
    items = list(captions[::4])  # stage 2 keeps a quarter of the captions, so the model still captions
    asked = []
    for n, q in enumerate(questions):
        suffix = SUFFIX if n % 4 in (1, 2) and len(q.answer.split()) == 1 else ""
        asked.append(Example(q.scene, QA_SYSTEM if n % 2 == 0 else None, q.text + suffix, q.answer, q.type))
    if turns <= 1:
        return items + asked
    by_image: dict[int, list[Example]] = {}
    for q in asked:
        by_image.setdefault(q.scene, []).append(q)
    for group in by_image.values():  # the first turn keeps its own system prompt; the rest follow it
        # as few conversations as `turns` allows, their lengths as even as can be (10 in 4s: 3, 3, 4)
        k = -(-len(group) // turns)
        cuts = [len(group) * j // k for j in range(k + 1)]
        for i, j in zip(cuts, cuts[1:]):
            first, rest = group[i], group[i + 1:j]
            items.append(Example(first.scene, first.system, first.text, first.answer, first.type,
                                 tuple((q.text, q.answer) for q in rest)))
    return items


def scene_captions(scenes) -> list[Example]:
    return [Example(i, None, prompt, text, "caption") for i, s in enumerate(scenes)
            for prompt, text in ((CAPTION_PROMPT, s.caption), (DESCRIBE_PROMPT, s.description))]


def scene_questions(scenes, types: tuple[str, ...] = QA_TYPES, explained: bool = False) -> list[Example]:
    """The scenes' questions (plain text, no system prompt); `explained`: answered with their reasons
    where the generator gives them (`Question.explained`: position)."""
    return [Example(i, None, q.question, (explained and q.explained) or q.answer, q.type)
            for i, s in enumerate(scenes) for q in s.questions if q.type in types]


RELATION_TYPES = ("position", "comparison", "count")


def check_position_share(share: float | None) -> None:
    if share is not None and not 0 < share <= 1:
        raise InputError(f"position share {share}: give a fraction in (0, 1]")


def relation_examples(captions: list[Example], questions: list[Example], types: tuple[str, ...], *,
                      share: float = 0.3, seed: int = 0, position_share: float | None = None) -> list[Example]:
    """Stage 4: the relation questions — position three times over, comparison and count once —
    with `share` of the whole from the other types (stage 2's mix) so they are not forgotten.
    `position_share` (0 < f <= 1): instead, every position question once and the rest drawn from
    all the other types (comparison and count included) so that position is that share of the
    whole — the mix that teaches the place read (a model whose counts are trained already).
    `questions` should carry the explained answers (`scene_questions(..., explained=True)`)."""
    mixed = stage_examples(captions, questions, "mixed", types)
    rng = random.Random(seed)
    if position_share is not None:
        check_position_share(position_share)
        focus = [e for e in mixed if e.type == "position"]
        other = [e for e in mixed if e.type != "position"]
        share = 1 - position_share
    else:
        focus = [e for e in mixed if e.type == "position"] * 3 + [e for e in mixed if e.type in RELATION_TYPES[1:]]
        other = [e for e in mixed if e.type not in RELATION_TYPES]
    items = focus + rng.sample(other, min(int(len(focus) * share / (1 - share)), len(other)))
    rng.shuffle(items)
    return items


def examples(scenes, kind: str, types: tuple[str, ...] = QA_TYPES) -> list[Example]:
    """The scene world's examples of a stage ("caption", "mixed", "balanced": `stage_examples`)."""
    return stage_examples(scene_captions(scenes), scene_questions(scenes, types), kind, types)


def eval_examples(scenes, types: tuple[str, ...] = QA_TYPES) -> list[Example]:
    """Held-out questions exactly as `graphs/adapter.py` asks them."""
    return [Example(i, QA_SYSTEM, q.question, q.answer, q.type) for i, s in enumerate(scenes) for q in s.questions
            if q.type in types]


def encode_batch(processor, batch: list[Example]):
    """Left-padded ids with labels on the answer (+ <|im_end|>) only; returns (ids, mask, labels, keep).
    `labels` covers the last `keep` positions; a batch with multi-turn examples labels every
    answer of every turn, over the full width (`keep` None)."""
    tok = processor.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    if any(item.more for item in batch):
        return _encode_turns(processor, batch, end)
    rows, answers = [], []
    for item in batch:
        prompt = tok(_prompt(processor, item.system, item.text), add_special_tokens=False)["input_ids"]
        target = tok(item.answer, add_special_tokens=False)["input_ids"] + [end]
        rows.append(prompt + target)
        answers.append(len(target))
    ids, mask = _left_padded(rows, tok.pad_token_id if tok.pad_token_id is not None else end)
    keep = max(answers) + 1
    labels = torch.full((len(rows), keep), -100)
    for r, (row, n) in enumerate(zip(rows, answers)):
        labels[r, keep - n:] = torch.tensor(row[-n:])
    return ids, mask, labels, keep


def _left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token rows padded on the left to the longest."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, width - len(row):] = torch.tensor(row)
        mask[r, width - len(row):] = 1
    return ids, mask


def _encode_turns(processor, batch: list[Example], end: int):
    """`encode_batch` for conversations: the first turn as a single question is, then for each
    further turn the chat template's "<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"."""
    tok = processor.tokenizer
    rows, marks = [], []
    for item in batch:
        ids = tok(_prompt(processor, item.system, item.text), add_special_tokens=False)["input_ids"]
        mark = [False] * len(ids)
        for n, (question, answer) in enumerate(((item.text, item.answer), *item.more)):
            if n:
                turn = tok(f"\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",
                           add_special_tokens=False)["input_ids"]
                ids, mark = ids + turn, mark + [False] * len(turn)
            target = tok(answer, add_special_tokens=False)["input_ids"] + [end]
            ids, mark = ids + target, mark + [True] * len(target)
        rows.append(ids)
        marks.append(mark)
    ids, mask = _left_padded(rows, tok.pad_token_id if tok.pad_token_id is not None else end)
    labels = torch.full_like(ids, -100)
    for r, (row, mark) in enumerate(zip(rows, marks)):
        labels[r, ids.shape[1] - len(row):] = torch.where(torch.tensor(mark), torch.tensor(row), -100)
    return ids, mask, labels, None


def answer_loss(model, pixels, ids, mask, labels, keep) -> torch.Tensor:
    """Cross-entropy on the answer tokens, averaged per example first (a 40-token description and
    a one-word answer weigh the same). `keep` None (multi-turn): the LM head runs on the answer
    positions only, gathered from the whole sequence."""
    if keep is None:
        hidden = model.model(input_ids=ids, attention_mask=mask, pixel_values=pixels).last_hidden_state
        target = labels[:, 1:]
        chosen = target != -100  # position t predicts token t+1
        logits = model.lm_head(hidden[:, :-1][chosen])
        per_token = torch.nn.functional.cross_entropy(logits.float(), target[chosen], reduction="none")
        row = chosen.nonzero()[:, 0]
        sums = torch.zeros(len(ids), device=per_token.device).index_add(0, row, per_token)
        counts = chosen.sum(1).clamp(min=1)
        return (sums / counts).mean()
    # logits at position t predict token t+1: keep the last `keep` positions, shift by one.
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, logits_to_keep=keep + 1)
    logits = out.logits[:, :-1]
    per_token = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                  ignore_index=-100, reduction="none").view(labels.shape)
    valid = (labels != -100).float()
    return ((per_token * valid).sum(1) / valid.sum(1).clamp(min=1)).mean()


@torch.no_grad()
def patch_features(model, pixels: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The frozen encoder's patch tokens (N, patches, hidden), as LLaVA's select strategy feeds them
    ("default" drops the CLS token in front)."""
    tower = model.model.vision_tower
    drop = 1 if model.config.vision_feature_select_strategy == "default" else 0
    device = next(tower.parameters()).device
    return torch.cat([tower(pixel_values=pixels[i:i + batch].to(device), output_hidden_states=True)
                      .hidden_states[-1][:, drop:].float().cpu() for i in range(0, len(pixels), batch)])


@torch.no_grad()
def calibrate_projector(model, patches: torch.Tensor) -> dict:
    """Start the fresh projector at the LLM's scale: standardise the vision features (folded into
    the first linear layer of LLaVA's projector) and scale the last layer so image tokens have the
    RMS of the LLM's word embeddings. Raw ViT features are ~60x larger than SmolLM2's embeddings;
    uncalibrated, the frozen LLM barely reads them in a few hundred steps. `patches`: from
    `patch_features`."""
    projector = model.model.multi_modal_projector
    features = patches.flatten(0, 1)
    if hasattr(projector, "linear_1"):  # LLaVA's MLP / linear projector (the query adapters normalise already)
        mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
        projector.linear_1.bias -= projector.linear_1.weight @ (mean / std)
        projector.linear_1.weight /= std
        last = projector.linear_2
        out = projector(features)
    else:
        last = projector.out
        out = projector(patches)
    target = model.get_input_embeddings().weight.pow(2).mean().sqrt()
    factor = target / out.pow(2).mean().sqrt()
    last.weight *= factor
    last.bias *= factor
    return {"feature_rms": round(features.pow(2).mean().sqrt().item(), 4), "embedding_rms": round(target.item(), 4)}


def ground_projector(model, tokenizer, data, *, probe_steps: int = 300, places_and_signs: bool = False) -> dict:
    """Start LLaVA's MLP projector in the LLM's vocabulary: a linear probe on the frozen patch
    features finds which object (colour x kind x size) has its centre in each patch; those probe
    units open the projector's hidden layer, and its output layer maps each unit to the sum of
    the word embeddings " <size>", " <colour>", " <kind>". The remaining hidden units keep their
    (calibrated) random start at a tenth of the scale. Training then refines all of it; the
    frozen LLM reads the image from step 0 instead of discovering a new embedding space.
    `places_and_signs`: units for where the object is (" top" ... " right") and for the printed
    word over the patch (" stop") too."""
    patches = patch_features(model, data.pixels)
    calibration = calibrate_projector(model, patches[:256])
    words = [[f" {size}", f" {colour}", f" {kind}"] for colour, kind, size in SIZED]
    targets = [data.cells]
    if places_and_signs:
        targets += [data.places, data.signs]
        words += [[f" {w}"] for w in PLACES] + [[f" {w.lower()}"] for w in WORDS]
    x, y = patches.flatten(0, 1), torch.cat(targets, dim=-1).flatten(0, 1)
    split = int(0.8 * len(x))
    probe = torch.nn.Linear(x.shape[1], y.shape[1])
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(probe_steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(x[:split]), y[:split])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        held = (probe(x[split:]) > 0) == y[split:].bool()
        active = _install_probe(model, tokenizer, probe, words, probe(x)[y.bool()])
    return calibration | {"probe_patch_accuracy": round(held.all(1).float().mean().item(), 4),
                          "probe_unit_mean": round(active, 3)}


@torch.no_grad()
def _install_probe(model, tokenizer, probe: torch.nn.Linear, words: list[list[str]], when_present) -> float:
    """The probe's units open the MLP projector's hidden layer; its output layer maps unit i to the
    sum of the embeddings of `words[i]`, scaled by the unit's typical value when present (from the
    logits `when_present`); the other hidden units keep their calibrated start at a tenth."""
    projector = model.model.multi_modal_projector
    table = model.get_input_embeddings().weight
    def meaning(word: str) -> list[int]:  # its tokens, less a bare space (SmolLM2 writes " 2" as " ", "2")
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        return [i for i in ids if tokenizer.decode([i]).strip()] or ids

    concepts = torch.stack([sum(table[meaning(w)].mean(0) for w in ws) for ws in words])
    n = len(words)
    projector.linear_1.weight[:n] = probe.weight
    projector.linear_1.bias[:n] = probe.bias
    active = projector.act(when_present).mean()  # the unit's typical value when its object is there
    projector.linear_2.weight *= 0.1
    projector.linear_2.weight[:, :n] = concepts.T / active
    projector.linear_2.bias.zero_()
    return active.item()


def ground_on_answers(model, tokenizer, pixels, targets: torch.Tensor, known: torch.Tensor, words: list[str], *,
                      pairs: tuple[torch.Tensor, torch.Tensor] | None = None, counts=None,
                      probe_steps: int = 300) -> dict:
    """The grounded start without the scene world's truth: the user's own answers. Each image's
    target is the set of answer words it shows where its questions tell (`answer_words`); a linear probe on
    the patch tokens learns, per patch, which of those words it shows (multiple-instance: an
    image's word is there when its best patch says so), and is installed in the MLP projector as
    in `ground_projector`, so the image tokens start as the words the questions are answered with.
    `pairs` (`answer_pairs`): the words one object shows together are taught to fire on one patch
    (`pair_bce`), so a token says "pink heart" rather than "pink" next to "heart".
    `counts` (`answer_counts`, with a tower whose CLS token LLaVA keeps — "full" — and leads the
    features): units on the CLS token for "this image holds n of key k", installed as the word the
    data writes n with (and the key's words), so the LLM reads " 2" for "How many shapes?"; the
    patch tokens are their negatives, and the CLS token the word units' negatives."""
    features = patch_features(model, pixels)
    calibration = calibrate_projector(model, features[:256])
    cls, patches = (features[:, 0], features[:, 1:]) if counts is not None else (None, features)
    split = max(1, int(0.8 * len(patches)))
    probe = torch.nn.Linear(patches.shape[-1], len(words))
    units = counts.units() if counts is not None else []
    counter = torch.nn.Linear(patches.shape[-1], max(len(units), 1))
    if units:
        unit_targets = torch.stack([(counts.targets[:, k] == n).float() for k, n in units], dim=1)
        unit_known = torch.stack([(counts.targets[:, k] >= 0).float() for k, _ in units], dim=1)
    optimizer = torch.optim.Adam([*probe.parameters(), *counter.parameters()], lr=1e-2)
    for _ in range(probe_steps):
        per_patch = probe(patches[:split])
        loss = known_bce(per_patch.amax(dim=1), targets[:split], known[:split])  # (images, words): the best patch
        if pairs is not None:
            loss = loss + pair_bce(per_patch, pairs[0][:split], pairs[1][:split])
        if cls is not None:  # the CLS token shows no single object's words
            loss = loss + _silent(probe(cls[:split]))
        if units:  # ... and a patch says no count
            loss = loss + known_bce(counter(cls[:split]), unit_targets[:split], unit_known[:split]) \
                + _silent(counter(patches[:split]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        per_patch = probe(patches)
        image_logits = per_patch.amax(dim=1)
        right = ((image_logits[split:] > 0) == targets[split:].bool()).float() * known[split:]
        held = (right.sum() / known[split:].sum()).item() if known[split:].sum() else float("nan")
        # None: no held-out pair (or none given)
        binding = pair_accuracy(per_patch[split:], pairs[0][split:], pairs[1][split:]) if pairs is not None else None
        names = [[f" {w}"] for w in words]
        present = [image_logits[targets.bool()]]
        report: dict = {}
        if units:
            on_cls = counter(cls)
            present.append(on_cls[unit_targets.bool()])
            names += [[f" {counts.said[n]}", *(f" {w}" for w in counts.keys[k])] for k, n in units]
            report["probe_count_accuracy"] = _count_accuracy(on_cls[split:], units, counts.targets[split:])
            joined = torch.nn.Linear(probe.in_features, len(names))  # one layer: the word units, then the counts
            joined.weight.copy_(torch.cat([probe.weight, counter.weight]))
            joined.bias.copy_(torch.cat([probe.bias, counter.bias]))
            probe = joined
        active = _install_probe(model, tokenizer, probe, names, torch.cat(present))
    return calibration | {"probe_word_accuracy": round(held, 4), "probe_words": len(words),
                          "probe_unit_mean": round(active, 3), "probe_pair_accuracy": binding} | report


def _silent(logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of every unit against 0: these features must not fire them."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def _count_accuracy(logits: torch.Tensor, units: list[tuple[int, int]], targets: torch.Tensor) -> float | None:
    """How often the strongest count unit of each key is the told count, where a count is told."""
    right = told = 0
    for k in sorted({k for k, _ in units}):
        mine = [i for i, (key, _) in enumerate(units) if key == k]
        said = torch.tensor([units[i][1] for i in mine])[logits[:, mine].argmax(-1)]
        known = targets[:, k] >= 0
        right += int((said[known] == targets[known, k]).sum())
        told += int(known.sum())
    return round(right / told, 4) if told else None


@torch.no_grad()
def evaluate_qa(model, processor, items: list[Example], pixels, *, limit: int | None = None, batch_size: int = 16,
                score=None, shared: bool = True, new_tokens: int | None = None, ranks: Ranks | None = None) -> dict:
    """Greedy answers to held-out questions (`items`, each asked with its own system prompt);
    accuracy per type, and POPE's yes-ratio / precision / recall / F1 for each yes/no type
    (under "pope"). `score(reply, answer, type)`: the scene scorer by default. `shared`: the
    questions about one image (with one system prompt) are answered together, the image and the
    prompt before the question read once for all of them (`answer_together`); False: each
    question whole, `batch_size` at a time. `new_tokens`: the reply's length limit (default: the
    longest reference answer's tokens + 2, at least 4). `ranks`: a data-parallel run's processes
    answer a share of the batches each and every one gets the whole run's figures."""
    from ..scenes.scoring import is_correct

    score = score or is_correct
    model.eval()
    tok = processor.tokenizer
    tok.padding_side = "left"
    items = items[:limit]
    device = next(model.parameters()).device
    longest = max((len(tok(e.answer, add_special_tokens=False)["input_ids"]) for e in items), default=1)
    new_tokens = new_tokens or max(4, longest + 2)
    if shared:
        groups: dict[tuple[int, str | None], list[Example]] = {}
        for e in items:
            groups.setdefault((e.scene, e.system), []).append(e)
        batches = [g[i:i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]
    else:
        batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    answered: list[tuple[str, int, dict]] = []  # each question's type, right or not, reply and reference
    for batch in batches[ranks.rank::ranks.world] if ranks is not None else batches:
        if shared:
            replies = answer_together(model, processor, batch, pixels, new_tokens)
        else:
            enc = tok([_prompt(processor, e.system, e.text) for e in batch], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(device)
            with _autocast(device):
                out = model.generate(**enc, pixel_values=pixels[[e.scene for e in batch]].to(device),
                                     max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            replies = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        answered += [(item.type, int(score(reply, item.answer, item.type)),
                      {"reference": [item.answer], "prediction": reply}) for item, reply in zip(batch, replies)]
    model.train()
    if ranks is not None:
        answered = ranks.collect(answered)
    correct: dict[str, list[int]] = {}
    said: dict[str, list[dict]] = {}  # yes/no questions' replies, for POPE's numbers
    for qtype, right, row in answered:
        correct.setdefault(qtype, []).append(right)
        said.setdefault(qtype, []).append(row)
    from ..eval.stats import pope

    yes_no = {t: pope(rows) for t, rows in sorted(said.items())
              if all(r["reference"][0].strip().lower() in ("yes", "no") for r in rows)}
    return {t: round(sum(v) / len(v), 4) for t, v in sorted(correct.items())} | {
        "questions": sum(len(v) for v in correct.values())} | ({"pope": yes_no} if yes_no else {})


@torch.no_grad()
def answer_together(model, processor, batch: list[Example], pixels, new_tokens: int) -> list[str]:
    """Greedy replies to questions about one image (one `scene`, one system prompt): the tokens
    they share — the system prompt, the image, the start of the user turn — go through the model
    once, their keys and values are copied for each question, and only each question's own
    tokens are read after them (padded between the two, masked). The same computation as asking
    each question whole: a 64-token image and its prompt are ~80 % of a short question's tokens,
    so the held-out evaluation takes a fraction of the time."""
    tok = processor.tokenizer
    device = next(model.parameters()).device
    rows = [tok(_prompt(processor, e.system, e.text), add_special_tokens=False)["input_ids"] for e in batch]
    common = 0
    while all(len(r) > common + 1 for r in rows) and len({r[common] for r in rows}) == 1:
        common += 1  # the longest common start, each question keeping at least one token of its own
    image_id = model.config.image_token_id
    if image_id in [t for r in rows for t in r[common:]]:
        raise ValueError("the questions of a shared batch must share their image tokens")
    with _autocast(device):
        prefix = model(input_ids=torch.tensor([rows[0][:common]], device=device),
                       pixel_values=pixels[[batch[0].scene]].to(device), use_cache=True)
    name = "cache" if "cache" in prefix else "past_key_values"  # transformers >= 5.2x calls it `cache`
    cache = prefix[name]
    cache.batch_repeat_interleave(len(batch))
    own = [r[common:] for r in rows]
    width = max(len(r) for r in own)
    pad = tok.pad_token_id
    ids = torch.tensor([rows[0][:common] + [pad] * (width - len(r)) + r for r in own], device=device)
    mask = torch.tensor([[1] * common + [0] * (width - len(r)) + [1] * len(r) for r in own], device=device)
    with _autocast(device):
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=pad, **{name: cache})
    return tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)


def _autocast(device: torch.device, bf16: bool | None = None):
    """bf16 autocast (mixed precision) when `bf16`, or with None on CUDA only (inference: the CPU
    answers in float32, as the VLM plugin serves the model); else nothing (float32)."""
    import contextlib

    if bf16 or (bf16 is None and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


PRECISIONS = ("auto", "fp32", "bf16")


def training_bf16(precision: str, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast: `precision` "bf16" or "fp32" say so; "auto" does
    where the device computes bf16 natively — CUDA, and CPUs with AVX512-BF16 or AMX (oneDNN's
    check), where a step takes ~0.6x the float32 time — and trains in float32 elsewhere."""
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: use {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class AdapterData:
    """What a training run reads: preprocessed pixels, the examples of each stage (indices into
    `pixels`), the held-out questions (indices into `eval_pixels`) and how to score a reply."""

    pixels: torch.Tensor
    eval_pixels: torch.Tensor
    captions: list[Example]
    questions: list[Example]
    eval_items: list[Example]
    types: tuple[str, ...]
    score: Any = None  # None: the scene scorer
    grounding: Any = None  # SceneTensors for the grounded MLP start (the scene world, own encoder)
    calibration_pixels: torch.Tensor | None = None
    summary: dict = field(default_factory=dict)
    #: the questions with the answers stage 4 trains (position with its reasons); None: no stage 4
    explained: list[Example] | None = None


def scene_data(recipe: AdapterRecipe, tower: Tower, grounded: bool) -> AdapterData:
    """The scene world: training, held-out and calibration scenes of the recipe's seed."""
    start = make_scenes(f"calibrate-{recipe.seed}", recipe.probe_scenes if grounded else 256)
    train = make_scenes(f"adapter-train-{recipe.seed}", recipe.train_scenes)
    held_out = make_scenes(f"heldout-{recipe.seed}", recipe.eval_scenes)
    if not tower.own:  # scene tensors are preprocessed for mmagent's encoder; others have their own processor
        from ..scenes import render

        for data in (start, train, held_out):
            data.pixels = preprocess(tower, [render(s) for s in data.scenes])
    types = READ_TYPES if recipe.places_and_signs else QA_TYPES
    return AdapterData(train.pixels, held_out.pixels, scene_captions(train.scenes), scene_questions(train.scenes, types),
                       eval_examples(held_out.scenes, types), types, grounding=start if grounded else None,
                       calibration_pixels=start.pixels,
                       summary={"data": "scene world", "train_images": recipe.train_scenes,
                                "eval_images": recipe.eval_scenes},
                       explained=scene_questions(train.scenes, types, explained=True))


class Grounding(NamedTuple):
    """The user's data as the grounded start reads it (`ground_on_answers`): the probe's images,
    their answer words (`answer_words`), pairs (`answer_pairs`) and counts (`answer_counts`, or None)."""

    images: list[int]
    targets: torch.Tensor
    known: torch.Tensor
    pairs: tuple[torch.Tensor, torch.Tensor]
    words: list[str]
    counts: Any = None

    @property
    def units(self) -> int:
        """The projector's hidden units the probe takes."""
        return len(self.words) + (len(self.counts.units()) if self.counts is not None else 0)


class LazyPixels:
    """Pixels of a pretrained tower's processor, made per batch from the stored uint8 images (a
    4,000-image set at 224 px would be 2.4 GB as float tensors)."""

    def __init__(self, tower: Tower, images: list):
        self.tower, self.images = tower, images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices) -> torch.Tensor:
        from PIL import Image

        if isinstance(indices, slice):
            indices = range(*indices.indices(len(self.images)))
        return preprocess(self.tower, [Image.fromarray(self.images[int(i)]) for i in indices])


def answer_matches(reply: str, answer: str, qtype: str | None = None) -> bool:
    """The user-data scorer: the reply begins with the answer's words (case, punctuation and a
    leading article aside); a yes/no answer is the reply's first yes or no."""
    import re

    def words(text: str) -> list[str]:
        tokens = re.findall(r"[\w']+", text.lower())
        return tokens[1:] if tokens[:1] in (["a"], ["an"], ["the"]) and len(tokens) > 1 else tokens

    said, want = words(reply), words(answer)
    if not want:
        return False
    if want in (["yes"], ["no"]):
        return next((t for t in said if t in ("yes", "no")), "") == want[0]
    return said[:len(want)] == want


def user_data(recipe: AdapterRecipe, tower: Tower, on_data=None) -> AdapterData:
    """The user's data (`recipe.data`, `mmagent.train.user_data`): its training images' captions
    and questions, its held-out images' questions asked as the adapter graph asks them."""
    from .user_data import load_training_data

    data = load_training_data(recipe.data, val=recipe.val, val_fraction=recipe.val_fraction, seed=recipe.seed,
                              image_size=tower.image_size if tower.own else None)
    if on_data is not None:
        on_data(data)
    if tower.own:  # small and square already: preprocess them all once
        from PIL import Image

        pixels: Any = torch.cat([preprocess(tower, [Image.fromarray(im) for im in data.images[i:i + 512]])
                                 for i in range(0, len(data.images), 512)])
    else:
        pixels = LazyPixels(tower, data.images)
    train = data.train
    captions = [Example(e.image, None, CAPTION_PROMPT, e.answer, "caption") for e in train if e.kind == "caption"]
    questions = [Example(e.image, None, e.question, e.answer, e.type) for e in train if e.kind == "qa"]
    if not questions and not captions:
        raise InputError(f"{data.source}: no training examples left after holding out the validation images")
    types = tuple(t for t, _ in Counter(q.type for q in questions).most_common())
    from .user_data import answer_counts, answer_pairs, answer_words

    images = data.train_images[:recipe.probe_scenes]
    targets, known, words = answer_words(data.train, images)
    pairs = answer_pairs(data.train, images, words)
    # counts on the CLS token: only where LLaVA keeps it (an encoder trained with them says "full")
    counts = answer_counts(data.train, images, words) if tower.strategy == "full" and tower.extra_tokens else None
    if counts is not None and not counts.keys:
        counts = None
    grounding = Grounding(images, targets, known, pairs, words, counts) if words else None
    held = [Example(e.image, QA_SYSTEM, e.question, e.answer, e.type) for e in data.val if e.kind == "qa"]
    calibration = pixels[list(data.train_images[:256])]
    return AdapterData(pixels, pixels, captions, questions, held, types, score=answer_matches, grounding=grounding,
                       calibration_pixels=calibration, summary=data.counts() | {"source": data.source})




class MicroBatches:
    """A step's batch through the model in as few pieces as the device's memory allows: the whole
    batch at once until CUDA runs out of memory, then halves, remembered for the rest of the run
    (batch size scaled to memory). The gradients are accumulated, each piece weighted by its share,
    so the step is the same computation whatever the pieces — only the padding, and therefore the
    last bits, can differ. On the CPU the batch is never split. In a data-parallel run `batch` is
    this rank's share of a step's `of` examples, weighted so that the ranks' gradients sum to the
    step's."""

    def __init__(self, model, processor, pixels, device: torch.device, *, bf16: bool, quiet: bool = False):
        self.model, self.processor, self.pixels, self.device, self.quiet = model, processor, pixels, device, quiet
        self.bf16 = bf16  # the run's training precision (`training_bf16`): bf16 autocast or float32
        self.size: int | None = None  # the largest piece that fitted; None: the whole batch

    def backward(self, batch: list[Example], of: int | None = None) -> float:
        whole = of or len(batch)
        if not batch:  # a rank with no share of a batch smaller than the ranks
            return 0.0
        while True:
            size = min(self.size or len(batch), len(batch))
            try:
                total = 0.0
                for start in range(0, len(batch), size):
                    piece = batch[start:start + size]
                    ids, mask, labels, keep = encode_batch(self.processor, piece)
                    with _autocast(self.device, self.bf16):
                        loss = answer_loss(self.model, self.pixels[[b.scene for b in piece]].to(self.device),
                                           ids.to(self.device), mask.to(self.device), labels.to(self.device), keep)
                    if len(piece) < whole:
                        loss = loss * (len(piece) / whole)
                    loss.backward()
                    total += loss.item()
                return total
            except torch.OutOfMemoryError:
                if size == 1:
                    raise InputError(f"{self.device}: out of memory with one example a step; use a smaller "
                                     f"--llm or another device") from None
                self.model.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.size = (size + 1) // 2
                if not self.quiet:
                    import sys

                    print(f"out of memory at {size} examples a piece: now {self.size} (gradients accumulated)",
                          file=sys.stderr)


def resolve_device(name: str, ranks: Ranks | None = None) -> torch.device:
    """--device: auto is CUDA when there is one. In a data-parallel run (torchrun) each process
    takes the GPU of its LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: this machine has no CUDA device")
    ranks = ranks or Ranks.told()  # the CLI's early check: before the process group is joined
    if device.type == "cuda" and ranks.world > 1:
        if device.index is not None:
            raise InputError(f"--device {name} with torchrun: each process takes the GPU of its LOCAL_RANK; "
                             f"use --device auto or cuda")
        device = torch.device("cuda", ranks.local % torch.cuda.device_count())
    return device


def train_adapter(encoder_dir: Path | None, out: Path, recipe: AdapterRecipe, *, resume: bool = False,
                  quiet: bool = False, on_data=None) -> dict:
    """Train the adapter (and LoRA) on the scene world or on `recipe.data`; evaluate on held-out
    images; save `out/model` (a LLaVA folder), `out/metrics.json` and, for mmagent's own encoder,
    the small export `out/small`. `on_data(TrainingData)`: called once the user's data is read.
    Under torchrun, every process trains its share of each batch and answers its share of the
    held-out questions (`Ranks`); rank 0 saves and returns the metrics, the others return {}."""
    check_position_share(recipe.position_share)  # before hours of stages 1-3, not when stage 4 starts
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ranks = Ranks.join()  # one process, or one of torchrun's (docs/scene-vlm.md, "Several GPUs")
    device = resolve_device(recipe.device, ranks)
    pin_recipe(out, asdict(recipe), resume, write=ranks.main)
    if not ranks.main:
        on_data = None
    init = Path(recipe.init) if recipe.init else None
    if init is not None:  # a trained model: its encoder, projector and LoRA; nothing to ground
        encoder_dir = init
        model, processor = load_small(init, recipe)
        tower = load_tower(init, None)
    else:
        tower = load_tower(encoder_dir, recipe.vision_encoder)
        model, processor = build_llava(tower, recipe)
    hidden = model.config.text_config.hidden_size
    units = len(SIZED) + (len(PLACES) + len(WORDS) if recipe.places_and_signs else 0)
    grounded = recipe.projector == "mlp" and tower.own and recipe.data is None and hidden >= units
    if recipe.data is not None:
        data = user_data(recipe, tower, on_data)
    else:
        data = scene_data(recipe, tower, grounded and init is None)
    if init is not None:
        calibration = {"init": str(init)}
    elif grounded:  # the probe needs the MLP's hidden layer and the scenes' truth; the others only calibrate
        calibration = ground_projector(model, processor.tokenizer, data.grounding,
                                       places_and_signs=recipe.places_and_signs)
    elif recipe.projector == "mlp" and data.grounding is not None and data.grounding.units <= hidden:
        g = data.grounding  # the user's data: grounded on its answer words (and counts)
        calibration = ground_on_answers(model, processor.tokenizer, data.pixels[list(g.images)], g.targets, g.known,
                                        g.words, pairs=g.pairs, counts=g.counts)
        grounded = True
    else:
        calibration = calibrate_projector(model, patch_features(model, data.calibration_pixels[:256]))
    model.to(device)
    projector_lr = recipe.lr if recipe.lr is not None else (3e-5 if grounded else 1e-3)
    turns = recipe.turns if recipe.turns is not None else (4 if recipe.data is not None else 1)
    stages = [("caption", recipe.caption_steps if data.captions else 0), ("qa", recipe.qa_steps),
              ("focus", recipe.focus_steps), ("relations", recipe.relations_steps if data.explained else 0)]
    timings, lora = {}, None
    loras = small_loras(init) if init is not None else []  # folded in already, in this order
    bf16 = training_bf16(recipe.precision, device)
    fit = MicroBatches(model, processor, data.pixels, device, quiet=quiet, bf16=bf16)
    for stage, steps in stages:
        if steps <= 0:
            continue
        if stage == "relations" and lora is not None:  # keep stages 2-3's LoRA, fold it in, start a fresh one
            if ranks.main:
                lora.save_pretrained(out / "lora")
            loras.append(out / "lora")
            model, lora = lora.merge_and_unload(), None
        if stage != "caption" and recipe.lora_rank > 0 and lora is None:
            if stage == "relations":  # the same fresh LoRA on a resume
                torch.manual_seed(recipe.seed + len(loras))
            lora = add_lora(model, recipe.lora_rank, recipe.lora_modules)
            lora_name = "lora" if stage != "relations" else "lora-relations"
        trainable = TrainableState(model)
        ranks.same_start(trainable.params.values())
        if stage == "relations":
            items = relation_examples(data.captions, data.explained, data.types, seed=recipe.seed,
                                      position_share=recipe.position_share)
        else:
            kind = {"qa": "mixed", "focus": "balanced"}.get(stage, stage)
            items = stage_examples(data.captions, data.questions, kind, data.types, turns=turns if stage == "qa" else 1)
        if not items:
            continue
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in named if "lora_" not in n and "vision_tower" not in n],
                   "lr": projector_lr},
                  {"params": [p for n, p in named if "lora_" in n], "lr": recipe.lora_lr},
                  {"params": [p for n, p in named if "vision_tower" in n], "lr": recipe.vision_lr}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
        scheduler = warmup_cosine(optimizer, steps, 0.1)

        def step(i: int, items=items, optimizer=optimizer, stage=stage) -> dict:
            batch = [items[j] for j in batch_indices(i, len(items), recipe.batch_size, recipe.seed + len(stage))]
            optimizer.zero_grad()
            loss = fit.backward(ranks.share(batch), of=len(batch))
            ranks.sum_grads(trainable.params.values())
            optimizer.step()
            return {"loss": ranks.total(loss)}

        run_loop(out / stage, steps, step, modules={"trainable": trainable},
                 optimizer=optimizer, scheduler=scheduler, resume=resume, label=f"adapter {stage}", quiet=quiet,
                 checkpoint_every=recipe.checkpoint_every, ranks=ranks)
        timings[f"{stage}_seconds"] = logged_seconds(out / stage / "log.jsonl")
    if lora is not None:  # keep the LoRA weights apart (small export), then fold them into the LLM
        if ranks.main:
            lora.save_pretrained(out / lora_name)
        loras.append(out / lora_name)
        model = lora.merge_and_unload()
    t0 = time.perf_counter()
    # room for the longest answer a scene model is trained to give (position with its reasons, from
    # this run's stage 4 or an --init model's); generation stops at the end token all the same
    said = [len(processor.tokenizer(e.answer, add_special_tokens=False)["input_ids"]) for e in data.explained or []]
    metrics = evaluate_qa(model, processor, data.eval_items, data.eval_pixels, score=data.score,
                          new_tokens=max(said) + 2 if said else None, ranks=ranks)  # each rank a share
    if not ranks.main:  # rank 0 saves the (same) weights and the figures
        return {}
    metrics.update(timings, calibration=calibration, eval_seconds=round(time.perf_counter() - t0, 1),
                   device=str(device), processes=ranks.world, precision="bf16" if bf16 else "fp32", data=data.summary,
                   recipe=asdict(recipe))
    model.to("cpu").save_pretrained(out / "model")
    processor.save_pretrained(out / "model")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if tower.own and recipe.unfreeze_vision_layers == 0:
        export_small(model, encoder_dir, recipe, metrics, out / "small", loras=loras)
    return metrics


LORA_MODULES = {"attention": "q_proj|k_proj|v_proj|o_proj",
                "all": "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj"}


def add_lora(model, rank: int, modules: str = "all"):
    """Wrap `model` with LoRA adapters on the LLM's projections (the projector stays trainable)."""
    from peft import LoraConfig, get_peft_model

    if modules not in LORA_MODULES:
        raise InputError(f"lora_modules must be one of {', '.join(LORA_MODULES)}")
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                        target_modules=rf".*language_model.*\.({LORA_MODULES[modules]})")
    wrapped = get_peft_model(model, config)
    for p in model.model.multi_modal_projector.parameters():
        p.requires_grad = True
    return wrapped


def small_loras(folder: Path) -> list[Path]:
    """A small export's LoRA folders in the order they were trained (and are folded in): `lora`,
    then `lora-1`, `lora-2` ... (a stage 4, or a run started from this model with `init`)."""
    def order(path: Path) -> int:
        number = path.name.removeprefix("lora").removeprefix("-")
        return int(number) if number.isdigit() else 0 if path.name == "lora" else -1

    found = [p for p in Path(folder).glob("lora*") if (p / "adapter_config.json").is_file() and order(p) >= 0]
    return sorted(found, key=order)


def load_small(folder: Path, recipe: AdapterRecipe | None = None):
    """(model, processor): a small export assembled into the LLaVA model it was trained as — its
    encoder and projector, the LLM (from the zoo or a path) with every LoRA folded in, in order.
    `recipe`: a run starting from it, which must not ask for another projector or LLM."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "projector.safetensors").is_file() or not (folder / "recipe.json").is_file():
        raise InputError(f"{folder} is not a trained adapter's small export (projector.safetensors, recipe.json)")
    saved = AdapterRecipe(**json.loads((folder / "recipe.json").read_text())["adapter"])
    if recipe is not None:
        for name in ("projector", "num_queries", "llm"):
            if getattr(recipe, name) != getattr(saved, name):
                raise InputError(f"{folder} was trained with {name} {getattr(saved, name)}; "
                                 f"this run asks for {getattr(recipe, name)}")
    model, processor = build_llava(folder, saved)
    model.model.multi_modal_projector.load_state_dict(load_file(folder / "projector.safetensors"))
    for lora in small_loras(folder):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, lora).merge_and_unload()
    for p in model.parameters():
        p.requires_grad = False
    for p in model.model.multi_modal_projector.parameters():
        p.requires_grad = True
    return model, processor


def export_small(model, encoder_dir: Path, recipe: AdapterRecipe, metrics: dict, dest: Path,
                 loras: list[Path] = ()) -> None:
    """What this training produced and nothing else (a few MB): the encoder, the projector, the
    LoRA weights if any (`loras`, in the order they were folded in: `lora`, `lora-1` ...), the
    recipes and metrics. `plugins/scene_vlm` ships such a folder; the zoo re-assembles the model
    from it (`load_small`). `encoder_dir`: a `train encoder` folder, or the small export a run
    started from."""
    import shutil

    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    if (dest / "vision").exists():
        shutil.rmtree(dest / "vision")
    shutil.copytree(encoder_dir / "vision", dest / "vision")
    for old in dest.glob("lora*"):
        shutil.rmtree(old)
    for i, lora in enumerate(loras):
        (into := dest / (f"lora-{i}" if i else "lora")).mkdir()
        for name in ("adapter_config.json", "adapter_model.safetensors"):  # not peft's model-card stub
            shutil.copy2(lora / name, into / name)
    state = {k: v.contiguous() for k, v in model.model.multi_modal_projector.state_dict().items()}
    save_file(state, dest / "projector.safetensors")
    def read(name: str) -> dict:
        return json.loads((encoder_dir / name).read_text()) if (encoder_dir / name).is_file() else {}

    found = read("metrics.json")
    if "adapter" in found:  # started from a small export: its encoder, and the runs before this one (oldest first)
        earlier = read("recipe.json")
        recipes = {"encoder": earlier.get("encoder"), "adapter": asdict(recipe),
                   "earlier": [*earlier.get("earlier", []), earlier.get("adapter")]}
        figures = {"encoder": found["encoder"], "adapter": metrics,
                   "earlier": [*found.get("earlier", []), found.get("adapter")]}
    else:  # a `train encoder` folder: its metrics hold its recipe
        recipes = {"encoder": found.pop("recipe", None), "adapter": asdict(recipe)}
        figures = {"encoder": found, "adapter": metrics}
    (dest / "recipe.json").write_text(json.dumps(recipes, indent=2))
    (dest / "metrics.json").write_text(json.dumps(figures, indent=2))
