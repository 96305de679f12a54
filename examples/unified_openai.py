"""Ask a unified model about an image through an OpenAI-compatible server (Ollama shown here).

    ollama pull llama3.2-vision
    ollama serve                      # the OpenAI API is under http://localhost:11434/v1
    python examples/unified_openai.py examples/media/receipt.png --question "What is the total?"

The same code reaches GPT-4o (`--base-url https://api.openai.com/v1 --model gpt-4o`, key in
OPENAI_API_KEY) or a vLLM server (`--base-url http://localhost:8000/v1 --model <served name>`).
In a config file the equivalent is:

    [roles.vlm]
    backend = "openai"
    model = "llama3.2-vision"
    options = { base_url = "http://localhost:11434/v1" }
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

RECEIPT = Path(__file__).resolve().parent / "media" / "receipt.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("image", nargs="?", default=str(RECEIPT), help="an image file (default: the sample receipt)")
    parser.add_argument("--question", default="What is the total on this receipt?")
    parser.add_argument("--model", default="llama3.2-vision")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL", "http://localhost:11434/v1"))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds (a first load can be slow)")
    args = parser.parse_args(argv)

    import mmagent
    from mmagent.backends import Message
    from mmagent.errors import BackendError

    try:
        vlm = mmagent.get_backend("vlm", "openai", model=args.model, base_url=args.base_url,
                                  timeout=args.timeout, max_retries=0)
        image = mmagent.load_media(args.image, expect="image")
        question = Message("user", [mmagent.TextPart(args.question), image])
        for piece in vlm.stream([question], max_tokens=300):
            print(piece, end="", flush=True)
        print()
    except mmagent.MMAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, BackendError):
            print(f"Is an OpenAI-compatible server running at {args.base_url}? For Ollama: `ollama serve`, "
                  f"then `ollama pull {args.model}`.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
