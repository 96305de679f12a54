"""The transformers VLM backend on tiny random models of each claimed architecture, built from configs
with offline tokenizers and saved to local folders. No real VLM weights exist offline: these test the
plumbing (templates, image placeholders, several images, batching, streaming, dtypes, errors)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from mmagent.backends import BackendRegistry, Message, get_backend  # noqa: E402
from mmagent.content import AudioPart, MediaRef, TextPart, load_media  # noqa: E402
from mmagent.errors import BackendError, InputError  # noqa: E402
from mmagent.plugins import vlm  # noqa: E402

WORDS = "a an the cat dog on of in red blue green photo picture image what is this describe compare square".split()
QUESTION = "What is this?"
MAX_TOKENS = 6

# PaliGemma's processor turns its own tensors into numpy arrays the numpy-2-deprecated way.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(autouse=True)
def vlm_plugin():
    """The plugin registered like a built-in (until it is listed in BUILTIN_PLUGINS)."""
    from mmagent.runtime import get_runtime
    from mmagent.plugin_manager import get_plugins

    plugins = get_plugins()
    if "vlm" not in plugins.infos:
        plugins.add(vlm, "vlm", source="builtin")
    get_runtime().refresh()


def scene(colour=(220, 30, 30)):
    """A 48x40 RGB picture: a coloured square and a blue disc on grey."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (48, 40), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    draw.rectangle((4, 4, 20, 20), fill=colour)
    draw.ellipse((26, 14, 44, 34), fill=(30, 30, 220))
    return img


def stored(img):
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return load_media(buffer.getvalue(), expect="image")


@pytest.fixture
def photos(home):
    """Two different stored pictures."""
    return stored(scene()), stored(scene((30, 200, 30)))


# -- tiny models: random weights from configs, an offline BPE tokenizer, a processor --------------


def tokenizer(specials, **roles):
    """A byte-level BPE trained on a few sentences; `specials` first (as added special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(WORDS), "a photo of a cat sitting on the table", QUESTION], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, **roles)


def template(turn: str, end: str, image: str, generation: str, bos: str = "") -> str:
    """A chat template in the shape of the real model's: `turn` opens each message ("{role}",
    "{Role}" or "{ROLE}"), `image` stands for each image part, `generation` opens the answer."""
    opener = (turn.replace("{role}", "' + message['role'] + '").replace("{ROLE}", "' + message['role'].upper() + '")
              .replace("{Role}", "' + message['role'] | capitalize + '"))
    return (bos + "{% for message in messages %}{{ '" + opener + "' }}{% for part in message['content'] %}"
            "{% if part['type'] == 'image' %}{{ '" + image + "' }}{% elif part['type'] == 'text' %}"
            "{{ part['text'] }}{% endif %}{% endfor %}{{ '" + end + "' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '" + generation + "' }}{% endif %}")


TINY = dict(hidden_size=32, intermediate_size=37, num_attention_heads=2)
CLIP = dict(TINY, num_hidden_layers=1, image_size=32, patch_size=8)


def llama(tok, **extra):
    return dict(TINY, model_type="llama", vocab_size=len(tok), num_hidden_layers=1, num_key_value_heads=1,
                max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, **extra)


LLAMA_SPECIALS = dict(specials=["<unk>", "<s>", "</s>", "<pad>", "<image>"], bos_token="<s>", eos_token="</s>",
                      pad_token="<pad>", unk_token="<unk>")


def build_llava():
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = tokenizer(**LLAMA_SPECIALS)
    config = LlavaConfig(vision_config=dict(CLIP, model_type="clip_vision_model"), text_config=llama(tok),
                         image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                         vision_feature_select_strategy="default")
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=8, num_additional_image_tokens=1,
                               vision_feature_select_strategy="default",
                               chat_template=template("{ROLE}: ", "\n", "<image>\n", "ASSISTANT:"))
    return LlavaForConditionalGeneration(config), processor


def build_llava_next():
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    tok = tokenizer(**LLAMA_SPECIALS)
    grid = [[32, 32], [32, 64], [64, 32]]
    config = LlavaNextConfig(vision_config=dict(CLIP, model_type="clip_vision_model"), text_config=llama(tok),
                             image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                             vision_feature_select_strategy="default", image_grid_pinpoints=grid)
    images = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                        image_grid_pinpoints=grid)
    processor = LlavaNextProcessor(image_processor=images, tokenizer=tok, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=template("[INST] ", " [/INST]", "<image>\n", ""))
    return LlavaNextForConditionalGeneration(config), processor


def build_blip2():
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessorPil

    tok = tokenizer(["<pad>", "</s>", "<unk>", "<image>"], bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                    unk_token="<unk>")
    opt = dict(model_type="opt", vocab_size=len(tok), hidden_size=32, ffn_dim=37, num_hidden_layers=1,
               num_attention_heads=2, max_position_embeddings=128, word_embed_proj_dim=32,
               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = Blip2Config(vision_config=CLIP, text_config=opt, num_query_tokens=4,
                         qformer_config=dict(TINY, num_hidden_layers=1, encoder_hidden_size=32, vocab_size=len(tok)),
                         image_token_index=tok.convert_tokens_to_ids("<image>"))
    processor = Blip2Processor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok,
                               num_query_tokens=4)
    return Blip2ForConditionalGeneration(config), processor


def build_idefics3():
    """SmolVLM's architecture; images split into 32-pixel tiles plus a global view."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tiles = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = tokenizer(["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>",
                     "<global-img>", *tiles], bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                    pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    config = Idefics3Config(vision_config=CLIP, text_config=llama(tok), scale_factor=2,
                            image_token_id=tok.convert_tokens_to_ids("<image>"))
    images = Idefics3ImageProcessorPil(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    processor = Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=4, chat_template=template(
        "<|im_start|>{Role}:", "<end_of_utterance>\n", "<image>", "Assistant:"))
    return Idefics3ForConditionalGeneration(config), processor


def qwen_parts():
    from transformers import Qwen2VLImageProcessorPil

    tok = tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                     "<|image_pad|>", "<|video_pad|>"], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {key: tok.convert_tokens_to_ids(token) for key, token in dict(
        image_token_id="<|image_pad|>", video_token_id="<|video_pad|>", vision_start_token_id="<|vision_start|>",
        vision_end_token_id="<|vision_end|>").items()}
    text = dict(TINY, vocab_size=len(tok), num_hidden_layers=1, num_key_value_heads=1, max_position_embeddings=512,
                rope_parameters=dict(rope_type="default", mrope_section=[2, 3, 3], rope_theta=10000.0),
                bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    images = Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16,
                                      max_pixels=32 * 32)
    chat = template("<|im_start|>{role}\n", "<|im_end|>\n", "<|vision_start|><|image_pad|><|vision_end|>",
                    "<|im_start|>assistant\n")
    return tok, ids, text, images, chat


def build_qwen2_vl():
    """The processor is built without its video processor (which needs torchvision), as the plugin loads it."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tok, ids, text, images, chat = qwen_parts()
    config = Qwen2VLConfig(text_config=text, vision_config=dict(
        depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=1, patch_size=8, spatial_merge_size=2,
        temporal_patch_size=2), **ids)
    processor = vlm._without_video(Qwen2VLProcessor)(image_processor=images, tokenizer=tok, chat_template=chat)
    return Qwen2VLForConditionalGeneration(config), processor


def build_qwen2_5_vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok, ids, text, images, chat = qwen_parts()
    config = Qwen2_5_VLConfig(text_config=text, vision_config=dict(
        depth=2, hidden_size=32, intermediate_size=37, num_heads=2, out_hidden_size=32, patch_size=8,
        spatial_merge_size=2, temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1]), **ids)
    processor = vlm._without_video(Qwen2_5_VLProcessor)(image_processor=images, tokenizer=tok, chat_template=chat)
    return Qwen2_5_VLForConditionalGeneration(config), processor


def build_mllama():
    import torch
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessorPil, MllamaProcessor

    tok = tokenizer(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
                     "<|end_header_id|>", "<|finetune_right_pad_id|>", "<|image|>", "<|python_tag|>"],
                    bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|finetune_right_pad_id|>")
    config = MllamaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_global_layers=1,
                           attention_heads=2, image_size=32, patch_size=8, max_num_tiles=2,
                           intermediate_layers_indices=[0], vision_output_dim=64,
                           supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]]),
        text_config=dict(TINY, vocab_size=len(tok), num_hidden_layers=2, num_key_value_heads=1,
                         cross_attention_layers=[1], max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    processor = MllamaProcessor(image_processor=MllamaImageProcessorPil(size={"height": 32, "width": 32},
                                                                       max_image_tiles=2), tokenizer=tok,
                                chat_template=template("<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>",
                                                       "<|image|>", "<|start_header_id|>assistant<|end_header_id|>\n\n",
                                                       bos="<|begin_of_text|>"))
    model = MllamaForConditionalGeneration(config)
    with torch.no_grad():  # the cross-attention gates start closed (tanh 0): open them so images count
        for name, param in model.named_parameters():
            if "cross_attn_attn_gate" in name or "cross_attn_mlp_gate" in name:
                param.fill_(1.0)
    return model, processor


def build_paligemma():
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
    )

    tok = tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], bos_token="<bos>", eos_token="<eos>",
                    pad_token="<pad>", unk_token="<unk>")
    images = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    images.image_seq_length = 16  # (32 / 8) ** 2 patches
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tok)  # adds the <loc>/<seg> tokens
    tok = processor.tokenizer
    gemma = dict(TINY, model_type="gemma", vocab_size=len(tok), num_hidden_layers=1, num_key_value_heads=1,
                 head_dim=16, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = PaliGemmaConfig(vision_config=dict(CLIP, model_type="siglip_vision_model"), text_config=gemma,
                             image_token_index=tok.convert_tokens_to_ids("<image>"), projection_dim=32,
                             vocab_size=len(tok), tie_word_embeddings=False)
    return PaliGemmaForConditionalGeneration(config), processor


ARCHITECTURES = {
    "llava": build_llava, "llava_next": build_llava_next, "blip-2": build_blip2, "idefics3": build_idefics3,
    "qwen2_vl": build_qwen2_vl, "qwen2_5_vl": build_qwen2_5_vl, "mllama": build_mllama,
    "paligemma": build_paligemma,
}


def no_special_answers(model, processor) -> None:
    """Zero logits for special (end, image, padding ...) and blank tokens: random weights then answer
    in visible text that does not stop at once."""
    import torch

    tok = processor.tokenizer
    quiet = set(tok.added_tokens_decoder) | {i for i in range(len(tok)) if not tok.decode([i]).strip()}
    with torch.no_grad():
        model.get_output_embeddings().weight[sorted(quiet)] = 0.0


def reference_inputs(processor, kind: str, images: list, question: str) -> dict:
    """The model inputs for one user turn (images first), built the way the model cards show."""
    if processor.chat_template:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
        prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    elif kind == "blip-2":
        prompt = f"Question: {question} Answer:"
    else:  # paligemma
        prompt = "<image>" * len(images) + question
    bos = processor.tokenizer.bos_token
    inputs = processor(text=[prompt], images=images if kind == "blip-2" else [images], return_tensors="pt",
                       add_special_tokens=not (bos and prompt.startswith(bos)))
    inputs.pop("labels", None)
    return dict(inputs)


def reference_answer(model, processor, kind: str, images: list, question: str) -> str:
    """What the in-memory model answers (greedy, MAX_TOKENS)."""
    import torch

    inputs = reference_inputs(processor, kind, images, question)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def tiny_vlm(request, tmp_path_factory) -> tuple[Path, str, str]:
    """(folder, model type, the in-memory model's answer to QUESTION about `scene()`)."""
    import torch

    torch.manual_seed(0)
    model, processor = ARCHITECTURES[request.param]()
    model.eval()
    no_special_answers(model, processor)
    expected = reference_answer(model, processor, request.param, [scene()], QUESTION)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, request.param, expected


def backend(folder: Path, dtype: str = "float32"):
    return get_backend("vlm", "transformers", model=str(folder), device="cpu", dtype=dtype)


def ask(*parts, text: str = QUESTION) -> list[Message]:
    return [Message("user", [*parts, TextPart(text)])]


# -- registration and import cost ------------------------------------------------------------------


def test_plugin_imports_without_heavy_libraries():
    code = ("import sys, mmagent.plugins.vlm; "
            "print(sorted(m for m in ('torch', 'transformers', 'PIL', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_register_backends_adds_the_transformers_vlm():
    registry = BackendRegistry()
    vlm.register_backends(lambda cls: registry.register(cls, plugin="vlm"))
    assert [(e.role, e.name) for e in registry.list()] == [("vlm", "transformers")]
    assert get_backend("vlm", "transformers").model_id == "scene-vlm"  # the zoo's offline default


def test_missing_model_folder_is_a_backend_error_naming_it(tmp_path, photos):
    with pytest.raises(BackendError, match="no-such-model"):
        backend(tmp_path / "no-such-model").chat(ask(photos[0]))


# -- every architecture ----------------------------------------------------------------------------


def test_saved_model_answers_like_the_model_in_memory(tiny_vlm, photos):
    folder, kind, expected = tiny_vlm
    vlm_backend = backend(folder)
    result = vlm_backend.chat(ask(photos[0]), max_tokens=MAX_TOKENS)
    assert result.text == expected and expected
    assert vlm_backend.model.kind == kind
    assert 1 <= result.usage["completion_tokens"] <= MAX_TOKENS and result.usage["prompt_tokens"] > 0
    assert vlm_backend.chat(ask(photos[0]), max_tokens=MAX_TOKENS) == result  # greedy


def test_images_reach_the_model_in_order(tiny_vlm, photos, monkeypatch):
    """`generate` gets exactly the inputs the model card's recipe builds for these images, in order."""
    import torch

    folder, kind, _ = tiny_vlm
    vlm_backend = backend(folder)
    loaded = vlm_backend.model
    seen: list[dict] = []
    real = loaded.model.generate
    monkeypatch.setattr(loaded.model, "generate", lambda **kw: seen.append(kw) or real(**kw))
    order = [1] if vlm.ARCHS.get(kind, vlm.GENERIC).max_images == 1 else [1, 0]
    vlm_backend.chat(ask(*(photos[i] for i in order)), max_tokens=1)
    expected = reference_inputs(loaded.processor, kind, [scene((30, 200, 30)), scene()][:len(order)], QUESTION)
    assert expected.keys() <= seen[0].keys()
    for key, value in expected.items():
        assert torch.equal(seen[0][key], value), key


def test_several_images_in_one_request(tiny_vlm, photos):
    folder, kind, _ = tiny_vlm
    vlm_backend = backend(folder)
    messages = [Message("user", [photos[0], TextPart("and"), photos[1], TextPart("compare")])]
    if vlm.ARCHS.get(kind, vlm.GENERIC).max_images == 1:
        with pytest.raises(InputError, match="at most 1 image"):
            vlm_backend.chat(messages)
        return
    result = vlm_backend.chat(messages, max_tokens=3)
    assert isinstance(result.text, str) and 1 <= result.usage["completion_tokens"] <= 3


def test_batch_answers_as_each_request_alone(tiny_vlm, photos):
    """Left padding: each answer of a batch (different lengths, images or none) is the lone answer."""
    folder, kind, _ = tiny_vlm
    vlm_backend = backend(folder)
    requests = [ask(photos[0]), ask(photos[1], text="describe the red square and the blue disc")]
    if not vlm.ARCHS.get(kind, vlm.GENERIC).needs_image:
        requests.append([Message("system", "Be brief."), Message("user", "what is a cat")])
    answers = vlm_backend.batch(requests, max_tokens=4)
    assert answers == [vlm_backend.chat(r, max_tokens=4).text for r in requests]
    assert vlm_backend.batch([]) == []


def test_stream_pieces_join_to_the_chat_answer(tiny_vlm, photos):
    folder, _, expected = tiny_vlm
    pieces = list(backend(folder).stream(ask(photos[0]), max_tokens=MAX_TOKENS))
    assert pieces and "".join(pieces).strip() == expected


def test_text_only_or_a_clear_error_for_models_that_need_an_image(tiny_vlm):
    folder, kind, _ = tiny_vlm
    messages = [Message("system", "Answer briefly."), Message("user", "what is a cat")]
    if vlm.ARCHS.get(kind, vlm.GENERIC).needs_image:
        with pytest.raises(InputError, match=f"{kind} models need an image"):
            backend(folder).chat(messages)
    else:
        result = backend(folder).chat(messages, max_tokens=3)
        assert isinstance(result.text, str) and result.usage["completion_tokens"] <= 3


# -- options and errors (one architecture each) -----------------------------------------------------


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(1)
    model, processor = build_llava()
    no_special_answers(model, processor)
    folder = tmp_path_factory.mktemp("llava-options")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_bfloat16_llava_is_greedy_and_bounded(llava_dir, photos):
    import torch

    vlm_backend = backend(llava_dir, dtype="bfloat16")
    result = vlm_backend.chat(ask(*photos), max_tokens=5)
    assert isinstance(result.text, str) and result.usage["completion_tokens"] <= 5
    assert result.finish_reason == "length"  # the end token cannot win
    assert vlm_backend.chat(ask(*photos), max_tokens=5) == result
    assert vlm_backend.model.model.dtype == torch.bfloat16
    assert vlm_backend.batch([ask(photos[0]), ask(photos[1])], max_tokens=3) == [
        vlm_backend.chat(ask(p), max_tokens=3).text for p in photos]


def test_stop_strings_cut_the_answer(llava_dir, photos):
    vlm_backend = backend(llava_dir)
    full = vlm_backend.chat(ask(photos[0]), max_tokens=8).text
    stop = full[len(full) // 2:][:2]
    assert stop.strip() and stop in full
    cut = vlm_backend.chat(ask(photos[0]), max_tokens=8, stop=[stop])
    assert cut.text == full[:full.index(stop)].strip() and cut.finish_reason == "stop"
    assert "".join(vlm_backend.stream(ask(photos[0]), max_tokens=8, stop=[stop])).strip() == cut.text
    assert vlm_backend.batch([ask(photos[0])], max_tokens=8, stop=[stop]) == [cut.text]


def test_string_content_and_assistant_turns_use_the_template(llava_dir, photos):
    vlm_backend = backend(llava_dir)
    messages = [Message("user", [photos[0], TextPart("What is this?")]), Message("assistant", "a square"),
                Message("user", "what colour is it")]
    prompt, images = vlm_backend._prompt(vlm_backend.model, messages)
    assert prompt == "USER: <image>\nWhat is this?\nASSISTANT: a square\nUSER: what colour is it\nASSISTANT:"
    assert [img.size for img in images] == [(48, 40)] and images[0].mode == "RGB"
    assert isinstance(vlm_backend.chat(messages, max_tokens=2).text, str)


def test_audio_parts_and_bad_max_tokens_are_input_errors(llava_dir, photos):
    vlm_backend = backend(llava_dir)
    audio = AudioPart(ref=MediaRef("0" * 64, "audio/wav", 1))
    with pytest.raises(InputError, match="not audio"):
        vlm_backend.chat([Message("user", [photos[0], audio])])
    with pytest.raises(InputError, match="no messages"):
        vlm_backend.chat([])
    with pytest.raises(InputError, match="max_tokens"):
        vlm_backend.chat(ask(photos[0]), max_tokens=0)
