"""mmagent: build and measure multimodal agents.

`import mmagent` is cheap: no torch, transformers, diffusers, whisper or langgraph. Names below
are loaded on first access.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import InputError, MMAgentError
from .hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    # content
    "TextPart": "mmagent.content", "ImagePart": "mmagent.content", "AudioPart": "mmagent.content",
    "VideoPart": "mmagent.content", "MediaRef": "mmagent.content", "MediaStore": "mmagent.content",
    "load_media": "mmagent.content", "to_openai": "mmagent.content", "from_openai": "mmagent.content",
    "to_langchain": "mmagent.content", "from_langchain": "mmagent.content",
    # configuration
    "Settings": "mmagent.config", "load_settings": "mmagent.config",
    # backends
    "Backend": "mmagent.backends", "get_backend": "mmagent.backends", "list_backends": "mmagent.backends",
    "Message": "mmagent.backends", "ToolSpec": "mmagent.backends",
    # plugins
    "get_plugins": "mmagent.plugin_manager",
    # running requests
    "run": "mmagent.runner", "stream": "mmagent.runner", "RunResult": "mmagent.runner",
    # tools and graphs
    "Tool": "mmagent.tools", "get_tools": "mmagent.tools", "call_tool": "mmagent.tools",
    "GraphSpec": "mmagent.graphs_registry", "get_graphs": "mmagent.graphs_registry",
    "get_runtime": "mmagent.runtime",
}

__all__ = ["InputError", "MMAgentError", "__version__", "hookimpl", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmagent' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from .backends import Backend, Message, ToolSpec, get_backend, list_backends
    from .config import Settings, load_settings
    from .content import (AudioPart, ImagePart, MediaRef, MediaStore, TextPart, VideoPart, from_langchain,
                          from_openai, load_media, to_langchain, to_openai)
    from .plugin_manager import get_plugins
    from .graphs_registry import GraphSpec, get_graphs
    from .runner import RunResult, run, stream
    from .runtime import get_runtime
    from .tools import Tool, call_tool, get_tools
