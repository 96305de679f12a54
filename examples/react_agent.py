"""A LangGraph prebuilt agent (`create_react_agent`) with mmagent's tools, on a receipt.

    python examples/react_agent.py                                  # offline: SmolLM2 with grammar-constrained tool calls
    python examples/react_agent.py photo.png "What does the sign say?"
    OPENAI_API_KEY=... python examples/react_agent.py --model llm/openai

The agent is LangGraph's own; the model is `ChatMMAgent` (any mmagent chat backend as a LangChain
chat model) and the tools are `as_tools()` (mmagent's tools as LangChain tools, each taking a
`file`). Every message is printed: tool calls, tool results, the answer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RECEIPT = Path(__file__).resolve().parent / "media" / "receipt.png"
SYSTEM = ("You cannot see images. To learn what an image shows, call a tool with the image's file path: "
          "read_text reads printed text, caption_image describes it. Call a tool first, then answer from "
          "its result.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", default=str(RECEIPT))
    parser.add_argument("question", nargs="?", default="What is the total on the receipt?")
    parser.add_argument("--model", default="llm", help="llm (the configured chat model), llm/openai, llm=MODEL ...")
    parser.add_argument("--steps", type=int, default=8, help="LangGraph recursion limit (the agent always ends)")
    args = parser.parse_args()

    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langgraph.errors import GraphRecursionError
    from langgraph.prebuilt import create_react_agent

    from mmagent.errors import MMAgentError
    from mmagent.langchain import ChatMMAgent, as_tools

    local = args.model.split("/")[0].split("=")[0] == "llm" and "/" not in args.model
    options = {"tool_calling": True} if local else {}
    try:
        model = ChatMMAgent(model=args.model, backend_options=options, max_tokens=40)
        path = str(Path(args.image).resolve())
        tools = as_tools(names=["read_text", "caption_image"], files=[path])  # the agent may read this file only
        if local:
            # A 135M model answers before looking, and once it has looked it looks again. So: its first
            # step must be a tool call, the next an answer (LangGraph's dynamic model: the model is
            # chosen per step from the state; tool_choice is honoured by the grammar). A real
            # tool-calling model (--model llm/openai) chooses freely.
            first, later = model.bind_tools(tools, tool_choice="required"), model.bind_tools(tools, tool_choice="none")

            def choose(state, runtime):
                return later if any(isinstance(m, ToolMessage) for m in state["messages"]) else first

            agent = create_react_agent(choose, tools, prompt=SYSTEM)
        else:
            agent = create_react_agent(model, tools, prompt=SYSTEM)
        question = args.question  # the file is named by the tools' schema (the only value `file` may take)
        state = agent.invoke({"messages": [HumanMessage(question)]}, {"recursion_limit": args.steps})
    except GraphRecursionError:
        sys.exit(f"error: the agent did not answer within {args.steps} steps")
    except MMAgentError as exc:
        sys.exit(f"error: {exc}")
    for message in state["messages"]:
        if isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                print(f"[tool call] {call['name']}({call['args']})")
        elif isinstance(message, ToolMessage):
            print(f"[{message.name}] {message.text.replace(chr(10), ' | ')}")
        elif isinstance(message, AIMessage):
            print(f"[answer] {message.text}")


if __name__ == "__main__":
    main()
