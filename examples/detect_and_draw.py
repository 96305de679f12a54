"""Detect objects and draw the boxes: DETR (fixed classes) or OWL-ViT (any labels you name).

    python examples/detect_and_draw.py photo.jpg --model facebook/detr-resnet-50 --out boxes.png
    python examples/detect_and_draw.py photo.jpg --model google/owlvit-base-patch32 --labels cat dog

Needs a detector model: a Hugging Face id (with network or a filled HF cache) or a local folder.
"""

import argparse
from pathlib import Path

import mmagent
from mmagent.plugins.vision import draw_detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--model", default=None, help="HF id or local folder (default: the configured one)")
    parser.add_argument("--labels", nargs="*", default=None, help="classes to look for (zero-shot models)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--out", default="detections.png")
    args = parser.parse_args()
    image = mmagent.load_media(args.image, expect="image")
    detector = mmagent.get_backend("detect", **({"model": args.model} if args.model else {}))
    detections = detector.detect(image, labels=args.labels, threshold=args.threshold)
    for d in detections:
        print(f"{d.label:<16} {d.score:.2f}  {tuple(round(v) for v in d.box)}")
    Path(args.out).write_bytes(draw_detections(image, detections).read_bytes())
    print("wrote", args.out)


if __name__ == "__main__":
    main()
