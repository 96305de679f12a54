"""Piper speaks, Whisper base listens: the offline voice stack agrees with itself."""

from __future__ import annotations

import pytest

from mmagent.backends import get_backend
from mmagent.metrics import word_error_rate

pytestmark = pytest.mark.slow
SENTENCE = "Please send the quarterly report to the finance team before Friday afternoon."


def test_piper_speech_is_transcribed_by_whisper_base(zoo_model, models_home, monkeypatch):
    zoo_model("piper-en-us-joe-medium")
    zoo_model("whisper-base")
    monkeypatch.setenv("MMAGENT_HOME", str(models_home))
    speech = get_backend("tts", "piper", noise_scale=0, noise_w_scale=0).synthesize(SENTENCE)
    transcript = get_backend("asr", "whisper", device="cpu").transcribe(speech)
    assert word_error_rate(SENTENCE, transcript.text) <= 0.10, transcript.text
    assert transcript.language == "en"
