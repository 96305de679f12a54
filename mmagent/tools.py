"""Tools as data: one `Tool` per capability, beside the role contracts and outside any graph.

A tool says what it is called, what it does, the JSON schema of its arguments, the backend role it
needs, how it runs and which artifact it records. Graphs, the LLM tool-calling planner, LangChain
(`mmagent.langchain.as_tools`) and the server all read the same list, so a plugin that adds a
modality adds a tool through the `register_tools` hook and no graph changes.

Every media tool takes its input as an argument named `file`: a path, a data URL or a media-store
reference (`mmagent-media:sha256:…`); every tool returns text, plus media parts when it makes
them. Nothing here imports a heavy library.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import BackendError, InputError, MMAgentError, PluginError

if TYPE_CHECKING:
    from .backends.base import Backend
    from .config import Settings
    from .content.parts import Part
    from .toolbox import Toolbox


class ToolError(MMAgentError):
    """A tool call could not run: unknown tool, bad arguments, unusable file, failing backend."""


@dataclass(frozen=True)
class ToolOutput:
    """What a tool returns: text for the model, media it made, and the artifact recorded."""

    text: str
    parts: tuple[Part, ...] = ()
    artifact: dict[str, Any] = field(default_factory=dict)
    raw: Any = field(default=None, compare=False, repr=False)


#: How a tool runs: `run(backend, arguments)` with `file` already loaded as a part.
Runner = Callable[["Backend", dict[str, Any]], ToolOutput]


@dataclass(frozen=True)
class Tool:
    """A capability as data (smolagents' `Tool`, OpenAI's function shape)."""

    name: str
    description: str
    #: JSON schema of the arguments (an object schema).
    parameters: dict[str, Any]
    #: The backend role it needs, e.g. "ocr" (None: it needs no backend).
    role: str | None
    run: Runner = field(compare=False, repr=False)
    #: The `kind` of the artifact it records ("ocr", "caption", "transcript", ...).
    artifact: str = "text"
    #: The media kind its `file` argument must be ("image", "audio"), or None without a file.
    file_kind: str | None = None
    #: What it produces besides text: "image", "audio" or None.
    produces: str | None = None
    #: The request intents it serves ("read", "describe", "detect", ...; see mmagent.graphs.intent).
    intents: tuple[str, ...] = ()
    #: Whether a rule planner runs it on every input of `file_kind` when no intent narrows the choice.
    auto: bool = False
    #: How its artifact is labelled for the model: "{file}" becomes "image 1", "audio 2" ...
    label: str = "{tool} of {file}"
    #: A converter: the media kinds it turns its `file` into (its output `parts`), e.g. a video's
    #: keyframes and audio track ("image", "audio"). Graphs put those parts in the file's place for
    #: every model and tool that cannot read the file's kind itself.
    expands: tuple[str, ...] = ()

    def spec(self):
        """The `ToolSpec` a chat backend is given."""
        from .backends.results import ToolSpec

        return ToolSpec(self.name, self.description, self.parameters)

    def openai_schema(self) -> dict[str, Any]:
        """OpenAI's function-tool shape (what `bind_tools` and the server speak)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    def invoke(self, arguments: Mapping[str, Any], toolbox: Toolbox | None = None, *,
               settings: Settings | None = None) -> ToolOutput:
        """Check the arguments, load `file`, run the backend of `role`. Raises ToolError (or the
        InputError of a rejected file) with one readable line."""
        from .toolbox import Toolbox

        if not isinstance(arguments, Mapping):
            raise ToolError(f"{self.name}: arguments must be an object")
        args = check_arguments(self, dict(arguments))
        toolbox = toolbox or Toolbox(settings=settings)
        if self.file_kind is not None:
            args["file"] = resolve_file(args["file"], self.file_kind, settings=settings or toolbox.settings)
        backend = None
        if self.role is not None:
            reason = toolbox.why_unavailable(self.role)
            if reason:
                raise ToolError(f"{self.name}: {reason}")
            backend = toolbox.get(self.role)
        try:
            output = self.run(backend, args)
        except (ToolError, InputError):
            raise
        except BackendError as exc:
            raise ToolError(f"{self.name}: {exc}") from exc
        artifact = {"kind": self.artifact, "tool": self.name, "text": output.text, **output.artifact}
        if self.file_kind is not None:
            artifact.setdefault("file", args["file"].ref.uri)
        return ToolOutput(output.text, output.parts, artifact, output.raw)


def check_arguments(tool: Tool, args: dict[str, Any]) -> dict[str, Any]:
    """Required arguments present, no unknown ones, simple JSON types right (what small models
    get wrong); a string where an array of strings is expected is taken as a one-item list."""
    schema = tool.parameters
    properties: dict[str, Any] = schema.get("properties", {})
    missing = [k for k in schema.get("required", []) if args.get(k) in (None, "")]
    if missing:
        raise ToolError(f"{tool.name}: missing argument(s) {', '.join(missing)}")
    unknown = sorted(set(args) - set(properties))
    if unknown and schema.get("additionalProperties", True) is False:
        raise ToolError(f"{tool.name}: unknown argument(s) {', '.join(unknown)}")
    kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list,
             "object": dict}
    out = {}
    for key, value in args.items():
        expected = properties.get(key, {}).get("type")
        if expected == "array" and isinstance(value, str):
            value = [value]
        if key == "file" and (hasattr(value, "ref") or isinstance(value, dict)):
            out[key] = value  # an already loaded part (graphs pass their parts)
            continue
        if value is not None and expected in kinds and not isinstance(value, kinds[expected]):
            raise ToolError(f"{tool.name}: argument '{key}' must be a {expected}")
        out[key] = value
    return out


def resolve_file(value: Any, kind: str, *, settings: Settings | None = None) -> Part:
    """A tool's `file` argument as a stored, validated part: a part, a media-store reference, a
    data URL, a path (or an http(s) URL where fetching is on)."""
    from .content.parts import part_from_dict
    from .content.sources import load_media

    if hasattr(value, "ref"):
        part = value
    elif isinstance(value, dict) and "type" in value:
        part = part_from_dict(value)
    elif isinstance(value, str) and value.strip():
        part = load_media(value.strip(), expect=kind, settings=settings)
    else:
        raise ToolError(f"'file' must be a path, a data URL or a media reference, not {type(value).__name__}")
    if part.type != kind:
        raise ToolError(f"'file' is {part.type}, this tool reads {kind}")
    return part


# -- the built-in tools ------------------------------------------------------------------------------


def _file_schema(kind: str, **more: Any) -> dict[str, Any]:
    properties = {"file": {"type": "string",
                           "description": f"The {kind} file: a path, a data URL or an mmagent-media: reference."}}
    required = ["file"]
    for name, (spec, needed) in more.items():
        properties[name] = spec
        if needed:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


def _transcribe(asr, args):
    t = asr.transcribe(args["file"], language=args.get("language"))
    return ToolOutput(t.text, artifact={"language": t.language}, raw=t)


def _read_text(ocr, args):
    result = ocr.read(args["file"])
    lines = [{"text": l.text, "box": list(l.box), "confidence": l.confidence} for l in result.lines]
    return ToolOutput(result.text or "(no text found)", artifact={"lines": lines}, raw=result)


def _caption(captioner, args):
    text = captioner.caption(args["file"], prompt=args.get("prompt"))
    return ToolOutput(text, raw=text)


def _detect(detector, args):
    found = detector.detect(args["file"], labels=args.get("labels") or None)
    detections = [{"label": d.label, "score": round(d.score, 3), "box": [round(v, 1) for v in d.box]}
                  for d in found]
    text = "; ".join(f"{d['label']} ({d['score']:.2f}) at {d['box']}" for d in detections) or "no objects found"
    return ToolOutput(text, artifact={"detections": detections}, raw=found)


def _ask_image(vlm, args):
    from .backends.results import Message
    from .content.parts import TextPart

    result = vlm.chat([Message("user", [args["file"], TextPart(args["question"])])], max_tokens=64)
    return ToolOutput(result.text, raw=result)


def _generate_image(generator, args):
    part = generator.generate(args["prompt"])
    return ToolOutput(f"generated an image ({part.ref.uri})", parts=(part,),
                      artifact={"part": part.to_dict()}, raw=part)


def _speak(tts, args):
    part = tts.synthesize(args["text"])
    return ToolOutput(f"spoke the text as audio ({part.ref.uri})", parts=(part,),
                      artifact={"part": part.to_dict()}, raw=part)


BUILTIN_TOOLS: tuple[Tool, ...] = (
    Tool("transcribe", "Transcribe the speech in an audio file.",
         _file_schema("audio", language=({"type": "string", "description": "ISO language code, if known"}, False)),
         "asr", _transcribe, artifact="transcript", file_kind="audio", intents=("transcribe",), auto=True,
         label="transcript of {file}"),
    Tool("read_text", "Read the printed text in an image (OCR).", _file_schema("image"), "ocr", _read_text,
         artifact="ocr", file_kind="image", intents=("read", "verbatim"), auto=True, label="text read from {file}"),
    Tool("caption_image", "Describe what an image shows.",
         _file_schema("image", prompt=({"type": "string", "description": "what to focus on"}, False)),
         "caption", _caption, artifact="caption", file_kind="image", intents=("describe",), auto=True,
         label="caption of {file}"),
    Tool("detect_objects", "Find objects in an image, with boxes.",
         _file_schema("image", labels=({"type": "array", "items": {"type": "string"},
                                        "description": "object names to look for"}, False)),
         "detect", _detect, artifact="detections", file_kind="image", intents=("detect",),
         label="objects in {file}"),
    Tool("ask_image", "Ask a vision-language model a question about an image.",
         _file_schema("image", question=({"type": "string"}, True)), "vlm", _ask_image,
         artifact="vlm_answer", file_kind="image", label="answer about {file}"),
    Tool("generate_image", "Generate an image from a text description.",
         {"type": "object", "properties": {"prompt": {"type": "string", "description": "what to draw"}},
          "required": ["prompt"]}, "image_gen", _generate_image, artifact="image", produces="image", intents=("image",),
         label="generated image"),
    Tool("speak", "Say a text aloud: returns an audio file of the speech.",
         {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
         "tts", _speak, artifact="speech", produces="audio", intents=("speech",), label="speech"),
)


class ToolRegistry:
    """Tools by name: the built-ins, then what plugins add with `register_tools`."""

    def __init__(self, tools: tuple[Tool, ...] = BUILTIN_TOOLS):
        self.tools: dict[str, Tool] = {}
        self.owners: dict[str, str] = {}
        for tool in tools:
            self.register(tool, "mmagent")

    @classmethod
    def from_plugins(cls, plugins) -> ToolRegistry:
        registry = cls()
        plugins.collect("register_tools", registry.register, lambda tool: f"tool {tool.name}")
        return registry

    def register(self, tool: Tool, owner: str = "runtime") -> None:
        if not isinstance(tool, Tool):
            raise PluginError(f"{tool!r} is not an mmagent.tools.Tool")
        if not tool.name.replace("_", "").isalnum() or not tool.name[0].isalpha():
            raise PluginError(f"tool name '{tool.name}' must be letters, digits and underscores")
        if tool.parameters.get("type") != "object":
            raise PluginError(f"tool '{tool.name}': parameters must be a JSON object schema")
        if tool.file_kind is not None and "file" not in tool.parameters.get("properties", {}):
            raise PluginError(f"tool '{tool.name}' reads {tool.file_kind} but has no 'file' argument")
        if tool.expands and tool.file_kind is None:
            raise PluginError(f"tool '{tool.name}' expands a file into {'/'.join(tool.expands)} but reads none "
                              "(set file_kind)")
        if tool.name in self.tools:
            raise PluginError(f"tool '{tool.name}' is already registered by '{self.owners[tool.name]}'")
        self.tools[tool.name] = tool
        self.owners[tool.name] = owner

    def get(self, name: str) -> Tool:
        try:
            return self.tools[name]
        except KeyError:
            raise ToolError(f"no tool named '{name}' (known: {', '.join(self.tools)})") from None

    def list(self) -> list[Tool]:
        return list(self.tools.values())

    def available(self, toolbox: Toolbox, *, reads: str | None = None) -> list[Tool]:
        """The tools whose backend `toolbox` can run here (optionally only those reading `reads`)."""
        return [t for t in self.tools.values()
                if (t.role is None or toolbox.has(t.role)) and (reads is None or t.file_kind == reads)]


def get_tools() -> ToolRegistry:
    """The process's tools (the runtime's)."""
    from .runtime import get_runtime

    return get_runtime().tools


def call_tool(name: str, arguments: Mapping[str, Any], toolbox: Toolbox | None = None) -> ToolOutput:
    """Run tool `name` once: `call_tool("read_text", {"file": "receipt.png"}).text`."""
    return get_tools().get(name).invoke(arguments, toolbox)


def timed(tool: Tool, arguments: Mapping[str, Any], toolbox: Toolbox) -> tuple[ToolOutput | None, dict]:
    """Run a tool and return (output or None, its step record: tool, backend, seconds, output or
    error). Errors of an optional tool are recorded, not raised."""
    step: dict[str, Any] = {"tool": tool.role or tool.name, "name": tool.name}
    start = time.perf_counter()
    try:
        if tool.role is not None and toolbox.has(tool.role):
            backend = toolbox.get(tool.role)
            step.update(backend=backend.name, model=backend.model_id)
        output = tool.invoke(arguments, toolbox)
    except (ToolError, InputError, BackendError) as exc:
        step.update(seconds=round(time.perf_counter() - start, 4), error=str(exc))
        return None, step
    step["seconds"] = round(time.perf_counter() - start, 4)
    step["output"] = ({"type": output.parts[0].type, "sha256": output.parts[0].ref.sha256} if output.parts
                      else output.text)
    return output, step
