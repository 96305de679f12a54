"""mmagent's prebuilt graphs, registered like any plugin's through `register_graphs`.

Each is exposed both as an uncompiled builder (`builder(toolbox, **options) -> StateGraph`) and a
compiled factory (`build_graph(toolbox, **options)`); `mmagent.graphs.studio` has the zero-argument
factories that `langgraph.json` names for `langgraph dev` / LangGraph Studio.
"""

from mmagent import hookimpl
from mmagent.graphs_registry import GraphSpec


@hookimpl
def register_graphs(register):
    register(GraphSpec("auto", "The router: each request goes to the route that answers it best (measured competence)",
                       "mmagent.graphs.router:builder"))
    register(GraphSpec("tools", "LLM + tools: ASR, OCR, captioner, detector feed a text LLM",
                       "mmagent.graphs.tool_chain:builder", roles=("llm",), brain="llm"))
    register(GraphSpec("adapter", "LLM + adapter: a vision-language model reads the images",
                       "mmagent.graphs.adapter:builder", roles=("vlm",), brain="vlm", needs=("image",)))
    register(GraphSpec("hybrid", "Adapter + OCR: the vision-language model reads the images, given the OCR text",
                       "mmagent.graphs.hybrid:builder", roles=("vlm", "ocr"), brain="vlm", needs=("image",),
                       extends="adapter"))
    register(GraphSpec("unified", "Unified: one model reads the text, images and audio natively (over an API)",
                       "mmagent.graphs.unified:builder", roles=("unified",), brain="unified"))
