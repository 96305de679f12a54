"""Time to first token vs the whole answer, and checkpoint bytes per turn of a thread.

1. Streaming: the offline default tool chain (OCR + SmolLM2) answers a question about the bundled
   receipt through `mmagent.stream`; for each request we record when the first answer token
   arrived and when the run ended (`mmagent.run` would return only then). The same for the chat
   model alone (`ChatMMAgent(model="llm").stream`). Medians over --requests, after one warm-up.
2. Threads: --turns questions on one thread, each with a new receipt-like photo (printed lines on
   a paper texture, ~65 KB as PNG), through the same pipeline (rule planner, real OCR and LLM);
   bytes the SQLite checkpointer holds after each turn.

    .venv/bin/python benchmarks/streaming_threads.py [--requests 5] [--turns 10]

Needs the offline models (`mmagent models prepare pp-ocrv4 smollm2-135m-instruct all-minilm-l6-v2`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

RECEIPT = Path(__file__).resolve().parent.parent / "examples" / "media" / "receipt.png"


def first_token_and_total(events) -> tuple[float, float, str]:
    start = time.perf_counter()
    first, text = None, ""
    for kind, value in events:
        if kind == "token":
            first = first or time.perf_counter() - start
            text += value
    return first or float("nan"), time.perf_counter() - start, text


def receipt_photo(seed: int):
    """A receipt on a paper texture: four item lines and a total (OCR reads it; PNG ~65 KB)."""
    from PIL import Image, ImageDraw, ImageFont

    paper = Image.effect_noise((320, 240), 12).point(lambda v: 215 + v // 6).convert("RGB")
    draw = ImageDraw.Draw(paper)
    font = ImageFont.load_default(size=18)
    prices = [1.5 + ((seed * 7 + i * 3) % 9) for i in range(4)]
    for i, price in enumerate(prices):
        draw.text((20, 20 + 32 * i), f"ITEM {seed}-{i}   {price:.2f}", fill="black", font=font)
    draw.text((20, 160), f"TOTAL   {sum(prices):.2f}", fill="black", font=font)
    return paper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args()

    import mmagent
    from mmagent.langchain import ChatMMAgent
    from mmagent.threads import checkpoint_bytes

    question = "What is the total on the receipt?"
    pipeline = lambda: mmagent.stream(question, images=[RECEIPT], planner="rules")  # noqa: E731
    chat = ChatMMAgent(model="llm", max_tokens=48)
    llm_only = lambda: ((("token", c.text) if c.text else ("other", None)) for c in  # noqa: E731
                        chat.stream("Explain in two sentences what a receipt is."))
    for name, make in (("tool chain (OCR + SmolLM2)", pipeline), ("chat model alone (SmolLM2)", llm_only)):
        first_token_and_total(make())  # warm-up: loads the models
        firsts, totals = [], []
        for _ in range(args.requests):
            first, total, text = first_token_and_total(make())
            firsts.append(first)
            totals.append(total)
        f, t = statistics.median(firsts), statistics.median(totals)
        print(f"{name:<28} first token {f:6.3f} s   whole answer {t:6.3f} s   ratio {f / t:5.2f}   "
              f"({args.requests} requests; last answer {text.strip()[:40]!r})")

    with tempfile.TemporaryDirectory() as tmp:
        from PIL import Image

        sizes = []
        thread = f"bench-{time.time_ns()}"  # a new thread every run
        for turn in range(args.turns):
            path = Path(tmp) / f"img{turn}.png"
            receipt_photo(turn).save(path)
            mmagent.run(f"What do you see on image {turn}?", images=[path], planner="rules", thread=thread)
            sizes.append(checkpoint_bytes(thread))
        per_turn = [b - a for a, b in zip([0, *sizes], sizes)]
        image_bytes = path.stat().st_size
        print(f"\ncheckpoint after {args.turns} turns: {sizes[-1]:,} bytes; per turn median "
              f"{statistics.median(per_turn):,.0f} bytes, max {max(per_turn):,} (each turn adds a {image_bytes:,}-byte image)")


if __name__ == "__main__":
    main()
