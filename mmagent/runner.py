"""Run one request through a pipeline: `mmagent.run("What is the total?", images=["receipt.png"])`."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Sequence

from .config import Settings, load_settings
from .content.parts import MediaPart, part_from_dict
from .content.sources import Source, load_media
from .errors import InputError
from .toolbox import Toolbox

#: pipeline name -> "module:function" building a compiled graph from (toolbox, **options).
PIPELINES: dict[str, str] = {
    "tools": "mmagent.graphs.tool_chain:build_graph",
    "adapter": "mmagent.graphs.adapter:build_graph",
}
OUTPUTS = ("auto", "text", "image", "speech")


@dataclass
class RunResult:
    answer: str
    pipeline: str
    steps: list[dict]
    artifacts: list[dict]
    plan: dict
    outputs: list[MediaPart] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self, files: Sequence[str] | None = None) -> dict[str, Any]:
        """The `mmagent run --json` object. `files`: where `outputs` were written, if they were."""
        data = {"answer": self.answer, "pipeline": self.pipeline, "plan": self.plan, "steps": self.steps,
                "artifacts": self.artifacts, "seconds": round(self.seconds, 4)}
        data["outputs"] = [{**p.to_dict(), **({"path": files[i]} if files else {})}
                           for i, p in enumerate(self.outputs)]
        return data

    def save_outputs(self, folder: str | os.PathLike[str]) -> list[str]:
        """Write generated media to `folder` (atomically, named by kind and hash); return the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for part in self.outputs:
            ext = {"image/png": "png", "audio/wav": "wav", "image/jpeg": "jpg"}.get(part.mime_type, part.format)
            target = folder / f"{part.type}-{part.ref.sha256[:12]}.{ext}"
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(part.read_bytes())
            os.replace(tmp, target)
            paths.append(str(target))
        return paths


def build_pipeline(name: str, toolbox: Toolbox, **options: Any):
    """The compiled graph of pipeline `name`."""
    try:
        module, function = PIPELINES[name].split(":")
    except KeyError:
        raise InputError(f"unknown pipeline '{name}' (available: {', '.join(PIPELINES)})") from None
    return getattr(import_module(module), function)(toolbox, **options)


def run(
    prompt: str = "",
    *,
    images: Sequence[Source] = (),
    audio: Sequence[Source] = (),
    pipeline: str = "tools",
    output: str = "auto",
    planner: str = "auto",
    toolbox: Toolbox | None = None,
    settings: Settings | None = None,
) -> RunResult:
    """Validate the inputs, run them through `pipeline`, and return the answer with every step."""
    if output not in OUTPUTS:
        raise InputError(f"unknown output '{output}' (use {', '.join(OUTPUTS)})")
    settings = settings or load_settings()
    parts = [load_media(s, expect="image", settings=settings) for s in images]
    parts += [load_media(s, expect="audio", settings=settings) for s in audio]
    if not prompt.strip() and not parts:
        raise InputError("nothing to do: give a prompt, an image or audio")
    toolbox = toolbox or Toolbox(settings=settings)
    graph = build_pipeline(pipeline, toolbox, planner=planner)
    start = time.perf_counter()
    state = graph.invoke({"prompt": prompt, "inputs": [p.to_dict() for p in parts], "output": output})
    return RunResult(
        answer=state.get("answer", ""), pipeline=pipeline, steps=state.get("steps", []),
        artifacts=state.get("artifacts", []), plan=state.get("plan", {}),
        outputs=[part_from_dict(p) for p in state.get("outputs", [])], seconds=time.perf_counter() - start,
    )
