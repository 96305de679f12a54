"""mmagent.batching: the Batcher's bounds (size, wait) and its failure rule, the ASR proxy."""

from __future__ import annotations

import threading
import time

import pytest

from mmagent.backends import SpeechToText, Transcript
from mmagent.batching import BatchedASR, Batcher, batching_toolbox
from mmagent.errors import InputError
from mmagent.testing import ScriptedASR, ScriptedLLM, scripted_toolbox


def submit_all(batcher: Batcher, payloads, key=()):
    results: dict = {}

    def one(p):
        try:
            results[p] = batcher.submit(p, key)
        except Exception as exc:  # noqa: BLE001 - the test reads it
            results[p] = exc

    threads = [threading.Thread(target=one, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
        time.sleep(0.005)
    for t in threads:
        t.join(10)
    return results


def test_a_full_batch_runs_at_once_and_is_never_larger_than_its_size():
    sizes = []

    def run(payloads, key):
        sizes.append(len(payloads))
        time.sleep(0.05)
        return [p * 2 for p in payloads]

    batcher = Batcher(run, size=4, in_flight=lambda: 10, linger=5.0)
    results = submit_all(batcher, range(8))
    assert results == {p: p * 2 for p in range(8)}
    assert max(sizes) <= 4 and sum(sizes) == 8


def test_max_wait_bounds_how_long_a_call_waits_for_company():
    batcher = Batcher(lambda payloads, key: payloads, size=8, in_flight=lambda: 8, linger=10.0, max_wait=0.1)
    start = time.monotonic()
    assert batcher.submit("alone") == "alone"  # 8 in flight, but nobody else comes
    assert time.monotonic() - start < 2.0
    assert batcher.batches == [1]


def test_one_bad_item_fails_only_its_own_call():
    def run(payloads, key):
        if "bad" in payloads:
            raise InputError("bad input")
        return [p.upper() for p in payloads]

    batcher = Batcher(run, size=4, in_flight=lambda: 4, linger=1.0)
    results = submit_all(batcher, ["a", "bad", "c", "d"])
    assert isinstance(results["bad"], InputError)
    assert {k: v for k, v in results.items() if k != "bad"} == {"a": "A", "c": "C", "d": "D"}
    assert batcher.batches == [1, 1, 1, 1]  # the batch of 4 failed; each ran again alone


class BatchASR(ScriptedASR):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.sizes: list[int] = []

    def batch(self, audios, *, language=None):
        self.sizes.append(len(audios))
        time.sleep(0.05)
        return [Transcript(f"clip {a}", language) for a in audios]


def test_asr_calls_are_batched_by_language_behind_the_contract():
    asr = BatchASR(model="tiny-asr")
    toolbox, batchers = batching_toolbox(scripted_toolbox(asr=asr, llm=ScriptedLLM()), 4, in_flight=lambda: 4,
                                         linger=0.5)
    proxy = toolbox.get("asr")
    assert isinstance(proxy, BatchedASR) and isinstance(proxy, SpeechToText) and proxy.model_id == "tiny-asr"
    assert "llm" not in batchers  # ScriptedLLM has no batch
    results: dict = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, proxy.transcribe(i, language="en")))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert {i: r.text for i, r in results.items()} == {i: f"clip {i}" for i in range(4)}
    assert asr.sizes == [4] and results[0].language == "en"


def test_asr_backends_without_batch_are_left_alone():
    toolbox, batchers = batching_toolbox(scripted_toolbox(asr=ScriptedASR()), 4)
    assert batchers == {} and not isinstance(toolbox.get("asr"), BatchedASR)


@pytest.mark.parametrize("size", [1, 0])
def test_size_one_means_no_batching(size):
    toolbox, batchers = batching_toolbox(scripted_toolbox(asr=BatchASR()), size)
    assert batchers == {}


def test_streamed_chat_calls_go_to_the_backend_unbatched():
    """A client streaming tokens wants them early: the proxy streams from the backend itself."""

    class StreamingBatchLLM(ScriptedLLM):
        def batch(self, requests, **kw):
            raise AssertionError("a streamed call must not be batched")

    from mmagent.backends import Message

    toolbox, batchers = batching_toolbox(scripted_toolbox(llm=StreamingBatchLLM("one two three")), 4)
    proxy = toolbox.get("llm")
    assert "llm" in batchers and proxy is not None
    pieces = list(proxy.stream([Message("user", "hi")]))
    assert pieces == ["one ", "two ", "three"] and batchers["llm"].batches == []
