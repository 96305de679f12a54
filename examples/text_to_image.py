"""Text to image with diffusers (Stable Diffusion, SDXL, Flux ... whatever the model folder holds).

    python examples/text_to_image.py "a red bicycle by the sea" --model stabilityai/sd-turbo --steps 2 --guidance 0

Needs a diffusion model: a Hugging Face id (with network or a filled HF cache) or a local folder.
"""

import argparse
from pathlib import Path

import mmagent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--model", default=None)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="image.png")
    args = parser.parse_args()
    generator = mmagent.get_backend("image_gen", **({"model": args.model} if args.model else {}))
    image = generator.generate(args.prompt, width=args.size, height=args.size, steps=args.steps,
                               guidance=args.guidance, seed=args.seed)
    Path(args.out).write_bytes(image.read_bytes())
    print(f"wrote {args.out} ({image.width}x{image.height})")


if __name__ == "__main__":
    main()
