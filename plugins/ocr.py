"""OCR with RapidOCR: PP-OCRv4 text detection + recognition and an angle classifier on onnxruntime.

The offline weights ship inside the `rapidocr-onnxruntime` wheel; the zoo entry "pp-ocrv4" links
them into `$MMAGENT_HOME/models/pp-ocrv4/`. `model` may also be a folder of your own ONNX files
with the same three names (see `MODEL_FILES`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from mmagent import hookimpl
from mmagent.backends import OcrLine, OcrResult, TextReader
from mmagent.content import ImagePart
from mmagent.errors import BackendError, InputError, one_line
from mmagent.zoo import ModelSpec, ModelUnavailableError

PP_OCRV4 = "pp-ocrv4"
_PACKAGE = "rapidocr_onnxruntime"
#: The files a model folder holds, by RapidOCR stage.
MODEL_FILES = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}
#: Options that change how the engine is built (part of the model cache key).
_LOAD_OPTIONS = ("threads", "det_limit_type", "det_limit_side_len", "use_cls")


def package_models() -> Path | None:
    """The `models/` folder inside the installed rapidocr-onnxruntime wheel, or None."""
    spec = importlib.util.find_spec(_PACKAGE)  # locate only: importing it loads onnxruntime and cv2
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if all((folder / name).is_file() for name in MODEL_FILES.values()) else None


def build_pp_ocrv4(folder: Path, report) -> None:
    """Symlink the wheel's three ONNX files into the zoo folder (no copy: the cache stays small)."""
    source = package_models()
    if source is None:
        raise ModelUnavailableError(f"{_PACKAGE} is not installed")
    for name in MODEL_FILES.values():
        report.step(f"linking {name}")
        (folder / name).symlink_to((source / name).resolve())


def model_paths(folder: Path) -> dict[str, Path]:
    """The det/rec/cls files of a model folder; a BackendError naming what is missing."""
    paths = {stage: folder / name for stage, name in MODEL_FILES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise BackendError(f"OCR model folder {str(folder)!r} lacks {', '.join(missing)}")
    return paths


class RapidOCRReader(TextReader):
    """Lines in reading order (top to bottom, then left to right), each with its box and confidence.

    Options: `min_confidence` (0.5) drops less certain lines; `threads` (onnxruntime intra-op
    threads, default: its own choice); `det_limit_type` ("max": shrink big images only; "min":
    also enlarge small ones to `det_limit_side_len`, for tiny text); `use_cls` (True) fixes
    upside-down lines.
    """

    name = "rapidocr"
    description = "PP-OCRv4 (det + rec + angle cls) via RapidOCR on onnxruntime"
    default_model = PP_OCRV4
    requires = ("rapidocr_onnxruntime", "onnxruntime")

    @property
    def cache_key(self) -> tuple:
        return (*super().cache_key, *(repr(self.options.get(k)) for k in _LOAD_OPTIONS))

    def load_model(self) -> Any:
        from rapidocr_onnxruntime import RapidOCR

        from mmagent.zoo import get_zoo

        from ._onnx import check_float32, use_cuda

        check_float32(self.dtype, "ocr/rapidocr")
        cuda = use_cuda(self.device, "ocr/rapidocr")
        zoo = get_zoo()
        model = str(self.model_id)
        folder = zoo.ensure(model) if model in zoo.specs else Path(model).expanduser()
        paths = model_paths(folder)
        kwargs: dict[str, Any] = {
            "det_model_path": str(paths["det"]), "rec_model_path": str(paths["rec"]),
            "cls_model_path": str(paths["cls"]),
            "det_use_cuda": cuda, "rec_use_cuda": cuda, "cls_use_cuda": cuda,
            "det_limit_type": self.options.get("det_limit_type", "max"),
            "det_limit_side_len": self.options.get("det_limit_side_len", 736),
            "use_cls": bool(self.options.get("use_cls", True)),
            "text_score": 0.0,  # filtered here, by `min_confidence`
        }
        if self.options.get("threads"):
            kwargs["intra_op_num_threads"] = int(self.options["threads"])
        return RapidOCR(**kwargs)

    def read(self, image: ImagePart) -> OcrResult:
        pixels = _bgr_pixels(image)
        height, width = pixels.shape[:2]
        _check_shape(width, height)
        engine = self.model
        try:
            raw, _elapsed = engine(pixels)
        except Exception as exc:
            raise BackendError(f"ocr/rapidocr failed on a {width}x{height} image: {_describe(exc)}") from exc
        threshold = float(self.options.get("min_confidence", 0.5))
        lines = []
        for quad, text, score in raw or ():
            text, score = str(text).strip(), float(score)
            if text and score >= threshold:
                lines.append(OcrLine(text=text, box=_box(quad, width, height), confidence=score))
        return OcrResult(lines=reading_order(lines))


#: RapidOCR's preprocessing (its config.yaml): images are shrunk to this longest side, then
#: enlarged to this shortest side, each side rounded to a multiple of 32.
_MAX_SIDE, _MIN_SIDE = 2000, 30


def _check_shape(width: int, height: int) -> None:
    """Refuse, in one line, an image RapidOCR's resizing would squash to nothing (it raises an
    exception without a message): one whose short side shrinks below 16 px once its long side is
    brought down to 2000 px, i.e. an aspect ratio beyond about 125:1 on a long side over 2000 px."""
    long, short = max(width, height), min(width, height)
    if long > _MAX_SIDE and round(int(short * _MAX_SIDE / long) / 32) <= 0:
        raise InputError(f"ocr/rapidocr cannot read a {width}x{height} image: it is too thin "
                         f"(shrunk to {_MAX_SIDE} px long it would be under 16 px wide); crop or pad it")


def _describe(exc: BaseException) -> str:
    """`Type: message` for an exception, following its causes while the message is empty."""
    seen = exc
    while not str(seen).strip() and seen.__cause__ is not None:
        seen = seen.__cause__
    text = one_line(str(seen).strip(), 300) or "no message"
    return f"{type(exc).__name__}: {text}"


def _bgr_pixels(image: ImagePart):
    """The image as an HxWx3 uint8 BGR array: EXIF rotation applied, transparency on white, 16-bit
    and float images scaled to 8 bits (`convert("RGB")` alone clips them to a white page)."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    from mmagent.content.guard import to_8bit

    if not isinstance(image, ImagePart):
        raise InputError(f"ocr/rapidocr reads images; got {type(image).__name__}")
    try:
        with Image.open(image.path()) as img:
            img = to_8bit(ImageOps.exif_transpose(img))
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                img = Image.new("RGB", rgba.size, "white")
                img.paste(rgba, mask=rgba.getchannel("A"))
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"ocr/rapidocr could not decode the image: {exc}") from exc
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _box(quad, width: int, height: int) -> tuple[float, float, float, float]:
    """The axis-aligned box around a quadrilateral, clamped to the image."""
    xs = [min(max(float(p[0]), 0.0), float(width)) for p in quad]
    ys = [min(max(float(p[1]), 0.0), float(height)) for p in quad]
    return (min(xs), min(ys), max(xs), max(ys))


def reading_order(lines: list[OcrLine]) -> tuple[OcrLine, ...]:
    """Rows top to bottom (boxes whose vertical spans overlap by half the smaller height share a
    row), each row left to right."""
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda ln: (ln.box[1] + ln.box[3]) / 2):
        row = rows[-1] if rows else None
        if row is not None and _same_row(row[0], line):
            row.append(line)
        else:
            rows.append([line])
    return tuple(line for row in rows for line in sorted(row, key=lambda ln: ln.box[0]))


def _same_row(a: OcrLine, b: OcrLine) -> bool:
    overlap = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
    smaller = min(a.box[3] - a.box[1], b.box[3] - b.box[1])
    return smaller > 0 and overlap >= smaller / 2


@hookimpl
def register_backends(register):
    register(RapidOCRReader)


@hookimpl
def register_models(register):
    register(ModelSpec(
        name=PP_OCRV4, role="ocr", description="PP-OCRv4 text detection + recognition, PP-OCR angle classifier",
        source="PyPI rapidocr-onnxruntime 1.4.4 (ONNX)", build=build_pp_ocrv4,
        available=lambda: package_models() is not None,
        install_hint="pip install rapidocr-onnxruntime==1.4.4",
    ))
