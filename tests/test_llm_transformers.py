"""The transformers chat backend: real SmolLM2 weights from the zoo, and a tiny random Llama."""

from __future__ import annotations


import pytest

pytest.importorskip("transformers")

from mmagent.backends import Message, get_backend  # noqa: E402
from mmagent.errors import BackendError, InputError  # noqa: E402

RECEIPT = "CORNER CAFE\nCoffee 3.50\nBagel 2.25\nOrange juice 4.00\nTOTAL 9.75"


@pytest.mark.slow
def test_smollm2_answers_from_context_deterministically(smollm2):
    messages = [
        Message("system", "Answer the question using the receipt."),
        Message("user", f"Receipt:\n{RECEIPT}\n\nQuestion: What is the total on the receipt?"),
    ]
    first = smollm2.chat(messages, max_tokens=24)
    assert "9.75" in first.text
    assert smollm2.chat(messages, max_tokens=24).text == first.text  # greedy by default


@pytest.mark.slow
def test_streaming_yields_the_same_text_piece_by_piece(smollm2):
    messages = [Message("user", "Name three colours.")]
    pieces = list(smollm2.stream(messages, max_tokens=20))
    assert len(pieces) > 3 and all(pieces)
    assert "".join(pieces).strip() == smollm2.chat(messages, max_tokens=20).text


@pytest.mark.slow
def test_stop_strings_cut_the_answer(smollm2):
    text = smollm2.chat([Message("user", "Count from 1 to 10, one number per line.")], max_tokens=40,
                        stop=["4"]).text
    assert "3" in text and "4" not in text and "5" not in text


def test_text_llm_refuses_media_parts_clearly(tmp_path):
    from mmagent.content import ImagePart, MediaRef

    llm = get_backend("llm", "transformers", model=str(tmp_path))
    image = ImagePart(ref=MediaRef("0" * 64, "image/png", 1), width=1, height=1)
    with pytest.raises(InputError, match="reads text only"):
        llm._encode(None, [Message("user", [image])])


def test_missing_model_is_a_backend_error(tmp_path):
    llm = get_backend("llm", "transformers", model=str(tmp_path / "nope"), device="cpu")
    with pytest.raises(BackendError, match="model folder .*nope' does not exist"):
        llm.chat([Message("user", "hi")])


@pytest.mark.parametrize("dtype, torch_dtype", [("float32", "float32"), ("bfloat16", "bfloat16")])
def test_tiny_random_llama_loads_from_a_path_and_generates(tiny_llama, dtype, torch_dtype):
    import torch

    llm = get_backend("llm", "transformers", model=str(tiny_llama), device="cpu", dtype=dtype)
    result = llm.chat([Message("user", "hello")], max_tokens=5)
    assert isinstance(result.text, str)
    tokenizer, model, device = llm.model
    assert device == "cpu" and model.dtype == getattr(torch, torch_dtype)
    assert model.config.num_hidden_layers == 2
    assert len(tokenizer(result.text)["input_ids"]) <= 6  # generation honoured max_tokens
