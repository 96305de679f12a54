"""Two-tower pretraining of the scene encoder (CLIP-style).

A small ViT (transformers' CLIPVisionModelWithProjection, so the result drops into a LLaVA
folder) is trained on scene images against frozen MiniLM embeddings of their full descriptions
(symmetric InfoNCE, the text tower fixed), with supervised heads on its patch tokens for what the
generator knows exactly — per patch, which objects (colour x kind x size) have their centre in it;
over the image, which colour x kind pairs are present, how many of each kind, how many in all — so
the patch tokens the adapter will read carry those facts, each where its object is. Reports retrieval R@1,
zero-shot classification by text prompts, and attribute accuracy on held-out scenes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..scenes import COLOURS, KINDS
from .loop import Ranks, batch_indices, pin_recipe, run_loop, warmup_cosine
from .scene_data import COMBOS, GRID, IMAGE_SIZE, MAX_COUNT, PLACES, SIZED, SceneTensors, make_scenes
from .user_data import MAX_COUNT as MAX_ANSWERED_COUNT


@dataclass
class EncoderRecipe:
    seed: int = 0
    train_scenes: int = 20000
    eval_scenes: int = 500
    steps: int = 6000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    hidden_size: int = 192
    layers: int = 4
    heads: int = 4
    patch_size: int = 16
    contrastive_weight: float = 1.0
    #: scenes: the patch tokens also learn where their object is in words (row, column) and which
    #: printed word covers them, so the adapter can answer position and read-the-word questions
    #: (on in the CLI and in the shipped scene VLM; off: the earlier recipe, reading 0)
    places_and_signs: bool = False
    #: the user's data: each training image shifted by up to this fraction of its side (edges
    #: repeated), a new shift every step — a few thousand images then look like many more. 0: off.
    #: (A shift keeps what and where-relative-to-what; a flip would swap "left" and "right".)
    shift: float = 0.0
    #: the user's data: the weight of the CLS token's count loss (`answer_counts`) in the step's loss.
    #: Counting is easy for the CLS token; at 1.0 it held the rest back (toy set, 3,000 steps: held-out
    #: shape 0.760, yes/no 0.904); at 0.1, shape 0.997, yes/no 0.990, and the CLS counts 0.990 either way.
    count_weight: float = 0.1

    @classmethod
    def for_data(cls, **changes) -> "EncoderRecipe":
        """The default recipe on the user's data (`train_encoder_on_data`): 8-px patches (a 64-px
        image is 64 tokens: shapes a few patches wide are seen in parts, not cut in quarters —
        held-out shape answers 0.59 with 16-px patches, 0.78 with 8-px on the toy set), a narrower
        ViT to keep the step cheap, 3,000 steps, shifted images."""
        return cls(**{"patch_size": 8, "hidden_size": 128, "steps": 3000, "shift": 0.0625, **changes})


def vision_config(recipe: EncoderRecipe, text_dim: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=recipe.patch_size, hidden_size=recipe.hidden_size,
                            intermediate_size=recipe.hidden_size * 2, num_hidden_layers=recipe.layers,
                            num_attention_heads=recipe.heads, projection_dim=text_dim, hidden_act="gelu")


class SceneEncoder(nn.Module):
    def __init__(self, config, places_and_signs: bool = False):
        super().__init__()
        from transformers import CLIPVisionModelWithProjection

        self.vision = CLIPVisionModelWithProjection(config)
        hidden = config.hidden_size
        self.cells = nn.Linear(hidden, len(SIZED))
        self.presence = nn.Linear(hidden, len(COMBOS))
        self.counts = nn.Linear(hidden, len(KINDS) * (MAX_COUNT + 1))
        self.total = nn.Linear(hidden, MAX_COUNT + 1)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if places_and_signs:
            from ..scenes.vocab import WORDS

            self.places = nn.Linear(hidden, len(PLACES))
            self.signs = nn.Linear(hidden, len(WORDS))

    def forward(self, pixels: torch.Tensor):
        out = self.vision(pixel_values=pixels)
        tokens = out.last_hidden_state[:, 1:]  # what LLaVA's "default" strategy passes on
        patches = tokens.mean(dim=1)
        extra = (self.places(tokens), self.signs(tokens)) if hasattr(self, "places") else ()
        return (F.normalize(out.image_embeds, dim=-1), self.presence(patches),
                self.counts(patches).view(-1, len(KINDS), MAX_COUNT + 1), self.total(patches), self.cells(tokens),
                *extra)


def _per_patch(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy summed over the targets of a patch, averaged over patches."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / logits[..., 0].numel()


def losses(model: SceneEncoder, data: SceneTensors, text: torch.Tensor, idx: torch.Tensor, recipe,
           ranks: Ranks | None = None) -> dict:
    """The step's losses on the batch `idx`; in a data-parallel run each rank encodes its share and
    the outputs are gathered, so the contrastive loss sees the whole batch as its negatives."""
    ranks = ranks or Ranks()
    emb, presence, counts, total, cells, *extra = (ranks.gather(o) for o in model(data.pixels[ranks.share(idx)]))
    logits = model.logit_scale.exp().clamp(max=100) * emb @ text[idx].T
    target = torch.arange(len(idx))
    contrastive = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    attributes = (F.binary_cross_entropy_with_logits(presence, data.presence[idx])
                  + F.cross_entropy(counts.reshape(-1, MAX_COUNT + 1), data.counts[idx].reshape(-1))
                  + F.cross_entropy(total, data.total[idx])
                  + _per_patch(cells, data.cells[idx]))
    if extra:
        attributes = attributes + _per_patch(extra[0], data.places[idx]) + _per_patch(extra[1], data.signs[idx])
    return {"loss": recipe.contrastive_weight * contrastive + attributes, "contrastive": contrastive,
            "attributes": attributes}


@torch.no_grad()
def evaluate(model: SceneEncoder, data: SceneTensors, text: torch.Tensor, embed) -> dict:
    model.eval()
    outs = [model(data.pixels[i:i + 256]) for i in range(0, len(data.pixels), 256)]
    emb = torch.cat([o[0] for o in outs])
    presence = torch.cat([o[1] for o in outs]) > 0
    counts = torch.cat([o[2] for o in outs]).argmax(-1)
    total = torch.cat([o[3] for o in outs]).argmax(-1)
    cells = torch.cat([o[4] for o in outs]) > 0
    extra = {}
    if len(outs[0]) > 5:  # where each object is, and the printed word, per patch
        places = torch.cat([o[5] for o in outs]) > 0
        signs = torch.cat([o[6] for o in outs]).argmax(-1)
        covered = data.signs.sum(-1) > 0
        extra = {"patch_places_all_correct": round((places == data.places.bool()).all(2).all(1).float().mean().item(), 4),
                 "sign_patch_accuracy": round((signs[covered] == data.signs.argmax(-1)[covered]).float().mean().item(), 4)
                 if covered.any() else None}
    sims = emb @ text.T
    r_at_1 = (sims.argmax(1) == torch.arange(len(emb))).float().mean().item()
    prompts = [f"a {colour} {kind}" for colour, kind in COMBOS]
    prompt_emb = F.normalize(torch.as_tensor(embed(prompts)), dim=-1)
    single = (data.total == 1).nonzero().flatten()
    zero_shot = ((emb[single] @ prompt_emb.T).argmax(1) == data.presence[single].argmax(1)).float().mean().item()
    model.train()
    return {
        "retrieval_r_at_1": round(r_at_1, 4), "retrieval_candidates": len(emb),
        "zero_shot_accuracy": round(zero_shot, 4), "zero_shot_scenes": len(single),
        "presence_accuracy": round((presence == data.presence.bool()).float().mean().item(), 4),
        "presence_all_correct": round((presence == data.presence.bool()).all(1).float().mean().item(), 4),
        "count_accuracy": round((counts == data.counts).float().mean().item(), 4),
        "total_accuracy": round((total == data.total).float().mean().item(), 4),
        "patch_objects_all_correct": round((cells == data.cells.bool()).all(2).all(1).float().mean().item(), 4),
    } | extra


def train_encoder(out: Path, recipe: EncoderRecipe, *, resume: bool = False, quiet: bool = False) -> dict:
    """Train, evaluate on held-out scenes, and save `out/vision` (a CLIPVisionModelWithProjection folder)."""
    from mmagent.backends import get_backend

    if recipe.patch_size * GRID != IMAGE_SIZE:
        raise InputError(f"patch_size must be {IMAGE_SIZE // GRID}: the per-patch targets use a {GRID}x{GRID} grid")
    ranks = Ranks.join()
    pin_recipe(out, asdict(recipe), resume, write=ranks.main)
    torch.manual_seed(recipe.seed)
    embedder = get_backend("embed", "minilm", device="cpu")
    t0 = time.perf_counter()
    train = make_scenes(f"train-{recipe.seed}", recipe.train_scenes)
    held_out = make_scenes(f"eval-{recipe.seed}", recipe.eval_scenes)
    text_train = F.normalize(torch.as_tensor(embedder.embed(train.descriptions)), dim=-1)
    text_eval = F.normalize(torch.as_tensor(embedder.embed(held_out.descriptions)), dim=-1)
    data_seconds = time.perf_counter() - t0
    model = SceneEncoder(vision_config(recipe, text_train.shape[1]), recipe.places_and_signs)
    ranks.same_start(model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = warmup_cosine(optimizer, recipe.steps, 0.05)

    def step(i: int) -> dict:
        parts = losses(model, train, text_train, batch_indices(i, len(train.pixels), recipe.batch_size, recipe.seed),
                       recipe, ranks)
        optimizer.zero_grad()
        (parts["loss"] / ranks.world).backward()  # every rank: the whole batch's loss, its share's gradient
        ranks.sum_grads(model.parameters())
        optimizer.step()
        return {k: v.item() for k, v in parts.items()}

    t1 = time.perf_counter()
    run_loop(out, recipe.steps, step, modules={"model": model}, optimizer=optimizer, scheduler=scheduler,
             resume=resume, label="encoder", quiet=quiet, ranks=ranks)
    if not ranks.main:  # rank 0 evaluates and saves the (same) weights
        ranks.wait()
        return {}
    metrics = evaluate(model, held_out, text_eval, embedder.embed)
    metrics.update(train_seconds=round(time.perf_counter() - t1, 1), data_seconds=round(data_seconds, 1),
                   parameters=sum(p.numel() for p in model.vision.parameters()), recipe=asdict(recipe))
    model.vision.save_pretrained(out / "vision")
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("vision.")}, out / "heads.pt")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    ranks.wait()  # the others go on (an adapter) once the encoder is on disk
    return metrics


# -- the user's own data ----------------------------------------------------------------------------------------


class QAEncoder(nn.Module):
    """The same small ViT, taught by the user's question/answer pairs themselves: a question (its
    frozen MiniLM embedding) attends over the patch tokens, and the pooled tokens with the question
    predict the answer (classification over the training answers, as VQA models before LLMs did);
    and each patch says which of the data's answer words ("pink", "heart") it shows, an image
    showing a word when its best patch does (multiple-instance), trained on the words its open
    questions are answered with; and the words one object shows together ("What colour is the
    heart?" pink; "Is there a pink heart?" no) must fire on one patch, or on none (`pair_bce`) —
    binding: without it a patch said "pink" and its neighbour "heart" a third of the time, and
    the answer head read shapes 0.78 on the toy set (0.99 with it). The patch tokens must then
    carry what the questions ask about, where it is, one object's words together. Questions
    answered with a number (`answer_counts`) teach the CLS token, through a linear head, how many
    of each counted thing the image holds: LLaVA's "full" strategy passes that token on, and the
    LLM reads the count instead of counting patch tokens (held-out counts 0.58 through the LLM
    without it on the toy set). Captions, when the data has them, also pull the image embedding
    towards their MiniLM embedding (InfoNCE)."""

    def __init__(self, config, question_dim: int, answers: int, words: int, count_keys: int = 0):
        super().__init__()
        from transformers import CLIPVisionModelWithProjection

        self.vision = CLIPVisionModelWithProjection(config)
        hidden = config.hidden_size
        self.words = nn.Linear(hidden, max(words, 1))  # per patch: which answer words it shows
        self.query = nn.Linear(question_dim, hidden)
        self.head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, answers))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.count_keys = count_keys
        if count_keys:  # on the CLS token: per counted thing, its count 0 ... MAX_COUNT
            self.counts = nn.Linear(hidden, count_keys * (MAX_ANSWERED_COUNT + 1))

    def forward(self, pixels: torch.Tensor, questions: torch.Tensor):
        """(image embedding, answer logits, per-patch word logits (B, patches, words), count logits
        (B, keys, MAX_ANSWERED_COUNT + 1) or None)."""
        out = self.vision(pixel_values=pixels)
        tokens = out.last_hidden_state[:, 1:]
        q = self.query(questions)  # (B, hidden)
        weights = torch.softmax((tokens @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(tokens.shape[-1]), dim=-1)
        pooled = (weights.unsqueeze(-1) * tokens).sum(1)
        counts = (self.counts(out.last_hidden_state[:, 0]).view(len(pixels), self.count_keys, -1)
                  if self.count_keys else None)
        return (F.normalize(out.image_embeds, dim=-1), self.head(torch.cat([pooled, q], dim=-1)),
                self.words(tokens), counts)


def shifted(pixels: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by a random offset of up to `fraction` of its side on each axis, the
    uncovered border filled by repeating the edge."""
    if fraction <= 0:
        return pixels
    n, _, h, w = pixels.shape
    pad = max(1, int(round(fraction * h)))
    padded = F.pad(pixels, (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).tolist()
    return torch.stack([padded[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(dy, dx))])


def known_bce(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the entries whose truth is known (`known` 1), the rest ignored."""
    per = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (per * known).sum() / known.sum().clamp(min=1)


def _pair_logits(patch_logits: torch.Tensor, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of each pair's two words at every patch: two (B, patches, K) tensors."""
    expand = (-1, patch_logits.shape[1], -1)
    return (patch_logits.gather(2, pairs[..., 0].unsqueeze(1).expand(*expand)),
            patch_logits.gather(2, pairs[..., 1].unsqueeze(1).expand(*expand)))


def shown_together(patch_logits: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(B, K): log P(one patch shows both words of each pair), the best patch's
    log sigmoid(a) + log sigmoid(b). `patch_logits` (B, patches, words), `pairs` (B, K, 2+)."""
    a, b = _pair_logits(patch_logits, pairs)
    return (F.logsigmoid(a) + F.logsigmoid(b)).amax(dim=1)


def pair_bce(patch_logits: torch.Tensor, pairs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binding, multiple-instance: for each (word a, word b, target) of `pairs` (B, K, 3; `mask`
    (B, K) 1 where set), the probability that one patch shows both words — the best patch's
    sigmoid(a)·sigmoid(b) — against the target (`answer_pairs`). `patch_logits`: (B, patches, words).
    log(1 - sigmoid(a)·sigmoid(b)) is computed as log(sigmoid(-a) + sigmoid(a)·sigmoid(-b)), so a
    patch that fires both words hard still gets a gradient when they must not be together."""
    if not mask.any():
        return patch_logits.sum() * 0.0
    a, b = _pair_logits(patch_logits, pairs)
    log_a = F.logsigmoid(a)
    both = (log_a + F.logsigmoid(b)).amax(dim=1)  # as `shown_together`, from the same gathers
    neither = torch.logaddexp(F.logsigmoid(-a), log_a + F.logsigmoid(-b)).amin(dim=1)
    target = pairs[..., 2].float()
    per = -(target * both + (1 - target) * neither)
    return (per * mask).sum() / mask.sum()


@torch.no_grad()
def pair_accuracy(patch_logits: torch.Tensor, pairs: torch.Tensor, mask: torch.Tensor) -> float | None:
    """How often one patch shows both words of a pair (P > 0.5) exactly when the target says so,
    over the set pairs; None when `mask` sets none."""
    if not mask.any():
        return None
    said = shown_together(patch_logits, pairs) > math.log(0.5)
    right = (said == pairs[..., 2].bool()).float() * mask
    return round((right.sum() / mask.sum()).item(), 4)


def train_encoder_on_data(out: Path, recipe: EncoderRecipe, data_source: str, *, val: str | None = None,
                          val_fraction: float = 0.1, resume: bool = False, quiet: bool = False,
                          on_data=None) -> dict:
    """`mmagent train encoder --data D`: the ViT learns from D's questions (and captions, if any);
    reports answer accuracy per type on the held-out images. Saves `out/vision` like `train_encoder`.
    `on_data(TrainingData)` is called once the data is read (the CLI prints its summary)."""
    from collections import Counter

    from mmagent.backends import get_backend

    from .scene_data import preprocess
    from .user_data import answer_counts, answer_pairs, answer_words, load_training_data

    ranks = Ranks.join()
    pin_recipe(out, asdict(recipe) | {"data": str(data_source), "val": val, "val_fraction": val_fraction}, resume,
               write=ranks.main)
    if not ranks.main:
        on_data = None
    torch.manual_seed(recipe.seed)
    t0 = time.perf_counter()
    data = load_training_data(data_source, val=val, val_fraction=val_fraction, seed=recipe.seed,
                              image_size=IMAGE_SIZE)
    if on_data is not None:
        on_data(data)
    from PIL import Image

    pixels = torch.cat([preprocess([Image.fromarray(im) for im in data.images[i:i + 512]])
                        for i in range(0, len(data.images), 512)])
    train = [e for e in data.train if e.kind == "qa"]
    held = [e for e in data.val if e.kind == "qa"]
    captions = [e for e in data.train if e.kind == "caption"]
    if not train:
        raise InputError(f"{data.source}: no training questions (the encoder learns from question/answer pairs; "
                         f"captions alone: train with `mmagent train adapter --data` and a pretrained "
                         f"--vision-encoder)")
    vocab = [a for a, n in Counter(e.answer.lower() for e in train).most_common() if n >= 2] or \
        [e.answer.lower() for e in train[:1]]
    index = {a: i for i, a in enumerate(vocab)}
    embedder = get_backend("embed", "minilm", device="cpu")
    texts = sorted({e.question for e in train + held} | {e.answer for e in captions})
    table = {t: i for i, t in enumerate(texts)}
    vectors = torch.cat([torch.as_tensor(embedder.embed(texts[i:i + 1024])) for i in range(0, len(texts), 1024)])
    vectors = F.normalize(vectors.float(), dim=-1)

    def rows(examples):
        return (torch.tensor([e.image for e in examples]), torch.tensor([table[e.question] for e in examples]),
                torch.tensor([index.get(e.answer.lower(), -100) for e in examples]))

    train_img, train_q, train_a = rows(train)
    cap_img = torch.tensor([e.image for e in captions], dtype=torch.long)
    cap_txt = torch.tensor([table[e.answer] for e in captions], dtype=torch.long)
    word_targets, word_known, words = answer_words(data.train, range(len(data.images)))  # held-out rows: unknown
    pairs, pair_mask = answer_pairs(data.train, range(len(data.images)), words)
    binding = bool(pair_mask.any())
    counts = answer_counts(data.train, range(len(data.images)), words)  # held-out rows: -100
    data_seconds = time.perf_counter() - t0
    model = QAEncoder(vision_config(recipe, vectors.shape[1]), vectors.shape[1], len(vocab), len(words),
                      len(counts.keys))
    ranks.same_start(model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = warmup_cosine(optimizer, recipe.steps, 0.05)

    def step(i: int) -> dict:
        idx = batch_indices(i, len(train_img), recipe.batch_size, recipe.seed)
        moves = torch.Generator().manual_seed(recipe.seed * 1_000_003 + i)  # a function of the step: --resume exact
        batch = shifted(pixels[train_img[idx]], recipe.shift, moves)  # the whole batch's shifts, then this rank's share
        emb, logits, shown, counted = (ranks.gather(o) for o in model(ranks.share(batch),
                                                                     ranks.share(vectors[train_q[idx]])))
        answer = F.cross_entropy(logits, train_a[idx], ignore_index=-100)
        parts = {"answer": answer}
        if counted is not None:
            told = counts.targets[train_img[idx]]
            if (told >= 0).any():
                parts["counts"] = recipe.count_weight * F.cross_entropy(counted.flatten(0, 1), told.flatten(),
                                                                        ignore_index=-100)
        if words:
            images = train_img[idx]
            parts["words"] = known_bce(shown.amax(dim=1), word_targets[images], word_known[images])
            if binding:  # one object's words on one patch: the tokens bind colour to shape
                parts["pairs"] = pair_bce(shown, pairs[images], pair_mask[images])
        if len(cap_img) >= 2:
            c = batch_indices(i, len(cap_img), recipe.batch_size, recipe.seed + 1)
            cap_emb = ranks.gather(model(pixels[cap_img[ranks.share(c)]], vectors[cap_txt[ranks.share(c)]])[0])
            logits_c = model.logit_scale.exp().clamp(max=100) * cap_emb @ vectors[cap_txt[c]].T
            target = torch.arange(len(c))
            parts["contrastive"] = (F.cross_entropy(logits_c, target) + F.cross_entropy(logits_c.T, target)) / 2
        loss = sum(parts.values())
        optimizer.zero_grad()
        (loss / ranks.world).backward()  # every rank: the whole batch's loss, its share's gradient
        ranks.sum_grads(model.parameters())
        optimizer.step()
        return {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}

    t1 = time.perf_counter()
    run_loop(out, recipe.steps, step, modules={"model": model}, optimizer=optimizer, scheduler=scheduler,
             resume=resume, label="encoder", quiet=quiet, ranks=ranks)
    if not ranks.main:  # rank 0 evaluates and saves the (same) weights
        ranks.wait()
        return {}
    metrics: dict = {"data": data.counts() | {"source": data.source}, "answers": len(vocab), "words": len(words)}
    if held:
        model.eval()
        img, q, a = rows(held)
        with torch.no_grad():
            guesses = torch.cat([model(pixels[img[i:i + 256]], vectors[q[i:i + 256]])[1].argmax(-1)
                                 for i in range(0, len(img), 256)])
        model.train()
        by_type: dict[str, list[int]] = {}
        for e, guess, want in zip(held, guesses.tolist(), a.tolist()):
            by_type.setdefault(e.type, []).append(int(guess == want))
        metrics["answer_accuracy"] = {t: round(sum(v) / len(v), 4) for t, v in sorted(by_type.items())}
        if words:  # the per-patch words head on held-out images, where their questions tell
            val_images = sorted({e.image for e in held})
            targets, known, _ = answer_words(data.val, val_images, words)
            with torch.no_grad():
                outs = [model(pixels[chunk], vectors[:1].expand(len(chunk), -1))  # any question
                        for chunk in (val_images[i:i + 256] for i in range(0, len(val_images), 256))]
            shown = torch.cat([o[2] for o in outs])
            right = ((shown.amax(dim=1) > 0).float() == targets).float() * known
            metrics["words_accuracy"] = round((right.sum() / known.sum().clamp(min=1)).item(), 4)
            # None: no held-out question names two answer words
            metrics["pairs_accuracy"] = pair_accuracy(shown, *answer_pairs(data.val, val_images, words))
            if counts.keys:  # the CLS token's counts, where held-out questions tell
                told = answer_counts(data.val, val_images, words, counts.keys).targets
                said = torch.cat([o[3] for o in outs]).argmax(-1)
                metrics["cls_count_accuracy"] = (round(((said == told) & (told >= 0)).sum().item()
                                                       / (told >= 0).sum().item(), 4) if (told >= 0).any() else None)
    metrics.update(train_seconds=round(time.perf_counter() - t1, 1), data_seconds=round(data_seconds, 1),
                   parameters=sum(p.numel() for p in model.vision.parameters()), recipe=asdict(recipe))
    metrics["count_keys"] = [list(k) for k in counts.keys]
    if counts.keys:  # the CLS token carries the counts: LLaVA must keep it ("full"; `vision.own_tower`)
        model.vision.config.mmagent_feature_select = "full"
    model.vision.save_pretrained(out / "vision")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    ranks.wait()  # the others go on (the adapter of `train adapter --data`) once the encoder is on disk
    return metrics
