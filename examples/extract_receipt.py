"""Structured extraction: OCR a receipt, then fill a pydantic schema with the LLM (validated, with a
bounded repair loop; a failure is shown with every attempt, never hidden).

    python examples/extract_receipt.py examples/media/receipt.png
    OPENAI_API_KEY=... python examples/extract_receipt.py receipt.png --backend openai --model gpt-4o-mini

The offline default LLM (SmolLM2-135M) decodes under the schema's JSON schema (xgrammar), so its
reply is always schema-shaped JSON; the field descriptions in examples/receipt_schema.py tell it
where the values are. On the bundled receipt it prints {"shop": "Cornercafe", "total": 9.75}
(the OCR reads "CORNERCAFE") after one attempt. The same from the command line:

    mmagent extract --schema examples/receipt_schema.py:Receipt --image examples/media/receipt.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmagent.extract import ExtractionError, extract, load_schema

SCHEMA = str(Path(__file__).with_name("receipt_schema.py")) + ":Receipt"


def main(argv: list[str] | None = None) -> int:
    import mmagent
    from mmagent.tools import call_tool

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--repairs", type=int, default=2)
    parser.add_argument("--backend", default=None, help="llm backend (default: configured)")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    text = call_tool("read_text", {"file": args.image}).text
    llm = mmagent.get_backend("llm", args.backend, **({"model": args.model} if args.model else {}))
    try:
        result = extract(load_schema(SCHEMA), text, llm, max_repairs=args.repairs)
    except ExtractionError as exc:
        print(f"extraction failed: {exc}", file=sys.stderr)
        for i, attempt in enumerate(exc.attempts, 1):
            print(f"  attempt {i}: {attempt.output!r}\n    error: {attempt.error}", file=sys.stderr)
        return 1
    print(result.value.model_dump_json(indent=2))
    how = "decoded under the schema" if result.constrained else "schema in the prompt only"
    print(f"({len(result.attempts)} attempt(s), {how})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
