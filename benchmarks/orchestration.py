"""Orchestration overhead: mmagent's tool chain vs a bare LangGraph graph making the same calls.

Both run zero-cost scripted backends (mmagent.testing) on one image and one audio input, so the
difference is mmagent's own work: planning, part handling, artifacts, step records, timing.
Requests are interleaved; medians per request and their ratio are printed. Target: <= 1.5x.

    .venv/bin/python benchmarks/orchestration.py [--requests 300]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from typing import TypedDict

from mmagent.content import load_media
from mmagent.content.parts import part_from_dict
from mmagent.runner import build_pipeline, request_message
from mmagent.testing import ScriptedASR, ScriptedLLM, ScriptedOCR, scripted_toolbox, silent_wav
from mmagent.backends.results import Message


def bare_graph(asr, ocr, llm):
    """The same four steps as plain LangGraph nodes calling the backends directly."""
    from langgraph.graph import END, START, StateGraph

    class S(TypedDict, total=False):
        inputs: list
        texts: list
        answer: str

    def listen(s):
        audio = [part_from_dict(p) for p in s["inputs"] if p["type"] == "audio"]
        return {"texts": [asr.transcribe(a).text for a in audio]}

    def plan(s):
        return {}

    def look(s):
        images = [part_from_dict(p) for p in s["inputs"] if p["type"] == "image"]
        return {"texts": s["texts"] + [ocr.read(i).text for i in images]}

    def answer(s):
        return {"answer": llm.chat([Message("user", "\n".join(s["texts"]))]).text}

    g = StateGraph(S)
    for name, fn in (("listen", listen), ("plan", plan), ("look", look), ("answer", answer)):
        g.add_node(name, fn)
    g.add_edge(START, "listen"), g.add_edge("listen", "plan"), g.add_edge("plan", "look")
    g.add_edge("look", "answer"), g.add_edge("answer", END)
    return g.compile()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), "white").save(buf, "PNG")
    image, audio = load_media(buf.getvalue(), expect="image"), load_media(silent_wav(0.5), expect="audio")
    inputs = [image.to_dict(), audio.to_dict()]
    asr, ocr, llm = ScriptedASR("What is the total?"), ScriptedOCR(["TOTAL 9.75"]), ScriptedLLM("9.75")
    ours = build_pipeline("tools", scripted_toolbox(asr=asr, ocr=ocr, llm=llm), planner="rules")
    bare = bare_graph(asr, ocr, llm)
    request = {"messages": [request_message("", images=[image.path()], audio=[audio.path()])], "output": "auto"}
    runs = {"bare LangGraph": lambda: bare.invoke({"inputs": inputs}), "mmagent tool chain": lambda: ours.invoke(request)}
    for fn in runs.values():  # warm up
        for _ in range(20):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.requests):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["bare LangGraph"])
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"{name:<20} median {med * 1000:7.3f} ms/request   ratio {med / base:5.2f}")
    ratio = statistics.median(times["mmagent tool chain"]) / base
    print(f"\noverhead ratio {ratio:.2f} (target <= 1.5): {'OK' if ratio <= 1.5 else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
