"""The default tool chain on the bundled spoken question about a receipt, twice in one process:
the first request loads every model (Whisper base, PP-OCRv4, MiniLM, SmolLM2), the second reuses
them. Prints per-request and per-step times, their ratio, and the process's peak RSS.

    .venv/bin/python benchmarks/default_chain.py [--requests 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import mmagent

MEDIA = Path(__file__).resolve().parent.parent / "examples" / "media"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3)
    args = parser.parse_args()
    totals, answers = [], []
    for i in range(args.requests):
        start = time.perf_counter()
        result = mmagent.run(audio=[MEDIA / "question.wav"], images=[MEDIA / "receipt.png"])
        totals.append(time.perf_counter() - start)
        answers.append(result.answer)
        steps = "  ".join(f"{s['tool']} {s['seconds']:.2f}s" for s in result.steps)
        print(f"request {i + 1}: {totals[-1]:6.2f} s   {steps}   -> {result.answer!r}")
    rest = statistics.median(totals[1:]) if len(totals) > 1 else float("nan")
    print(f"\nfirst request {totals[0]:.2f} s; later requests median {rest:.2f} s; first/later {totals[0] / rest:.1f}x")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"answers identical: {len(set(answers)) == 1}")


if __name__ == "__main__":
    main()
