"""Dynamic micro-batching: documents that arrive close together share one forward pass.

Task threads `submit` a document and wait on its future; one batcher thread collects
what has arrived and screens it in one `screen_batch` call. A batch closes when its
documents reach the token budget, or hold `max_docs` documents (the number of task
threads: no more can arrive), or `max_wait` after its first document arrived, so a lone
document waits at most `max_wait`. What arrived during a forward pass is picked up
at once when it ends (its wait has already run out), so under load batches fill to the
budget with no added delay.

Why our own batcher and not celery-batches: with this one every document stays an
ordinary Celery message with its own late ack, retry and requeue, and batches are cut
by tokens, not by a count of messages; celery-batches acks a whole batch when its
function returns, even when it raised (celery_batches/trace.py), and cannot retry
(celery-batches issue #10).

Failure isolation (`alknet_firewall.screening.screen_isolating`, as in process): when a
batched forward pass raises, each half is screened again, so only the culprit gets a
`ScreeningError`; its batch-mates get their verdicts.
A document flagged `solo` (one delivered before: a suspect in a crash) always runs
alone. A forward pass that runs past `time_limit_s` cannot be interrupted from Python;
the watchdog then calls `on_overrun`, which in a worker ends the process (its messages
come back after the visibility timeout, and the suspects run solo).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from alknet_firewall.schema import Verdict
from alknet_firewall.screening import screen_isolating


@dataclass(frozen=True, slots=True)
class BatchStats:
    """One forward pass: how many documents and tokens, how long, whether it raised."""

    size: int
    tokens: int
    seconds: float
    ok: bool


@dataclass(slots=True)
class _Pending:
    text: str
    tokens: int
    solo: bool
    tag: object = None  # the caller's name for the document (see not_started)
    arrived: float = field(default_factory=time.monotonic)
    future: Future[Verdict] = field(default_factory=Future)


class MicroBatcher:
    """Collects submitted documents into token-budgeted batches, screened on one thread."""

    def __init__(
        self,
        screen_batch: Callable[[Sequence[str]], list[Verdict]],
        *,
        token_budget: int,
        max_docs: int,
        max_wait_s: float,
        time_limit_s: float,
        on_batch: Callable[[BatchStats], None],
        on_overrun: Callable[[float], None],
    ) -> None:
        self._screen = screen_batch
        self._budget = token_budget
        self._max_docs = max_docs
        self._max_wait = max_wait_s
        self._time_limit = time_limit_s
        self._on_batch = on_batch
        self._on_overrun = on_overrun
        self._inbox: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._carry: _Pending | None = None  # arrived, but did not fit the last batch
        self._busy_since: float | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="batch-watchdog", daemon=True)
        self._thread.start()
        self._watchdog.start()

    def submit(
        self, text: str, tokens: int, *, solo: bool = False, tag: object = None
    ) -> Future[Verdict]:
        """Queue one document; its future gets a Verdict, or a ScreeningError."""
        if self._closed.is_set():
            raise RuntimeError("the micro-batcher is closed")
        pending = _Pending(text, max(1, tokens), solo, tag)
        self._inbox.put(pending)
        return pending.future

    def not_started(self) -> list[object]:
        """Tags of the documents waiting for a forward pass, taken out of the batcher.

        For `on_overrun`: while a forward pass hangs, the documents queued behind it were
        never screened, so a crash that follows is not theirs to count against them.
        Only safe while the batcher thread is stuck in that forward pass.
        """
        waiting = [self._carry] if self._carry is not None else []
        self._carry = None
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                waiting.append(item)
        return [p.tag for p in waiting if p.tag is not None]

    def close(self) -> None:
        """Stop after the batch in progress; documents still queued are not screened."""
        self._closed.set()
        self._inbox.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while not self._closed.is_set():
            batch = self._collect()
            if batch:
                self._run(batch)

    def _collect(self) -> list[_Pending]:
        first = self._carry or self._inbox.get()
        self._carry = None
        if first is None:
            return []
        batch, used = [first], first.tokens
        deadline = first.arrived + self._max_wait
        while not first.solo and used < self._budget and len(batch) < self._max_docs:
            try:
                item = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                break
            if item.solo or used + item.tokens > self._budget:
                self._carry = item
                break
            batch.append(item)
            used += item.tokens
        return batch

    def _run(self, batch: list[_Pending]) -> None:
        for pending, result in zip(batch, screen_isolating(self._pass, batch), strict=True):
            if isinstance(result, Verdict):
                pending.future.set_result(result)
            else:
                pending.future.set_exception(result)

    def _pass(self, batch: Sequence[_Pending]) -> list[Verdict]:
        """One forward pass, watched by the watchdog and reported to `on_batch`."""
        started = self._busy_since = time.monotonic()
        verdicts: list[Verdict] = []
        try:
            verdicts = self._screen([p.text for p in batch])
            return verdicts
        finally:
            self._busy_since = None
            tokens = sum(p.tokens for p in batch)
            ok = len(verdicts) == len(batch)
            self._on_batch(BatchStats(len(batch), tokens, time.monotonic() - started, ok))

    def _watch(self) -> None:
        tick = min(1.0, self._time_limit / 10)
        while not self._closed.wait(tick):
            busy_since = self._busy_since
            if busy_since is not None and time.monotonic() - busy_since > self._time_limit:
                self._on_overrun(time.monotonic() - busy_since)
                return
