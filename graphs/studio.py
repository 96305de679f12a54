"""Zero-argument factories for `langgraph dev` / LangGraph Studio (named in `langgraph.json`).

Each returns a compiled graph over the configured backends, without a checkpointer (the LangGraph
server brings its own persistence).
"""

from __future__ import annotations


def tools():
    """The LLM + tools graph (planner chosen from the configured chat model)."""
    from mmagent.graphs.tool_chain import build_graph

    return build_graph()


def adapter():
    """The LLM + adapter graph (the configured vision-language model reads the images)."""
    from mmagent.graphs.adapter import build_graph

    return build_graph()


def unified():
    """The unified graph (the configured `unified` model reads text, images and audio itself)."""
    from mmagent.graphs.unified import build_graph

    return build_graph()


def hybrid():
    """The hybrid graph (the vision-language model reads the images, given the OCR text)."""
    from mmagent.graphs.hybrid import build_graph

    return build_graph()


def auto():
    """The router: every request goes to the route that answers it best (docs/router.md)."""
    from mmagent.graphs.router import build_graph

    return build_graph()
