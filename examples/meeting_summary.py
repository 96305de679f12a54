"""Meeting audio → transcript → summary → spoken summary: a graph of your own, built from the kit.

    python examples/meeting_summary.py                       # synthesizes a short meeting offline first
    python examples/meeting_summary.py meeting.wav --out summary/ --stream

    START → begin → transcribe → summarize → speak → END

Every node is mmagent's (`mmagent.graphs.kit.Nodes`); the graph, its order and its prompt are
yours. Offline: Whisper base, SmolLM2-135M and Piper from the zoo.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MEETING = ("Good morning everyone. First item: the product launch moves to March fifteenth because the "
           "supplier is late. Second item: Maria will hire two support engineers before the launch. "
           "Last item: the budget review is on Friday at ten.")
SUMMARY_PROMPT = ("You summarise meeting transcripts. Write two short sentences with the decisions, "
                  "dates and people named. Do not add anything.")


def build(toolbox=None):
    """The uncompiled graph (what `mmagent run --graph examples/meeting_summary.py:build` would call
    as a factory)."""
    from langgraph.graph import END, START, StateGraph

    from mmagent.graphs.kit import MMState, Nodes

    nodes = Nodes(toolbox)

    def summarize(state: MMState) -> dict:
        transcript = "\n".join(a["text"] for a in state.get("artifacts", []) if a["kind"] == "transcript")
        return nodes.llm_answer({**state, "system": SUMMARY_PROMPT, "artifacts": [],
                                 "question": f"Transcript:\n{transcript}\n\nSummary:"})

    graph = StateGraph(MMState)
    graph.add_node("begin", nodes.begin)
    graph.add_node("transcribe", nodes.transcribe)
    graph.add_node("summarize", summarize)
    graph.add_node("speak", nodes.speak)
    graph.add_edge(START, "begin")
    graph.add_edge("begin", "transcribe")
    graph.add_edge("transcribe", "summarize")
    graph.add_edge("summarize", "speak")
    graph.add_edge("speak", END)
    return graph


def graph():
    """A zero-argument factory: `mmagent run --graph examples/meeting_summary.py:graph --audio meeting.wav`."""
    return build().compile()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="?", help="the meeting recording (default: one synthesized with Piper)")
    parser.add_argument("--out", default="mmagent-out", help="where the spoken summary is written")
    parser.add_argument("--stream", action="store_true", help="print the summary as it is written")
    args = parser.parse_args()

    from mmagent.content.parts import part_from_dict
    from mmagent.errors import MMAgentError
    from mmagent.graphs.kit import human_message
    from mmagent.runner import RunResult

    try:
        if args.audio:
            audio = args.audio
        else:
            from mmagent.backends import get_backend

            # Piper's noise off: the same meeting every run (with it, Whisper sometimes hears
            # "Rhea" for "Maria")
            audio = get_backend("tts", "piper", noise_scale=0.0, noise_w_scale=0.0).synthesize(MEETING)
            print(f"(synthesized a {audio.duration:.1f} s meeting with Piper)", file=sys.stderr)
        request = {"messages": [human_message("", [audio])]}
        final: dict = {}
        for mode, chunk in build().compile().stream(request, stream_mode=["values", "messages"]):
            if mode == "values":
                final = chunk
            elif args.stream and type(chunk[0]).__name__ == "AIMessageChunk":
                print(chunk[0].content, end="", flush=True)
    except MMAgentError as exc:
        sys.exit(f"error: {exc}")
    transcript = next((a["text"] for a in final["artifacts"] if a["kind"] == "transcript"), "")
    print(("\n" if args.stream else "") + f"transcript: {transcript}\nsummary: {final['answer']}")
    for step in final["steps"]:
        print(f"  {step.get('name', step['tool']):<10} {step.get('seconds', 0):6.2f}s", file=sys.stderr)
    result = RunResult(final["answer"], "meeting", final["steps"], final["artifacts"], final.get("plan", {}),
                       [part_from_dict(p) for p in final["outputs"]])
    for path in result.save_outputs(Path(args.out)):
        print("wrote", path)


if __name__ == "__main__":
    main()
