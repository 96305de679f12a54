"""`TransformersChat.batch`: several plain conversations in one left-padded `generate`, with the
answers `chat` gives one at a time (a tiny random Llama, and the real SmolLM2 weights)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from mmagent.backends import Message, get_backend  # noqa: E402
from mmagent.errors import InputError  # noqa: E402

#: Three conversations whose prompts have different lengths (so the batch pads on the left).
CONVERSATIONS = [
    [Message("user", "hi")],
    [Message("system", "Answer from the observations."),
     Message("user", "Observations:\n[caption] a red ball on a wooden table\n[ocr] SALE 50%\n\n"
                     "Question: What colour is the ball?")],
    [Message("user", "Name a colour."), Message("assistant", "Blue."), Message("user", "Another one, please.")],
]


@pytest.fixture
def tiny(tiny_llama):
    return get_backend("llm", "transformers", model=str(tiny_llama), device="cpu", dtype="float32")


def prompt_lengths(llm, conversations) -> list[int]:
    tokenizer = llm.model[0]
    return [llm._encode(tokenizer, c)["input_ids"].shape[1] for c in conversations]


def test_batch_answers_equal_single_chats(tiny):
    assert len(set(prompt_lengths(tiny, CONVERSATIONS))) == 3  # the batch really is padded
    tokenizer = tiny.model[0]
    before = (tokenizer.pad_token, tokenizer.padding_side)
    single = [tiny.chat(c, max_tokens=12).text for c in CONVERSATIONS]
    assert all(single)
    assert tiny.batch(CONVERSATIONS, max_tokens=12) == single
    assert (tokenizer.pad_token, tokenizer.padding_side) == before  # the shared tokenizer is untouched
    assert [tiny.chat(c, max_tokens=12).text for c in CONVERSATIONS] == single


def test_batch_applies_stop_strings_per_answer(tiny):
    full = tiny.batch(CONVERSATIONS, max_tokens=16)
    # A stop string from the middle of the second answer: that answer is cut there, the others may not be.
    words = full[1].split()
    stop = words[len(words) // 2]
    assert stop and full[1].index(stop) > 0
    cut = tiny.batch(CONVERSATIONS, max_tokens=16, stop=[stop])
    assert cut == [tiny.chat(c, max_tokens=16, stop=[stop]).text for c in CONVERSATIONS]
    assert cut[1] == full[1][: full[1].index(stop)].strip()
    for before, after in zip(full, cut):
        assert stop not in after and before.startswith(after)


def test_empty_batch_loads_nothing(tmp_path):
    llm = get_backend("llm", "transformers", model=str(tmp_path / "never-loaded"), device="cpu")
    assert llm.batch([]) == []


def test_batch_wants_a_list_of_conversations(tiny):
    with pytest.raises(InputError, match="list of conversations"):
        tiny.batch([Message("user", "hi")])
    with pytest.raises(InputError, match="list of conversations"):
        tiny.batch(["hi"])


@pytest.mark.slow
def test_smollm2_batch_equals_single_answers(smollm2):
    system = Message("system", "Answer the question using the observations. Be brief.")
    questions = [
        ("[caption] a red ball next to a blue cube on a table", "What colour is the ball?"),
        ("[ocr] CORNER CAFE\nCoffee 3.50\nBagel 2.25\nTOTAL 5.75", "What is the total?"),
        ("[transcript] Meet me at the station at five.", "Where is the meeting?"),
        ("[caption] three dogs running on a beach at sunset, waves in the background", "How many dogs are there?"),
    ]
    conversations = [[system, Message("user", f"Observations:\n{obs}\n\nQuestion: {q}")] for obs, q in questions]
    single = [smollm2.chat(c, max_tokens=32).text for c in conversations]
    assert smollm2.batch(conversations, max_tokens=32) == single
    assert "5.75" in single[1]
