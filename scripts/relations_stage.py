"""Experiment (not the shipped recipe): does a stage focused on the relation questions (position,
comparison, count) lift the shipped scene VLM? Starts from the shipped model (`mmagent models
prepare scene-vlm`: LoRA merged), adds a fresh LoRA r16 (lr 1e-3; projector 3e-5), trains STEPS
steps of 16 on the recipe's training scenes (`adapter-train-0`) — the three relation types, plus
SHARE of the batches from the other types so they are not forgotten — under bf16 autocast, then
answers the 1,565 held-out questions (`heldout-0`) as `train_adapter` does. Figures:
docs/scene-vlm.md ("A relations stage").

    .venv/bin/python scripts/relations_stage.py 400 0.3
"""
import json
import random
import sys
import time
from pathlib import Path

import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

import mmagent.train.adapter as A
from mmagent.train.loop import batch_indices, warmup_cosine
from mmagent.zoo import get_zoo

steps = int(sys.argv[1]); share = float(sys.argv[2])  # share of the batches from the other types
torch.manual_seed(0)
home = get_zoo().ensure("scene-vlm")
model = LlavaForConditionalGeneration.from_pretrained(home, dtype=torch.float32)
processor = AutoProcessor.from_pretrained(home)
recipe = A.AdapterRecipe(places_and_signs=True)
tower = A.load_tower(Path(__file__).resolve().parent.parent / "plugins" / "scene_vlm" / "weights", None)
data = A.scene_data(recipe, tower, False)
mixed = A.stage_examples(data.captions, data.questions, "mixed", data.types)
focus = [e for e in mixed if e.type in ("position", "comparison", "count")]
other = [e for e in mixed if e.type not in ("position", "comparison", "count")]
rng = random.Random(0)
n_other = int(len(focus) * share / (1 - share))
items = focus + rng.sample(other, min(n_other, len(other)))
rng.shuffle(items)
print(len(focus), "focus", len(items), "items", flush=True)
lora = A.add_lora(model, 16, "all")
named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
opt = torch.optim.AdamW([{"params": [p for n, p in named if "lora_" not in n], "lr": 3e-5},
                         {"params": [p for n, p in named if "lora_" in n], "lr": 1e-3}], weight_decay=0.0)
sched = warmup_cosine(opt, steps, 0.1)
fit = A.MicroBatches(model, processor, data.pixels, torch.device("cpu"), quiet=True, bf16=True)
t0 = time.perf_counter()
for i in range(steps):
    batch = [items[j] for j in batch_indices(i, len(items), 16, 7)]
    opt.zero_grad(); loss = fit.backward(batch); opt.step(); sched.step()
    if i % 10 == 0:
        print(i, round(loss, 4), round(time.perf_counter() - t0, 1), flush=True)
model = lora.merge_and_unload()
t1 = time.perf_counter()
m = A.evaluate_qa(model, processor, data.eval_items, data.eval_pixels)
m["train_seconds"] = round(t1 - t0, 1); m["eval_seconds"] = round(time.perf_counter() - t1, 1)
print(json.dumps(m, indent=1), flush=True)
