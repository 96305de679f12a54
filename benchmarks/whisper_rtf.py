"""Whisper on CPU: conversion time, load time, and real-time factor of openai-whisper vs faster-whisper.

Uses the packaged weights (tiny.en, base) and a ~6 s clip synthesised by espeak-ng (or --audio).
Each measurement is repeated --runs times, interleaved between the backends so machine noise hits
them alike; medians are reported. RTF = processing time / audio duration (lower is faster;
below 1 is faster than real time). Everything is written under a temporary MMAGENT_HOME.

    .venv/bin/python benchmarks/whisper_rtf.py [--runs 3] [--audio clip.wav] [--model base]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SENTENCES = "Please send the report to the finance team by Friday. Thank you for your help."


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="base", choices=["base", "tiny.en"], help="model for the RTF race")
    parser.add_argument("--audio", type=Path, help="a clip to use instead of the espeak-ng one")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="whisper-rtf-"))
    os.environ["MMAGENT_HOME"] = str(work / "home")
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    import torch

    from mmagent.backends import unload
    from mmagent.content.sources import load_media
    from mmagent.plugins.whisper import FasterWhisperASR, WhisperASR, faster_whisper_dir, models_dir
    from mmagent.plugins.whisper_ct2 import convert_ct2_whisper, locate_ct2_whisper

    print(f"cpus: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, "
          f"load average at start: {os.getloadavg()[0]:.2f}")

    # -- conversion ------------------------------------------------------------------------------
    conversion: dict[str, list[float]] = {"tiny.en": [], "base": []}
    for i in range(args.runs):
        for name in conversion:
            parts = locate_ct2_whisper(name)
            start = time.perf_counter()
            convert_ct2_whisper(parts, work / f"convert-{name}-{i}.pt", parts[0].parent / "config.json")
            conversion[name].append(time.perf_counter() - start)
            (work / f"convert-{name}-{i}.pt").unlink()
    print("\nconversion CTranslate2 -> openai-whisper checkpoint (median of %d)" % args.runs)
    for name, samples in conversion.items():
        size = sum(p.stat().st_size for p in locate_ct2_whisper(name)) / 1e6
        print(f"  {name:<8} {median_ms(samples)}   ({size:.0f} MB of weights)")
    start = time.perf_counter()
    faster_whisper_dir("base")  # joins the two parts of base once
    print(f"  faster-whisper base directory (join parts): {(time.perf_counter() - start) * 1000:.0f} ms")

    # -- the clip ----------------------------------------------------------------------------------
    if args.audio is None:
        args.audio = work / "clip.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(args.audio), SENTENCES],
                       check=True, capture_output=True)
    clip = load_media(args.audio, expect="audio")
    print(f"\nclip: {clip.duration:.2f} s, {clip.sample_rate} Hz")

    # -- load and transcribe -----------------------------------------------------------------------
    model = args.model
    backends = {
        "openai-whisper (fp32)": lambda: WhisperASR(model=str(models_dir() / f"whisper-{model}" / "model.pt")),
        "faster-whisper (int8)": lambda: FasterWhisperASR(model=model),
        "faster-whisper (fp32)": lambda: FasterWhisperASR(model=model, compute_type="float32"),
    }
    WhisperASR(model=model).model  # convert into the cache (not timed: done above)
    unload()
    loads: dict[str, list[float]] = {name: [] for name in backends}
    modes = {"detect": None, "en": "en"}  # language detection costs each backend an extra pass
    rtf: dict[tuple[str, str], list[float]] = {(name, mode): [] for name in backends for mode in modes}
    texts: dict[str, str] = {}
    for _ in range(args.runs):
        for name, make in backends.items():
            unload()
            backend = make()
            start = time.perf_counter()
            backend.model  # noqa: B018 - load
            loads[name].append(time.perf_counter() - start)
    for name, make in backends.items():  # warm-up: first decode pays one-off allocations
        texts[name] = make().transcribe(clip).text
    for _ in range(args.runs):
        for mode, language in modes.items():
            for name, make in backends.items():
                backend = make()
                start = time.perf_counter()
                backend.transcribe(clip, language=language)
                rtf[(name, mode)].append((time.perf_counter() - start) / clip.duration)

    print(f"\nWhisper {model} on CPU (median of {args.runs}, interleaved; greedy, temperature 0)")
    print(f"  {'backend':<24} {'load':>11} {'RTF detect':>11} {'RTF en':>8}")
    for name in backends:
        cells = " ".join(f"{statistics.median(rtf[(name, mode)]):{w}.3f}" for mode, w in (("detect", 11), ("en", 8)))
        print(f"  {name:<24} {median_ms(loads[name])} {cells}")
    for mode in modes:
        ow = statistics.median(rtf[("openai-whisper (fp32)", mode)])
        ratios = ", ".join(f"{name.split(' ')[1]} {ow / statistics.median(rtf[(name, mode)]):.2f}x"
                           for name in backends if name.startswith("faster"))
        print(f"  speed-up of faster-whisper over openai-whisper ({mode}): {ratios}")
    print("\ntranscripts:")
    for name, text in texts.items():
        print(f"  {name:<24} {text}")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
