"""The graph-kit examples run end to end on the offline models (slow: real weights)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_meeting_summary_example(offline_home, tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "meeting_summary.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    transcript = next(line for line in proc.stdout.splitlines() if line.startswith("transcript: "))
    summary = next(line for line in proc.stdout.splitlines() if line.startswith("summary: "))
    assert "maria" in transcript.lower() and "launch" in transcript.lower()
    assert len(summary) > 30 and ("maria" in summary.lower() or "launch" in summary.lower())
    [wav] = list(tmp_path.glob("audio-*.wav"))
    assert wav.stat().st_size > 10_000


def test_meeting_graph_runs_through_mmagent_run_graph(offline_home, tmp_path):
    from mmagent.tools import call_tool

    speech = call_tool("speak", {"text": "We agreed to ship the release on Monday. Tom writes the notes."})
    mm = str(Path(sys.executable).with_name("mmagent"))
    proc = subprocess.run([mm, "run", "--graph", f"{EXAMPLES / 'meeting_summary.py'}:graph", "-a",
                           speech.parts[0].ref.uri], capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                          env={**os.environ}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.lower()  # the summary SmolLM2-135M writes of the transcript
    assert any(word in summary for word in ("monday", "release", "tom", "notes"))
    assert "wrote" in proc.stderr and list((tmp_path / "mmagent-out").glob("audio-*.wav"))  # spoken too
