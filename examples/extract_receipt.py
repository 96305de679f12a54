"""Structured extraction: OCR a receipt, then fill a pydantic schema with the LLM (validated, with a
bounded repair loop; a failure is shown with every attempt, never hidden).

    python examples/extract_receipt.py examples/media/receipt.png
"""

import argparse
import sys

from pydantic import BaseModel

import mmagent
from mmagent.extract import ExtractionError, extract


class Receipt(BaseModel):
    shop: str
    total: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--repairs", type=int, default=2)
    args = parser.parse_args()
    image = mmagent.load_media(args.image, expect="image")
    text = mmagent.get_backend("ocr").read(image).text
    try:
        result = extract(Receipt, text, mmagent.get_backend("llm"), max_repairs=args.repairs)
    except ExtractionError as exc:
        print(f"extraction failed: {exc}", file=sys.stderr)
        for i, attempt in enumerate(exc.attempts, 1):
            print(f"  attempt {i}: {attempt.output!r}\n    error: {attempt.error}", file=sys.stderr)
        sys.exit(1)
    print(result.value.model_dump_json(indent=2))
    print(f"({len(result.attempts)} attempt(s))", file=sys.stderr)


if __name__ == "__main__":
    main()
