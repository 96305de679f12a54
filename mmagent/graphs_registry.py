"""Graphs by name: what `--pipeline NAME`, `ChatMMAgent(pipeline=NAME)` and the server run.

Plugins (mmagent's own `mmagent.graphs` among them) add graphs with the `register_graphs` hook:
`register(GraphSpec("tools", "LLM + tools", "mmagent.graphs.tool_chain:builder"))`. The builder is
named as "module:function" (nothing imports until the graph is used) or given as a callable; it
takes a `Toolbox` and options and returns an *uncompiled* LangGraph `StateGraph` whose state
follows mmagent's graph state (`mmagent.graphs.kit.MMState`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, Callable

from .errors import PluginError
from .registry import NamedRegistry

if TYPE_CHECKING:
    from .toolbox import Toolbox


@dataclass(frozen=True)
class GraphSpec:
    name: str
    description: str
    #: "module:function" or a callable: (toolbox, **options) -> uncompiled StateGraph.
    builder: str | Callable[..., Any] = field(compare=False)
    #: The roles it needs to answer at all (shown by `mmagent graphs`).
    roles: tuple[str, ...] = ()
    #: The role whose model answers (the "brain": llm, vlm, unified). A graph with a brain is a
    #: route `--pipeline auto` can choose; the router reads what the brain takes natively.
    brain: str | None = None
    #: Media kinds a request must have for this route to serve it at all ("image" for a VLM route).
    needs: tuple[str, ...] = ()
    #: The route this one adds work to (hybrid: adapter + OCR). The router takes it only where its
    #: expected accuracy beats that route's by at least `[router] margin`: kept where it helps.
    extends: str | None = None

    def load_builder(self) -> Callable[..., Any]:
        if callable(self.builder):
            return self.builder
        module, _, attr = self.builder.partition(":")
        try:
            return getattr(import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"graph '{self.name}': cannot load {self.builder} ({exc})") from exc

    def build(self, toolbox: Toolbox, **options: Any):
        """The uncompiled StateGraph."""
        return self.load_builder()(toolbox, **options)

    def compile(self, toolbox: Toolbox, *, checkpointer: Any = None, **options: Any):
        """The compiled graph (with `checkpointer` for conversation threads)."""
        return self.build(toolbox, **options).compile(checkpointer=checkpointer, name=self.name)


class GraphRegistry(NamedRegistry):
    kind, unknown, cls, cls_path, hook = "graph", "pipeline", GraphSpec, "mmagent.graphs_registry.GraphSpec", \
        "register_graphs"

    @property
    def graphs(self) -> dict[str, GraphSpec]:
        return self.items


def get_graphs() -> GraphRegistry:
    """The process's graphs (the runtime's)."""
    from .runtime import get_runtime

    return get_runtime().graphs
