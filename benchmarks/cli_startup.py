"""How much `mmagent --help` and `import mmagent` cost over a bare interpreter start.

Runs the three commands interleaved (so machine noise hits them alike) and reports medians and
the overhead over `python -c pass`. Target: `mmagent --help` overhead <= 0.3 s.

    .venv/bin/python benchmarks/cli_startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import mmagent'": [sys.executable, "-c", "import mmagent"],
    "mmagent --help": [str(BIN / "mmagent"), "--help"],
    "mmagent plugins": [str(BIN / "mmagent"), "plugins"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for name, cmd in COMMANDS.items():  # warm the file cache
        subprocess.run(cmd, capture_output=True, check=True)
    for _ in range(args.runs):
        for name, cmd in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<30} {'median':>9} {'overhead':>9} {'ratio':>6}   ({args.runs} runs, interleaved)")
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"{name:<30} {med * 1000:8.1f}ms {(med - base) * 1000:8.1f}ms {med / base:6.2f}")
    overhead = statistics.median(times["mmagent --help"]) - base
    verdict = "OK" if overhead <= 0.3 else "OVER TARGET"
    print(f"\nmmagent --help overhead: {overhead * 1000:.0f} ms (target <= 300 ms): {verdict}")
    sys.exit(0 if overhead <= 0.3 else 1)


if __name__ == "__main__":
    main()
