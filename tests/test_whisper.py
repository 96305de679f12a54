"""Whisper backends (openai-whisper and faster-whisper) and the CTranslate2 -> openai-whisper converter.

Fast tests cover the converter on a small synthetic model, audio decoding and import cost. The
`slow` ones run the real packaged weights (tiny.en and base) on speech synthesised by espeak-ng;
conversions happen once per session into a temporary directory.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mmagent import metrics

from mmagent.backends import BackendRegistry, loaded_models
from mmagent.errors import InputError
from mmagent.plugins.whisper import (
    FasterWhisperASR,
    WhisperASR,
    decode_audio,
    faster_whisper_dir,
    models_dir,
    register_backends,
    whisper_checkpoint,
)
from mmagent.eval.metrics import tokens
from mmagent.plugins.whisper_ct2 import CT2FormatError, convert_ct2_whisper, locate_ct2_whisper, read_ct2_model

#: Two sentences that espeak-ng pronounces clearly enough for Whisper base (about 5.6 s).
SENTENCES = "My name is Alice and I live in London. I like reading books about history."


words = tokens
wer = metrics.word_error_rate


def test_wer_helper():
    assert wer("the cat sat", "The cat sat.") == 0
    assert wer("the cat sat", "the cat") == pytest.approx(1 / 3)
    assert wer("the cat sat", "a cat sat down") == pytest.approx(2 / 3)


# -- cheap to import, registered like any plugin --------------------------------------------------


def test_plugin_modules_import_without_heavy_libraries():
    code = ("import sys, mmagent.plugins.whisper, mmagent.plugins.whisper_ct2; "
            "print(sorted(m for m in ('torch', 'whisper', 'faster_whisper', 'ctranslate2', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_register_backends_adds_both_asr_backends():
    registry = BackendRegistry()
    register_backends(lambda cls: registry.register(cls, plugin="mmagent.plugins.whisper"))
    assert [(e.role, e.name) for e in registry.list("asr")] == [("asr", "whisper"), ("asr", "faster-whisper")]
    assert WhisperASR.requires == ("whisper", "torch") and FasterWhisperASR.requires == ("faster_whisper",)


def test_converted_models_live_under_mmagent_home(home):
    assert models_dir() == home / "models"


# -- the converter on a synthetic CTranslate2 file -----------------------------------------------

TINY_DIMS = dict(n_mels=80, n_audio_ctx=16, n_audio_state=32, n_audio_head=4, n_audio_layer=2,
                 n_vocab=64, n_text_ctx=8, n_text_state=32, n_text_head=4, n_text_layer=2)


def _write_ct2(path: Path, variables: dict, aliases: dict[str, str]) -> None:
    """CTranslate2's model.bin, written independently of the converter's own writer."""
    import numpy as np

    dtype_ids = {np.float32: 0, np.int8: 1, np.int16: 2, np.int32: 3, np.float16: 4}

    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<II", 3, len(variables))]
    for name in sorted(variables):
        array = np.ascontiguousarray(variables[name])
        out += [string(name), struct.pack("<B", array.ndim), struct.pack(f"<{array.ndim}I", *array.shape),
                struct.pack("<BI", dtype_ids[array.dtype.type], array.nbytes), array.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [string(alias), string(target)]
    path.write_bytes(b"".join(out))


def _synthetic_whisper():
    """A random tiny openai-whisper model (weights rounded to fp16) and its CTranslate2 variables."""
    import numpy as np
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    model = Whisper(ModelDimensions(**TINY_DIMS)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.randn_like(p) * 0.2).half().float())
        pos = model.encoder.positional_embedding  # a buffer (sinusoids), stored in fp16 too
        pos.copy_(pos.half().float())
    sd = {k: v.half().numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)

    def bias_like(b):  # a key bias CTranslate2 may carry; whisper has none (softmax ignores it)
        return rng.standard_normal(b.shape).astype(np.float16)

    v: dict = {"encoder/num_heads": np.array(4, np.int16), "decoder/num_heads": np.array(4, np.int16),
               "decoder/activation": np.array(3, np.int8), "decoder/alignment_layer": np.array(-1, np.int16)}

    def linear(dst, src, bias=True):
        v[f"{dst}/weight"] = sd[f"{src}.weight"]
        if bias:
            v[f"{dst}/bias"] = sd[f"{src}.bias"]

    def norm(dst, src):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(dst, src, names):
        v[f"{dst}/weight"] = np.concatenate([sd[f"{src}.{n}.weight"] for n in names])
        v[f"{dst}/bias"] = np.concatenate([sd[f"{src}.{n}.bias"] if n != "key" else bias_like(sd[f"{src}.value.bias"])
                                           for n in names])

    linear("encoder/conv1", "encoder.conv1")
    linear("encoder/conv2", "encoder.conv2")
    v["encoder/position_encodings/encodings"] = sd["encoder.positional_embedding"]
    for i in range(TINY_DIMS["n_audio_layer"]):
        d, s = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        fused(f"{d}/self_attention/linear_0", f"{s}.attn", ("query", "key", "value"))
        linear(f"{d}/self_attention/linear_1", f"{s}.attn.out")
        norm(f"{d}/self_attention/layer_norm", f"{s}.attn_ln")
        linear(f"{d}/ffn/linear_0", f"{s}.mlp.0")
        linear(f"{d}/ffn/linear_1", f"{s}.mlp.2")
        norm(f"{d}/ffn/layer_norm", f"{s}.mlp_ln")
    norm("encoder/layer_norm", "encoder.ln_post")
    v["decoder/embeddings/weight"] = sd["decoder.token_embedding.weight"]
    v["decoder/position_encodings/encodings"] = sd["decoder.positional_embedding"]
    for i in range(TINY_DIMS["n_text_layer"]):
        d, s = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        fused(f"{d}/self_attention/linear_0", f"{s}.attn", ("query", "key", "value"))
        linear(f"{d}/self_attention/linear_1", f"{s}.attn.out")
        norm(f"{d}/self_attention/layer_norm", f"{s}.attn_ln")
        linear(f"{d}/attention/linear_0", f"{s}.cross_attn.query")
        fused(f"{d}/attention/linear_1", f"{s}.cross_attn", ("key", "value"))
        linear(f"{d}/attention/linear_2", f"{s}.cross_attn.out")
        norm(f"{d}/attention/layer_norm", f"{s}.cross_attn_ln")
        linear(f"{d}/ffn/linear_0", f"{s}.mlp.0")
        linear(f"{d}/ffn/linear_1", f"{s}.mlp.2")
        norm(f"{d}/ffn/layer_norm", f"{s}.mlp_ln")
    norm("decoder/layer_norm", "decoder.ln")
    return model, v


def test_converter_round_trips_a_synthetic_model_split_in_parts(tmp_path):
    torch = pytest.importorskip("torch")
    whisper = pytest.importorskip("whisper")
    from mmagent.plugins.whisper import _load_checkpoint

    original, variables = _synthetic_whisper()
    whole = tmp_path / "model.bin"
    _write_ct2(whole, variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    data = whole.read_bytes()
    parts = [tmp_path / "model.bin.part1", tmp_path / "model.bin.part2", tmp_path / "model.bin.part3"]
    for part, chunk in zip(parts, (data[:1001], data[1001:len(data) // 2], data[len(data) // 2:])):
        part.write_bytes(chunk)  # cuts inside headers and tensors
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"alignment_heads": [[1, 0], [1, 3]]}))

    out = convert_ct2_whisper(parts, tmp_path / "out" / "tiny.pt", config)
    assert out == tmp_path / "out" / "tiny.pt" and [p.name for p in out.parent.iterdir()] == ["tiny.pt"]

    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["dims"] == TINY_DIMS
    assert checkpoint["alignment_heads"] == [[1, 0], [1, 3]]
    expected = original.state_dict()
    assert set(checkpoint["model_state_dict"]) == set(expected)
    for name, tensor in checkpoint["model_state_dict"].items():
        assert tensor.dtype == torch.float16, name  # stored as in the source: fp16
        assert torch.equal(tensor.float(), expected[name]), name

    loaded = whisper.load_model(str(out), device="cpu")  # what openai-whisper itself accepts
    mel = torch.randn(1, TINY_DIMS["n_mels"], 2 * TINY_DIMS["n_audio_ctx"])
    tokens = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        want = original(mel, tokens)
        got = loaded(mel, tokens)
    assert got.shape == (1, 5, TINY_DIMS["n_vocab"])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # the dropped key bias changes nothing

    ours = _load_checkpoint(str(out), "cpu")
    assert ours.alignment_heads.to_dense().nonzero().tolist() == [[1, 0], [1, 3]]


def test_whisper_checkpoint_converts_a_ct2_directory_once(tmp_path):
    pytest.importorskip("torch")
    _, variables = _synthetic_whisper()
    source = tmp_path / "ct2-model"
    source.mkdir()
    _write_ct2(source / "model.bin", variables, {})
    cache = tmp_path / "cache"
    first = whisper_checkpoint(str(source), cache_dir=cache)
    assert Path(first).parent == cache and Path(first).name.startswith("whisper-ct2-")
    mtime = Path(first).stat().st_mtime_ns
    assert whisper_checkpoint(str(source), cache_dir=cache) == first and Path(first).stat().st_mtime_ns == mtime
    assert whisper_checkpoint(first, cache_dir=cache) == first  # a checkpoint file is used as is
    assert whisper_checkpoint("small", cache_dir=cache) == "small"  # left to whisper (a download)


def test_converter_rejects_broken_input(tmp_path):
    pytest.importorskip("torch")
    _, variables = _synthetic_whisper()
    good = tmp_path / "model.bin"
    _write_ct2(good, variables, {})
    data = good.read_bytes()

    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[: len(data) - 100])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2_model(truncated)

    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(data[: len(data) // 2])
    b.write_bytes(data[len(data) // 2:])
    with pytest.raises(CT2FormatError):
        read_ct2_model([b, a])  # parts in the wrong order

    other = dict(variables)
    del other["decoder/layer_norm/gamma"]
    _write_ct2(tmp_path / "missing.bin", other, {})
    with pytest.raises(CT2FormatError, match="decoder/layer_norm/gamma"):
        convert_ct2_whisper([tmp_path / "missing.bin"], tmp_path / "never.pt")
    assert not list(tmp_path.glob("*never.pt*"))  # nothing half-written left behind

    (tmp_path / "not-ct2.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(CT2FormatError, match="version"):
        read_ct2_model(tmp_path / "not-ct2.bin")


def test_locate_packaged_weights():
    with pytest.raises(KeyError, match="have: tiny.en, base"):
        locate_ct2_whisper("large-v3")
    try:
        tiny = locate_ct2_whisper("tiny.en")
        base = locate_ct2_whisper("base")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    assert [p.name for p in tiny] == ["model.bin"] and (tiny[0].parent / "tokenizer.json").is_file()
    assert [p.name for p in base] == ["model.bin.part1", "model.bin.part2"]
    assert (base[0].parent / "config.json").is_file()
    linked = Path(faster_whisper_dir("tiny.en"))  # a zoo folder of links: no 75 MB copy
    assert (linked / "model.bin").resolve() == tiny[0].resolve()
    assert faster_whisper_dir("faster-whisper-tiny.en") == str(linked)


# -- audio decoding ------------------------------------------------------------------------------


def test_decode_audio_mixes_to_mono_and_resamples(tmp_path):
    import numpy as np
    import soundfile as sf

    t = np.arange(44_100 * 2) / 44_100
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "stereo.wav", np.stack([left, left], axis=1), 44_100)
    audio = decode_audio(tmp_path / "stereo.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 32_000) <= 32
    window = audio[1000:17000]
    peak_hz = np.argmax(np.abs(np.fft.rfft(window))) * 16_000 / len(window)
    assert abs(peak_hz - 440) <= 2  # still a 440 Hz tone
    assert 0.3 < np.abs(audio).max() < 0.6

    sf.write(tmp_path / "native.flac", left[:16_000].astype(np.float32), 16_000)
    same = decode_audio(tmp_path / "native.flac")
    assert np.allclose(same, left[:16_000], atol=1e-4)  # 16 kHz input is passed through


def test_undecodable_audio_is_an_input_error(tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 4)
    with pytest.raises(InputError, match="ffmpeg could not decode"):
        decode_audio(bad)


# -- real weights ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    path = tmp_path_factory.mktemp("speech") / "sentences.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(path), SENTENCES], check=True,
                   capture_output=True)
    return path


def _packaged(name: str) -> None:
    try:
        locate_ct2_whisper(name)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def tiny_en(zoo_model) -> str:
    pytest.importorskip("whisper")
    _packaged("tiny.en")
    return str(zoo_model("whisper-tiny.en") / "model.pt")


@pytest.fixture(scope="session")
def base(zoo_model) -> str:
    pytest.importorskip("whisper")
    _packaged("base")
    return str(zoo_model("whisper-base") / "model.pt")


@pytest.fixture
def clip(speech_wav):
    """The speech as an AudioPart in this test's media store."""
    from mmagent.content.sources import load_media

    return load_media(speech_wav, expect="audio")


_RESULTS: dict[tuple, object] = {}


def _transcribe(backend, clip):
    """Transcribe once per (backend class, model, options) for the session: the slow tests share it."""
    key = (type(backend).__name__, backend.model_id, tuple(sorted(backend.options.items())))
    if key not in _RESULTS:
        _RESULTS[key] = backend.transcribe(clip)
    return _RESULTS[key]


@pytest.mark.slow
def test_packaged_names_resolve_to_zoo_checkpoints_built_once(tiny_en, base, models_home, monkeypatch):
    monkeypatch.setenv("MMAGENT_HOME", str(models_home))
    assert Path(tiny_en) == models_home / "models" / "whisper-tiny.en" / "model.pt"
    mtime = Path(base).stat().st_mtime_ns
    assert whisper_checkpoint("base") == base  # converted once, then reused
    assert Path(base).stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_tiny_en_hears_the_key_words(tiny_en, clip):
    result = _transcribe(WhisperASR(model=tiny_en), clip)
    heard = set(words(result.text))
    assert {"alice", "london", "reading", "books", "history"} <= heard, result.text
    assert result.language == "en"  # English-only model


@pytest.mark.slow
def test_base_transcribes_within_ten_percent_wer(base, clip):
    result = _transcribe(WhisperASR(model=base), clip)
    assert wer(SENTENCES, result.text) <= 0.10, result.text


@pytest.mark.slow
def test_base_detects_english(base, clip):
    assert _transcribe(WhisperASR(model=base), clip).language == "en"


@pytest.mark.slow
def test_segments_are_ordered_and_inside_the_clip(base, clip):
    result = _transcribe(WhisperASR(model=base), clip)
    assert result.segments
    previous_end = 0.0
    for seg in result.segments:
        assert previous_end <= seg.start <= seg.end <= clip.duration + 1e-6, result.segments
        assert seg.text
        previous_end = seg.end
    assert " ".join(s.text for s in result.segments) == result.text


@pytest.mark.slow
def test_model_loads_once_per_process(tiny_en, clip, monkeypatch):
    calls = []
    real = WhisperASR.load_model

    def counting(self):
        calls.append(self.model_id)
        return real(self)

    monkeypatch.setattr(WhisperASR, "load_model", counting)
    # An explicit device/dtype: a cache key no other test has used yet.
    first = WhisperASR(model=tiny_en, device="cpu", dtype="float32")
    before = len(loaded_models())
    a = first.transcribe(clip)
    b = WhisperASR(model=tiny_en, device="cpu", dtype="float32").transcribe(clip)
    assert calls == [tiny_en]
    assert len(loaded_models()) == before + 1 and first.cache_key in loaded_models()
    assert a == b  # deterministic decoding


@pytest.mark.slow
def test_language_hint_is_validated(tiny_en, clip):
    backend = WhisperASR(model=tiny_en)
    with pytest.raises(InputError, match="English-only"):
        backend.transcribe(clip, language="de")
    with pytest.raises(InputError, match="unknown language"):
        backend.transcribe(clip, language="klingon")


@pytest.mark.slow
def test_faster_whisper_agrees_with_openai_whisper(base, clip, zoo_model):
    pytest.importorskip("faster_whisper")
    directory = str(zoo_model("faster-whisper-base"))
    assert sorted(p.name for p in Path(directory).iterdir() if not p.name.startswith(".")) == [
        "MANIFEST.json", "config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    fast = _transcribe(FasterWhisperASR(model=directory), clip)  # int8 on CPU by default
    reference = _transcribe(WhisperASR(model=base), clip)
    assert wer(reference.text, fast.text) <= 0.10, (reference.text, fast.text)
    assert wer(SENTENCES, fast.text) <= 0.10, fast.text
    assert fast.language == "en"
    assert all(0 <= s.start <= s.end <= clip.duration + 1e-6 for s in fast.segments)


@pytest.mark.slow
def test_batch_decodes_short_clips_together_as_transcribe_would(tiny_en, speech_wav, tmp_path):
    """`batch` (the server's micro-batching) gives each clip the transcript `transcribe` gives it:
    two different spoken clips, a silent one, and a bad language code failing the call."""
    import wave

    from mmagent.content.sources import load_media
    from mmagent.testing import silent_wav

    if wave.open(str(speech_wav)).getnframes() / wave.open(str(speech_wav)).getframerate() > 30:
        pytest.skip("the spoken clip is over 30 s")
    other = tmp_path / "other.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(other), "The red ball is under the table."],
                   check=True, capture_output=True)
    clips = [load_media(speech_wav, expect="audio"), load_media(other, expect="audio"),
             load_media(silent_wav(2.0), expect="audio")]
    backend = WhisperASR(model=tiny_en)
    batched = backend.batch(clips)
    alone = [backend.transcribe(c) for c in clips]
    assert [t.text for t in batched] == [t.text for t in alone]
    assert "table" in batched[1].text.lower() and batched[2].text == ""
    assert batched[0].segments and batched[0].segments[-1].end <= clips[0].duration + 1e-6
    assert " ".join(s.text for s in batched[0].segments) == batched[0].text
    with pytest.raises(InputError):
        backend.batch(clips[:2], language="xx")
