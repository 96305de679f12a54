"""Transcribe speech with timestamps: `python examples/transcribe.py examples/media/question.wav`."""

import argparse

import mmagent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("audio")
    parser.add_argument("--backend", default=None, help="whisper or faster-whisper (default: configured)")
    parser.add_argument("--model", default=None, help="zoo name, checkpoint path or model name")
    args = parser.parse_args()
    audio = mmagent.load_media(args.audio, expect="audio")
    asr = mmagent.get_backend("asr", args.backend, **({"model": args.model} if args.model else {}))
    transcript = asr.transcribe(audio)
    print(f"[{transcript.language}] {transcript.text}")
    for seg in transcript.segments:
        print(f"  {seg.start:6.2f}–{seg.end:6.2f}  {seg.text}")


if __name__ == "__main__":
    main()
