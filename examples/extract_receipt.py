"""Structured extraction: OCR a receipt, then fill a pydantic schema with the LLM (validated, with a
bounded repair loop; a failure is shown with every attempt, never hidden).

    python examples/extract_receipt.py examples/media/receipt.png
    OPENAI_API_KEY=... python examples/extract_receipt.py receipt.png --backend openai --model gpt-4o-mini

The offline default LLM (SmolLM2-135M) rarely writes schema-valid JSON: expect this example to
exit 1 and print every attempt with its validation error. A larger model fills the schema.
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
    parser.add_argument("--backend", default=None, help="llm backend (default: configured)")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    image = mmagent.load_media(args.image, expect="image")
    text = mmagent.get_backend("ocr").read(image).text
    try:
        llm = mmagent.get_backend("llm", args.backend, **({"model": args.model} if args.model else {}))
        result = extract(Receipt, text, llm, max_repairs=args.repairs)
    except ExtractionError as exc:
        print(f"extraction failed: {exc}", file=sys.stderr)
        for i, attempt in enumerate(exc.attempts, 1):
            print(f"  attempt {i}: {attempt.output!r}\n    error: {attempt.error}", file=sys.stderr)
        sys.exit(1)
    print(result.value.model_dump_json(indent=2))
    print(f"({len(result.attempts)} attempt(s))", file=sys.stderr)


if __name__ == "__main__":
    main()
