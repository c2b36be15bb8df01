"""Preparing the next chunk while this one is screened: order, overlap, failures."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from alknet_firewall.errors import ScreeningError
from alknet_firewall.firewall import Firewall
from alknet_firewall.pipeline import ahead
from alknet_firewall.schema import Document, Verdict
from alknet_firewall.screening import ScreeningService, prepared_run, screen_isolating
from alknet_firewall.sources import Record
from tests.queue_helpers import FakeScreener, fake_verdict
from tests.tiny import INJECTION, benign_text


def test_ahead_keeps_order_and_prepares_the_next_item_during_this_one() -> None:
    second_prepared = threading.Event()

    def prepare(item: int) -> int:
        if item == 2:
            second_prepared.set()
        return item * 10

    seen = []
    for prepared in ahead([1, 2, 3], prepare):
        if prepared == 10:  # item 2 is prepared while the caller still holds item 1
            assert second_prepared.wait(timeout=10)
        seen.append(prepared)
    assert seen == [10, 20, 30]
    assert list(ahead([], prepare)) == []


def test_ahead_raises_a_failure_where_its_item_would_have_been() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise OSError("input gone")

    got = []
    with pytest.raises(OSError, match="input gone"):
        for prepared in ahead(items(), str):
            got.append(prepared)
    assert got == ["1"]


class PreparingFake(FakeScreener):
    """The fake model with a model-free half that chokes on "BADTOKEN"."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared: list[int] = []

    def prepare(self, texts: Sequence[str]) -> list[str]:
        if any("BADTOKEN" in text for text in texts):
            raise ValueError("the fake tokenizer chokes on BADTOKEN")
        self.prepared.append(len(texts))
        return list(texts)

    def screen_prepared(self, prepared: list[str]) -> list[Verdict]:
        return self.screen_batch(prepared)


def test_a_failed_preparation_is_isolated_like_a_failed_forward_pass() -> None:
    screener = PreparingFake()
    texts = [f"fine {i}" for i in range(8)]
    texts[5] = "a BADTOKEN here"
    run = prepared_run(screener, texts)  # does not raise here
    results = screen_isolating(screener.screen_batch, texts, first=run)
    # the halves go through screen_batch, whose fake does not tokenise: all screened
    assert results == [fake_verdict(text) for text in texts]
    texts[5] = "a POISON pill"
    results = screen_isolating(screener.screen_batch, texts, first=prepared_run(screener, texts))
    assert isinstance(results[5], ScreeningError)
    assert [r for i, r in enumerate(results) if i != 5] == [
        fake_verdict(t) for i, t in enumerate(texts) if i != 5
    ]


def test_rows_ahead_gives_the_rows_of_rows_chunk_by_chunk() -> None:
    screener = PreparingFake()
    service = ScreeningService(screener)
    chunks: list[list[Record]] = [
        [Document(id=f"{c}-{i}", text=f"text {c} {i}") for i in range(3)] for c in range(4)
    ]
    chunks[2][1] = Document(id="bad", text="a POISON pill")
    streamed = list(service.rows_ahead(chunks))
    assert streamed == [service.rows(chunk) for chunk in chunks]
    assert [row["decision"] == "error" for row in streamed[2]] == [False, True, False]
    assert screener.prepared[:4] == [3, 3, 3, 3]  # every chunk went through prepare


def test_the_firewall_prepared_ahead_gives_the_verdicts_of_screen_batch(
    tiny_firewall: Firewall,
) -> None:
    rng = random.Random(5)
    texts = [benign_text(rng, 3 + i) for i in range(6)] + [INJECTION, "", "x" * 3]
    assert tiny_firewall.screen_prepared(tiny_firewall.prepare(texts)) == (
        tiny_firewall.screen_batch(texts)
    )
    service = ScreeningService(tiny_firewall)
    records = [Document(id=str(i), text=text) for i, text in enumerate(texts) if text]
    chunks = [records[:3], records[3:5], records[5:]]
    assert list(service.rows_ahead(chunks)) == [service.rows(chunk) for chunk in chunks]


def test_the_firewall_prepares_from_several_threads_at_once(tiny_firewall: Firewall) -> None:
    rng = random.Random(6)
    texts = [benign_text(rng, 40) for _ in range(20)]
    expected = tiny_firewall.prepare(texts).windows.tokenized
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: tiny_firewall.prepare(texts), range(16)))
    assert all(result.windows.tokenized == expected for result in results)
