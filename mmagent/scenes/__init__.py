"""A CLEVR-like 2-D scene world for training and evaluating VLMs offline.

Procedural scenes of 1-4 shapes (3 kinds, 5 colours, 2 sizes) on a plain background, sometimes
with a printed word; for each, a generic caption (what a captioner says), the full description
(the truth) and questions with exact one-word answers. It measures the "telephone" loss of a
caption-then-LLM chain against a VLM that sees the pixels (docs: /work/shared/NOTES.md §3).

    from mmagent.scenes import generate_scene, render, write_dataset, load_questions
    scene = generate_scene(seed=0, index=7, size=64)
    render(scene).save("scene.png")
    write_dataset("data/scenes", n=1000, seed=0)

Deterministic: scene `index` of `seed` depends on (seed, index) only. Importing this package
loads no PIL, numpy or torch; `render` imports PIL when called.
"""

from __future__ import annotations

from .dataset import load_questions, load_scenes, write_dataset
from .generate import generate_scene
from .model import Question, Scene, SceneObject
from .questions import QUESTION_TYPES
from .drawing import render
from .vocab import COLOURS, KINDS, SIZES, WORDS

__all__ = [
    "COLOURS", "KINDS", "QUESTION_TYPES", "SIZES", "WORDS", "Question", "Scene", "SceneObject",
    "generate_scene", "load_questions", "load_scenes", "render", "write_dataset",
]
