"""The same scene questions through the adapter route (the scene VLM sees the pixels) and the
tool chain (the scene captioner writes a caption, SmolLM2 answers from it): the telephone loss on
one scene.

    .venv/bin/python examples/adapter_vs_tools.py [--seed 2026] [--index 0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mmagent
from mmagent.scenes import generate_scene, render
from mmagent.scenes.scoring import is_correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", default="2026")
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args()
    scene = generate_scene(args.seed, args.index)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "scene.png"
        render(scene).save(image)
        print(f"truth: {scene.description}\n")
        for q in scene.questions:
            if q.type == "read":
                continue
            adapter = mmagent.run(q.question, images=[image], pipeline="adapter")
            tools = mmagent.run(q.question, images=[image], pipeline="tools")
            mark = {True: "right", False: "wrong"}
            print(f"{q.question}  (truth: {q.answer})")
            print(f"  adapter: {adapter.answer!r} [{mark[is_correct(adapter.answer, q.answer, q.type)]}]")
            caption = next((a["text"] for a in tools.artifacts if a["kind"] == "caption"), "(no caption)")
            print(f"  tools:   {tools.answer!r} [{mark[is_correct(tools.answer, q.answer, q.type)]}]"
                  f"  from the caption {caption!r}")


if __name__ == "__main__":
    main()
