"""The micro-batcher on its own: no Redis, no Celery, a fake model."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from alknet_firewall.errors import ScreeningError
from alknet_firewall.schema import Verdict
from alknet_firewall.screening import Stages
from alknet_firewall_worker.batching import BatcherClosed, BatchStats, MicroBatcher
from tests.queue_helpers import FakeScreener, fake_verdict


def make_batcher(
    screen: FakeScreener,
    *,
    budget: int = 1000,
    max_parcels: int = 100,
    max_wait_s: float = 0.2,
    time_limit_s: float = 30.0,
    on_overrun: object = None,
) -> tuple[MicroBatcher, list[BatchStats]]:
    stats: list[BatchStats] = []
    batcher = MicroBatcher(
        screen.screen_batch,
        token_budget=budget,
        max_parcels=max_parcels,
        max_wait_s=max_wait_s,
        time_limit_s=time_limit_s,
        on_batch=stats.append,
        on_overrun=on_overrun or (lambda s: None),  # type: ignore[arg-type]
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


class Staged:
    """A fake screener in two steps, logging what each does and when: `prepare` raises on
    a text with "UNREADABLE"; `run` raises on "POISON" and, while `hold` is clear, waits
    for it (a forward pass a test can keep going)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, tuple[str, ...]]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.running = threading.Event()  # set while a run is in progress
        self.runs: list[list[int]] = []  # per run, the texts per part
        self.prepare_s = 0.0  # how long preparing takes

    def prepare(self, texts: Sequence[str]) -> list[str]:
        self.log.append(("prepare", tuple(texts)))
        time.sleep(self.prepare_s)
        if any("UNREADABLE" in t for t in texts):
            raise ValueError("the fake tokenizer chokes")
        return [f"prepared:{t}" for t in texts]

    def run(self, parts: Sequence[list[str]]) -> list[Verdict]:
        texts = tuple(t.removeprefix("prepared:") for part in parts for t in part)
        self.log.append(("run", texts))
        self.runs.append([len(part) for part in parts])
        self.running.set()
        try:
            assert self.hold.wait(10), "the test never let the pass end"
            if any("POISON" in t for t in texts):
                raise RuntimeError("the fake model chokes on POISON")
            return [fake_verdict(t) for t in texts]
        finally:
            self.running.clear()
            self.log.append(("ran", texts))

    def stages(self) -> Stages[list[str]]:
        return Stages(self.prepare, self.run)


def staged_batcher(
    staged: Staged, *, max_wait_s: float = 0.0, max_parcels: int = 100, **kwargs: Any
) -> MicroBatcher:
    return MicroBatcher(
        staged.stages(),
        token_budget=1000,
        max_parcels=max_parcels,
        max_wait_s=max_wait_s,
        time_limit_s=30.0,
        on_batch=lambda _stats: None,
        on_overrun=lambda _s: None,
        **kwargs,
    )


def test_the_next_batch_is_prepared_while_the_forward_pass_runs() -> None:
    staged = Staged()
    staged.hold.clear()
    batcher = staged_batcher(staged)
    first = batcher.submit(["first"])
    assert staged.running.wait(5)
    second = batcher.submit(["second"])
    deadline = time.monotonic() + 5
    while ("prepare", ("second",)) not in staged.log:
        assert time.monotonic() < deadline, "the next batch was not prepared during the pass"
        time.sleep(0.01)
    assert staged.running.is_set()  # prepared while the first pass was still going
    staged.hold.set()
    assert first.result(timeout=5) == [fake_verdict("first")]
    assert second.result(timeout=5) == [fake_verdict("second")]
    batcher.close()
    assert staged.log == [
        ("prepare", ("first",)),
        ("run", ("first",)),
        ("prepare", ("second",)),
        ("ran", ("first",)),
        ("run", ("second",)),
        ("ran", ("second",)),
    ]


def test_a_batch_keeps_filling_past_its_max_wait_while_the_runner_is_busy() -> None:
    staged = Staged()
    staged.hold.clear()
    batcher = staged_batcher(staged, max_wait_s=0.05)
    first = batcher.submit(["first"])
    assert staged.running.wait(5)
    later = [batcher.submit([f"later {i}", f"and {i}"]) for i in range(3)]
    time.sleep(0.3)  # well past the max wait of every parcel: still one batch to come
    staged.hold.set()
    first.result(timeout=5)
    assert [f.result(timeout=5) for f in later] == [
        [fake_verdict(f"later {i}"), fake_verdict(f"and {i}")] for i in range(3)
    ]
    batcher.close()
    assert staged.runs == [[1], [2, 2, 2]]  # three parcels prepared apart, one pass


def test_passes_begin_with_on_start_for_their_own_messages_only() -> None:
    staged = Staged()
    staged.hold.clear()
    batcher = staged_batcher(
        staged, on_start=lambda tags: staged.log.append(("start", tuple(map(str, tags))))
    )
    first = batcher.submit(["first"], tag="m1")
    assert staged.running.wait(5)
    second = batcher.submit(["second"], tag="m2")
    third = batcher.submit(["third"], tag="m3", solo=True)
    time.sleep(0.2)  # both prepared by now, neither begun
    assert ("start", ("m2",)) not in staged.log
    staged.hold.set()
    for future in (first, second, third):
        future.result(timeout=5)
    batcher.close()
    assert staged.log == [
        ("prepare", ("first",)),
        ("start", ("m1",)),
        ("run", ("first",)),
        ("prepare", ("second",)),
        ("prepare", ("third",)),
        ("ran", ("first",)),
        ("start", ("m2",)),
        ("run", ("second",)),
        ("ran", ("second",)),
        ("start", ("m3",)),
        ("run", ("third",)),
        ("ran", ("third",)),
    ]


def test_a_text_that_cannot_be_prepared_gets_an_error_and_its_batch_mates_verdicts() -> None:
    staged = Staged()
    batcher = staged_batcher(staged, max_wait_s=0.2)
    futures = [
        batcher.submit(["fine one", "an UNREADABLE text"]),
        batcher.submit(["fine two", "fine three"]),
        batcher.submit(["a POISON pill"]),
    ]
    results = [f.result(timeout=5) for f in futures]
    batcher.close()
    assert results[0][0] == fake_verdict("fine one")
    assert isinstance(results[0][1], ScreeningError)
    assert "ValueError: the fake tokenizer chokes" in str(results[0][1])
    assert results[1] == [fake_verdict("fine two"), fake_verdict("fine three")]
    assert isinstance(results[2][0], ScreeningError) and "POISON" in str(results[2][0])
    # No pass over the batch whose preparing failed: straight to the halves, prepared
    # again (the unreadable text's half and then the text alone never reach the model).
    assert staged.runs == [[1], [3], [1], [2], [1], [1]]


def test_a_pass_that_raises_is_isolated_on_prepared_batches_too() -> None:
    staged = Staged()
    batcher = staged_batcher(staged, max_wait_s=0.2)
    first = batcher.submit(["fine one", "a POISON pill"])
    second = batcher.submit(["fine two"])
    fine_one, poisoned = first.result(timeout=5)
    assert second.result(timeout=5) == [fake_verdict("fine two")]
    batcher.close()
    assert fine_one == fake_verdict("fine one") and isinstance(poisoned, ScreeningError)
    assert staged.runs == [[2, 1], [1], [2], [1], [1]]  # the prepared batch, then halves


def test_what_arrived_by_the_max_wait_shares_the_batch_even_if_slow_to_prepare() -> None:
    # Before preparing moved out of the pass, a batch held every message that arrived by
    # its deadline: a message still being tokenised then must not be left for the next.
    staged = Staged()
    staged.prepare_s = 0.15  # each message takes three max waits to prepare
    batcher = staged_batcher(staged, max_wait_s=0.05)
    futures = [batcher.submit([f"message {i}"]) for i in range(3)]
    for future in futures:
        future.result(timeout=5)
    batcher.close()
    assert staged.runs == [[1, 1, 1]]


def test_a_lone_prepared_message_waits_at_most_the_max_wait() -> None:
    staged = Staged()
    batcher = staged_batcher(staged, max_wait_s=0.2)
    started = time.monotonic()
    assert batcher.submit(["alone"]).result(timeout=5) == [fake_verdict("alone")]
    elapsed = time.monotonic() - started
    batcher.close()
    assert 0.15 <= elapsed < 1.0


def test_close_fails_the_messages_it_did_not_screen_and_leaves_none_waiting() -> None:
    staged = Staged()
    staged.hold.clear()
    batcher = staged_batcher(staged, max_parcels=100)
    first = batcher.submit(["first"])
    assert staged.running.wait(5)
    queued = [batcher.submit([f"queued {i}"], solo=True) for i in range(3)]
    time.sleep(0.1)
    closing = threading.Thread(target=batcher.close)
    closing.start()
    time.sleep(0.1)
    staged.hold.set()  # the pass in progress ends: close waits for it
    closing.join(10)
    assert not closing.is_alive()
    assert first.result(timeout=1) == [fake_verdict("first")]
    for future in queued:
        assert isinstance(future.exception(timeout=1), BatcherClosed)
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(["too late"])


def test_a_raising_on_start_fails_its_batch_only() -> None:
    staged = Staged()

    def on_start(tags: list[object]) -> None:
        if "bad" in tags:
            raise ConnectionError("redis is away")

    batcher = staged_batcher(staged, on_start=on_start)
    bad = batcher.submit(["one"], tag="bad", solo=True)
    good = batcher.submit(["two"], tag="good", solo=True)
    assert isinstance(bad.exception(timeout=5), ConnectionError)
    assert good.result(timeout=5) == [fake_verdict("two")]
    batcher.close()
