"""Read the text in an image, line by line: `python examples/ocr.py examples/media/receipt.png`."""

import argparse

import mmagent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("image")
    args = parser.parse_args()
    image = mmagent.load_media(args.image, expect="image")
    for line in mmagent.get_backend("ocr").read(image).lines:
        x0, y0, x1, y1 = line.box
        print(f"{line.confidence:.2f}  ({x0:.0f},{y0:.0f})-({x1:.0f},{y1:.0f})  {line.text}")


if __name__ == "__main__":
    main()
