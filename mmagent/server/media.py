"""`/v1/audio/speech` and `/v1/images/generations`: request checks and the calls behind them.

Speech is synthesized by the configured tts backend (a WAV), then given in the format asked for:
`wav` and `pcm` (16-bit little-endian mono at the voice's own rate) as they are, `mp3`, `flac`,
`opus` and `aac` encoded by ffmpeg. OpenAI's voice names (alloy, echo, ...) mean the backend's
default voice; any other name is the backend's (a Piper speaker). Images come from the configured
image_gen backend as base64 PNGs (`b64_json`): the server hosts no files, so `url` is refused.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import wave
from typing import Any

from ..errors import BackendError, InputError, one_line

#: OpenAI's limit on the text of one speech request.
MAX_SPEECH_CHARS = 4096
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
                           "verse", "marin", "cedar"})
#: response_format -> (media type, ffmpeg arguments; None: no encoding)
SPEECH_FORMATS: dict[str, tuple[str, list[str] | None]] = {
    "wav": ("audio/wav", None),
    "pcm": ("audio/pcm", None),
    "mp3": ("audio/mpeg", ["-c:a", "libmp3lame", "-q:a", "4", "-f", "mp3"]),
    "flac": ("audio/flac", ["-c:a", "flac", "-f", "flac"]),
    "opus": ("audio/ogg", ["-c:a", "libopus", "-b:a", "48k", "-f", "ogg"]),
    "aac": ("audio/aac", ["-c:a", "aac", "-b:a", "96k", "-f", "adts"]),
}
ENCODE_TIMEOUT_S = 60
MAX_IMAGES = 4
_SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")


def speech_request(body: dict) -> tuple[str, str | None, str]:
    """(text, voice or None for the default, response_format) of a speech request."""
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise InputError("'input' must be a non-empty string")
    if len(text) > MAX_SPEECH_CHARS:
        raise InputError(f"'input' has {len(text):,} characters; the limit is {MAX_SPEECH_CHARS:,}")
    voice = body.get("voice")
    if isinstance(voice, dict):  # the newer SDKs' {"id": ...}
        voice = voice.get("id")
    if voice is not None and not isinstance(voice, str):
        raise InputError("'voice' must be a string")
    if voice is not None and voice.lower() in OPENAI_VOICES:
        voice = None
    fmt = body.get("response_format") or "mp3"
    if fmt not in SPEECH_FORMATS:
        raise InputError(f"unknown response_format '{one_line(str(fmt), 40)}' (use {', '.join(SPEECH_FORMATS)})")
    speed = body.get("speed")
    if speed is not None and speed != 1:
        raise InputError("'speed' other than 1 is not supported here (set the tts backend's speed option)")
    if body.get("stream_format") not in (None, "audio"):
        raise InputError("'stream_format' must be 'audio'")
    return text, voice, fmt


def synthesize(backend: Any, text: str, voice: str | None, fmt: str) -> tuple[bytes, str]:
    """(bytes, media type) of `text` spoken by `backend` in `fmt`."""
    part = backend.synthesize(text, voice=voice)
    wav = part.read_bytes()
    media_type, encoder = SPEECH_FORMATS[fmt]
    if fmt == "wav":
        return wav, media_type
    if fmt == "pcm":
        with wave.open(io.BytesIO(wav)) as reader:
            return reader.readframes(reader.getnframes()), media_type
    return encode(wav, encoder), media_type


def encode(wav: bytes, args: list[str]) -> bytes:
    """A WAV encoded by ffmpeg (BackendError when ffmpeg is missing or fails)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise BackendError("this format needs ffmpeg on the server (use response_format wav or pcm)")
    try:
        done = subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "wav", "-i", "pipe:0",
                               *args, "pipe:1"], input=wav, capture_output=True, timeout=ENCODE_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BackendError(f"ffmpeg took longer than {ENCODE_TIMEOUT_S} s to encode the speech") from None
    if done.returncode != 0 or not done.stdout:
        raise BackendError(f"ffmpeg could not encode the speech: {one_line(done.stderr.decode(errors='replace'), 200)}")
    return done.stdout


def image_request(body: dict) -> tuple[dict[str, Any], int]:
    """(keyword arguments for `TextToImage.generate`, how many images) of an image request."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("'prompt' must be a non-empty string")
    if len(prompt) > MAX_SPEECH_CHARS:
        raise InputError(f"'prompt' has {len(prompt):,} characters; the limit is {MAX_SPEECH_CHARS:,}")
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        raise InputError(f"'n' must be an integer from 1 to {MAX_IMAGES}")
    if body.get("response_format") not in (None, "b64_json"):
        raise InputError("this server returns images as b64_json only (it hosts no files): "
                         "set response_format to b64_json")
    if body.get("output_format") not in (None, "png"):
        raise InputError("'output_format' must be png")
    options: dict[str, Any] = {"prompt": prompt, "width": 512, "height": 512}
    size = body.get("size")
    if size not in (None, "auto"):
        match = _SIZE.match(size) if isinstance(size, str) else None
        width, height = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        if not (64 <= width <= 2048 and 64 <= height <= 2048 and width % 8 == 0 and height % 8 == 0):
            raise InputError("'size' must be WIDTHxHEIGHT, each a multiple of 8 from 64 to 2048 (e.g. 512x512)")
        options.update(width=width, height=height)
    for key, kind in (("seed", int), ("steps", int), ("negative_prompt", str)):  # mmagent's extensions
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            raise InputError(f"'{key}' must be a{'n integer' if kind is int else ' string'}")
        options[key] = value
    return options, n


def generate(backend: Any, options: dict[str, Any], n: int) -> list[dict[str, str]]:
    """`n` images as OpenAI's `data` entries; with a seed, image i has seed + i."""
    out = []
    for i in range(n):
        kwargs = dict(options)
        if "seed" in kwargs:
            kwargs["seed"] = kwargs["seed"] + i
        part = backend.generate(kwargs.pop("prompt"), **kwargs)
        out.append({"b64_json": base64.b64encode(part.read_bytes()).decode("ascii"),
                    "revised_prompt": options["prompt"]})
    return out
