"""The micro-batcher on its own: no Redis, no Celery, a fake model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from alknet_firewall.errors import ScreeningError
from alknet_firewall.schema import Verdict
from alknet_firewall_worker.batching import BatchStats, MicroBatcher
from tests.queue_helpers import FakeScreener, eager_batcher, fake_verdict


def make_batcher(
    screen: FakeScreener,
    *,
    budget: int = 1000,
    max_parcels: int = 100,
    max_wait_s: float = 0.2,
    time_limit_s: float = 30.0,
    on_overrun: Callable[[float], None] = lambda _seconds: None,
) -> tuple[MicroBatcher, list[BatchStats]]:
    stats: list[BatchStats] = []
    batcher = eager_batcher(
        screen.screen_batch,
        token_budget=budget,
        max_parcels=max_parcels,
        max_wait_s=max_wait_s,
        time_limit_s=time_limit_s,
        on_batch=stats.append,
        on_overrun=on_overrun,
    )
    return batcher, stats


def chars(tokens: int) -> str:
    """A text the batcher counts as `tokens` tokens (four characters each)."""
    return "abcd" * tokens


def test_a_lone_message_comes_back_within_the_max_wait() -> None:
    batcher, stats = make_batcher(FakeScreener(), max_wait_s=0.2)
    started = time.monotonic()
    verdicts = batcher.submit(["hello there", "and again"]).result(timeout=5)
    elapsed = time.monotonic() - started
    batcher.close()
    assert verdicts == [fake_verdict("hello there"), fake_verdict("and again")]
    assert 0.15 <= elapsed < 1.0
    assert [s.size for s in stats] == [2]


def test_messages_arriving_together_share_a_forward_pass() -> None:
    screener = FakeScreener()
    batcher, _ = make_batcher(screener, max_wait_s=0.3)
    futures = [batcher.submit([f"text number {i}", f"more {i}"]) for i in range(10)]
    results = [f.result(timeout=5) for f in futures]
    batcher.close()
    assert results == [
        [fake_verdict(f"text number {i}"), fake_verdict(f"more {i}")] for i in range(10)
    ]
    assert screener.batches == [20]


def test_the_token_budget_cuts_batches_between_messages_never_inside_one() -> None:
    screener = FakeScreener()
    batcher, stats = make_batcher(screener, budget=10, max_wait_s=0.3)
    futures = [batcher.submit([chars(2), chars(2)]) for _ in range(5)]  # 4 tokens each
    for f in futures:
        f.result(timeout=5)
    big = batcher.submit([chars(8), chars(8)])  # 16 tokens: over the budget, alone
    assert len(big.result(timeout=5)) == 2
    batcher.close()
    assert screener.batches == [4, 4, 2, 2]
    assert all(s.tokens <= 10 for s in stats[:3])


def test_a_batch_closes_without_waiting_once_every_thread_is_in_it() -> None:
    screener = FakeScreener()
    batcher, _ = make_batcher(screener, max_parcels=4, max_wait_s=5.0)
    started = time.monotonic()
    futures = [batcher.submit([f"doc {i}"]) for i in range(4)]
    for f in futures:
        f.result(timeout=5)
    batcher.close()
    assert screener.batches == [4]
    assert time.monotonic() - started < 1.0


def test_a_failing_document_does_not_fail_its_batch() -> None:
    screener = FakeScreener()
    batcher, stats = make_batcher(screener, max_wait_s=0.3)
    first = batcher.submit(["fine one", "a POISON pill"])
    second = batcher.submit(["fine two"])
    fine_one, poisoned = first.result(timeout=5)
    assert fine_one == fake_verdict("fine one")
    assert second.result(timeout=5) == [fake_verdict("fine two")]
    assert isinstance(poisoned, ScreeningError)
    assert "model error: RuntimeError: the fake model chokes" in str(poisoned)
    batcher.close()
    assert screener.batches == [3, 1, 2, 1, 1]  # the batch, then halves down to the culprit
    assert [s.ok for s in stats] == [False, True, False, False, True]


def test_a_solo_message_never_shares_a_batch() -> None:
    screener = FakeScreener()
    batcher, _ = make_batcher(screener, max_wait_s=0.3)
    futures = [
        batcher.submit(["a"]),
        batcher.submit(["suspect", "and its mate"], solo=True),
        batcher.submit(["b"]),
    ]
    for f in futures:
        f.result(timeout=5)
    batcher.close()
    assert screener.batches == [1, 2, 1]


def test_a_wrong_number_of_verdicts_is_a_model_error() -> None:
    class Short(FakeScreener):
        def screen_batch(self, texts: Sequence[str]) -> list[Verdict]:
            return super().screen_batch(texts)[:1]

    batcher, _ = make_batcher(Short(), max_wait_s=0.3)
    verdicts = batcher.submit(["one", "two"]).result(timeout=5)
    assert verdicts == [fake_verdict("one"), fake_verdict("two")]  # isolated: one each
    batcher.close()


def test_the_watchdog_reports_a_forward_pass_over_the_time_limit() -> None:
    overrun = threading.Event()
    batcher, _ = make_batcher(
        FakeScreener(delay_s=1.0),
        max_wait_s=0.0,
        time_limit_s=0.3,
        on_overrun=lambda seconds: overrun.set(),
    )
    batcher.submit(["slow"])
    assert overrun.wait(timeout=3)
    batcher.close()


class Preparing:
    """A fake model in two halves: `prepare` records what it prepared and can be made to
    wait; the pass it returns records the batch and can be made to wait too."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.release_first_pass = threading.Event()
        self.second_prepared = threading.Event()

    def prepare(self, texts: Sequence[str]) -> Callable[[], list[Verdict]]:
        self.events.append(f"prepare {len(texts)}")
        if texts[0].startswith("second"):
            self.second_prepared.set()

        def run() -> list[Verdict]:
            self.events.append(f"pass {len(texts)}")
            if texts[0] == "first":
                assert self.release_first_pass.wait(timeout=10)
            return [fake_verdict(t) for t in texts]

        return run

    def screen_batch(self, texts: Sequence[str]) -> list[Verdict]:
        self.events.append(f"unprepared {len(texts)}")
        return [fake_verdict(t) for t in texts]


def test_the_next_batch_is_prepared_while_this_one_is_screened() -> None:
    model = Preparing()
    batcher = eager_batcher(model.screen_batch, prepare=model.prepare)
    try:
        first = batcher.submit(["first"])
        while "pass 1" not in model.events:  # the first pass has begun, and waits
            time.sleep(0.01)
        # a batch that fills the budget (1,000 tokens) closes at once, and is prepared
        second_texts = ["second " + chars(600), chars(400)]
        second = batcher.submit(second_texts)
        assert model.second_prepared.wait(timeout=10)  # prepared during the first pass
        assert not first.done()
        model.release_first_pass.set()
        assert first.result(timeout=10) == [fake_verdict("first")]
        assert second.result(timeout=10) == [fake_verdict(t) for t in second_texts]
    finally:
        model.release_first_pass.set()
        batcher.close()
    assert model.events == ["prepare 1", "pass 1", "prepare 2", "pass 2"]


def test_while_the_model_is_busy_the_next_batch_waits_for_it_past_its_max_wait() -> None:
    model = Preparing()
    batcher = eager_batcher(model.screen_batch, prepare=model.prepare, max_wait_s=0.05)
    try:
        first = batcher.submit(["first"])
        while "pass 1" not in model.events:
            time.sleep(0.01)
        later = []
        for i in range(3):  # 0.15 s apart: three times the max wait
            later.append(batcher.submit([f"later {i}"]))
            time.sleep(0.15)
        assert not model.second_prepared.is_set() and "prepare 3" not in model.events
        model.release_first_pass.set()
        assert first.result(timeout=10) == [fake_verdict("first")]
        assert [f.result(timeout=10) for f in later] == [
            [fake_verdict(f"later {i}")] for i in range(3)
        ]
    finally:
        model.release_first_pass.set()
        batcher.close()
    assert model.events == ["prepare 1", "pass 1", "prepare 3", "pass 3"]  # one batch of 3


def test_a_suspect_is_prepared_inside_its_own_pass_never_ahead() -> None:
    model = Preparing()
    model.release_first_pass.set()
    batcher = eager_batcher(model.screen_batch, prepare=model.prepare)
    try:
        assert batcher.submit(["a suspect"], solo=True).result(timeout=10) == [
            fake_verdict("a suspect")
        ]
    finally:
        batcher.close()
    assert model.events == ["unprepared 1"]


def test_a_preparation_is_counted_like_a_pass_and_a_failed_one_is_isolated() -> None:
    counted: list[tuple[str, list[object]]] = []

    def prepare(texts: Sequence[str]) -> Callable[[], list[Verdict]]:
        raise ValueError("the fake tokenizer chokes")

    screener = FakeScreener()
    batcher = eager_batcher(
        screener.screen_batch,
        prepare=prepare,
        on_start=lambda tags: counted.append(("start", tags)),
        on_end=lambda tags: counted.append(("end", tags)),
    )
    try:
        result = batcher.submit(["one", "two"], tag="m").result(timeout=10)
    finally:
        batcher.close()
    assert result == [fake_verdict("one"), fake_verdict("two")]  # screened unprepared
    assert counted == [("start", ["m"]), ("end", ["m"]), ("start", ["m"]), ("end", ["m"])]
    assert screener.batches == [2]


def test_the_watchdog_reports_a_preparation_over_the_time_limit() -> None:
    overrun = threading.Event()

    def prepare(texts: Sequence[str]) -> Callable[[], list[Verdict]]:
        time.sleep(1.0)
        return lambda: [fake_verdict(t) for t in texts]

    batcher = eager_batcher(
        FakeScreener().screen_batch,
        prepare=prepare,
        time_limit_s=0.3,
        on_overrun=lambda seconds: overrun.set(),
    )
    batcher.submit(["slow to tokenise"])
    assert overrun.wait(timeout=3)
    batcher.close()
