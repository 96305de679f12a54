"""A Transcript in the Whisper API's response formats: json, text, verbose_json, srt, vtt."""

from __future__ import annotations

from typing import Any

FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


def _segments(transcript, duration: float) -> list[tuple[float, float, str]]:
    segs = [(s.start, s.end, s.text.strip()) for s in transcript.segments]
    if not segs and transcript.text.strip():
        segs = [(0.0, float(duration or 0.0), transcript.text.strip())]
    return segs


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def render(transcript, duration: float, fmt: str) -> tuple[Any, str]:
    """(content, media type): a dict for the JSON formats, a string for the others."""
    text = transcript.text.strip()
    if fmt == "json":
        return {"text": text}, "application/json"
    if fmt == "text":
        return text + "\n" if text else "", "text/plain"
    if fmt == "verbose_json":  # segments only where the backend gives them
        segments = [{"id": i, "seek": 0, "start": round(seg.start, 3), "end": round(seg.end, 3),
                     "text": seg.text.strip(), "tokens": [], "temperature": 0.0, "avg_logprob": 0.0,
                     "compression_ratio": 0.0, "no_speech_prob": 0.0} for i, seg in enumerate(transcript.segments)]
        return {"task": "transcribe", "language": transcript.language or "", "duration": round(float(duration), 3),
                "text": text, "segments": segments}, "application/json"
    if fmt == "srt":
        return "".join(f"{i}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{t}\n\n"
                       for i, (a, b, t) in enumerate(_segments(transcript, duration), 1)), "text/plain"
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{t}\n\n"
                                      for a, b, t in _segments(transcript, duration)), "text/vtt"
    raise ValueError(fmt)
