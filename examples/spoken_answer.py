"""A spoken question about a document, answered out loud: Whisper → OCR → LLM → Piper.

    python examples/spoken_answer.py examples/media/question.wav examples/media/receipt.png --out answer/
"""

import argparse

import mmagent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", help="audio file with the spoken question")
    parser.add_argument("image")
    parser.add_argument("--out", default="mmagent-out")
    args = parser.parse_args()
    result = mmagent.run(audio=[args.question], images=[args.image], output="speech")
    print("answer:", result.answer)
    for step in result.steps:
        print(f"  {step['tool']:<6} {step.get('seconds', 0):6.2f}s  {str(step.get('output', step.get('error')))[:70]!r}")
    for path in result.save_outputs(args.out):
        print("wrote", path)


if __name__ == "__main__":
    main()
