"""The plugin hooks. Each receives a callback or object to add things to; see docs/plugins.md."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("mmagent")
hookimpl = HookimplMarker("mmagent")


@hookspec
def register_backends(register):
    """Call `register(BackendClass)` for each backend (ASR, OCR, LLM, ...) the plugin provides."""


@hookspec
def register_commands(cli):
    """Add commands to the `mmagent` CLI: `cli` is its click group (`@cli.command()`)."""


@hookspec
def register_models(register):
    """Call `register(ModelSpec(...))` for each offline model the plugin can build into the zoo."""


@hookspec
def register_tools(register):
    """Call `register(Tool(...))` for each tool (a capability agents can call) the plugin provides."""


@hookspec
def register_graphs(register):
    """Call `register(GraphSpec(...))` for each agent graph (pipeline) the plugin provides."""


@hookspec
def register_suites(register):
    """Call `register(Suite(...))` for each evaluation suite (`mmagent eval --suite NAME`) the plugin provides."""


@hookspec
def register_metrics(register):
    """Call `register(Metric(...))` for each evaluation metric (a suite's `metric`) the plugin provides."""
