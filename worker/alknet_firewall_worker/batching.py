"""Dynamic micro-batching: messages that arrive close together share forward passes.

Task threads `submit` the documents of one message (a parcel) and wait on its future;
one batcher thread collects what has arrived and screens it in one `screen_batch` call. A
batch closes when its documents reach the token budget (estimated from characters, so
no text is tokenised just to plan a batch), or hold `max_parcels` parcels (the number
of task threads: no more can arrive), or `max_wait` after its first parcel arrived, so a
lone message waits at most `max_wait`. What arrived during a forward pass is picked up
at once when it ends (its wait has already run out), so under load batches fill to the
budget with no added delay. A parcel is never cut: one larger than the budget is a batch
of its own, and the model cuts its forward passes by [batching] token_budget.

Why our own batcher and not celery-batches: every message keeps its own late ack, and
batches are cut by tokens, not by a count of messages; celery-batches acks a whole batch
when its function returns, even when it raised (celery_batches/trace.py), and cannot
retry (celery-batches issue #10).

Failure isolation (`alknet_firewall.screening.screen_isolating`, as in process): when a
batched forward pass raises, each half is screened again, so only the culprit gets a
`ScreeningError`; its batch-mates get their verdicts.
A parcel flagged `solo` (a suspect: its message was in a forward pass that never ended,
or split from one) always runs alone. Before each forward pass `on_start` gets the tags
of the parcels in it, and `on_end` gets them again once the pass has returned (raised
included): the worker counts, per message, the passes that began and never ended, so a
message queued behind a pass that killed the worker is not a suspect, and neither is one
whose pass ended just before the next pass killed the worker, while its rows were still
being stored. A forward pass
that runs past `time_limit_s` cannot be interrupted from Python; the watchdog then calls
`on_overrun`, which in a worker ends the process (its messages come back, are split and
run solo).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from alknet_firewall.errors import ScreeningError
from alknet_firewall.queue.settings import CHARS_PER_TOKEN
from alknet_firewall.schema import Verdict
from alknet_firewall.screening import screen_isolating

log = logging.getLogger(__name__)

Result = Verdict | ScreeningError  # per document: its verdict, or why the model failed on it


@dataclass(frozen=True, slots=True)
class BatchStats:
    """One forward pass: how many documents and tokens, how long, whether it raised."""

    size: int  # documents
    tokens: int  # estimated from characters
    seconds: float
    ok: bool


@dataclass(slots=True)
class _Parcel:
    texts: list[str]
    tokens: int
    solo: bool
    tag: object = None  # the caller's name for the message (see not_started)
    arrived: float = field(default_factory=time.monotonic)
    future: Future[list[Result]] = field(default_factory=Future)


class MicroBatcher:
    """Collects submitted parcels into token-budgeted batches, screened on one thread."""

    def __init__(
        self,
        screen_batch: Callable[[Sequence[str]], list[Verdict]],
        *,
        token_budget: int,
        max_parcels: int,
        max_wait_s: float,
        time_limit_s: float,
        on_batch: Callable[[BatchStats], None],
        on_overrun: Callable[[float], None],
        on_start: Callable[[list[object]], None] = lambda _tags: None,
        on_end: Callable[[list[object]], None] = lambda _tags: None,
    ) -> None:
        self._screen = screen_batch
        self._budget = token_budget
        self._max_parcels = max_parcels
        self._max_wait = max_wait_s
        self._time_limit = time_limit_s
        self._on_batch = on_batch
        self._on_overrun = on_overrun
        self._on_start = on_start
        self._on_end = on_end
        self._inbox: queue.SimpleQueue[_Parcel | None] = queue.SimpleQueue()
        self._carry: _Parcel | None = None  # arrived, but did not fit the last batch
        self._busy_since: float | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="batch-watchdog", daemon=True)
        self._thread.start()
        self._watchdog.start()

    def submit(
        self, texts: list[str], *, solo: bool = False, tag: object = None
    ) -> Future[list[Result]]:
        """Queue one message's documents; its future gets one Result per text, in order."""
        if self._closed.is_set():
            raise RuntimeError("the micro-batcher is closed")
        tokens = max(1, sum(len(text) for text in texts) // CHARS_PER_TOKEN)
        parcel = _Parcel(texts, tokens, solo, tag)
        self._inbox.put(parcel)
        return parcel.future

    def close(self) -> None:
        """Stop after the batch in progress; messages still queued are not screened."""
        self._closed.set()
        self._inbox.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while not self._closed.is_set():
            batch = self._collect()
            if batch:
                self._run(batch)

    def _collect(self) -> list[_Parcel]:
        first = self._carry or self._inbox.get()
        self._carry = None
        if first is None:
            return []
        batch, used = [first], first.tokens
        deadline = first.arrived + self._max_wait
        while not first.solo and used < self._budget and len(batch) < self._max_parcels:
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

    def _run(self, batch: list[_Parcel]) -> None:
        tags = [parcel.tag for parcel in batch if parcel.tag is not None]
        try:
            self._on_start(tags)
        except Exception as exc:  # not counted, not screened: the callers requeue
            for parcel in batch:
                parcel.future.set_exception(exc)
            return
        texts = [text for parcel in batch for text in parcel.texts]
        results = iter(screen_isolating(self._pass, texts))
        # Before the futures: the next pass may start, and kill the worker, while the
        # callers are still storing these rows.
        try:
            self._on_end(tags)
        except Exception:  # the verdicts stand; the messages only look suspect if redelivered
            log.warning("could not record the end of a forward pass", exc_info=True)
        for parcel in batch:
            parcel.future.set_result([next(results) for _ in parcel.texts])

    def _pass(self, texts: Sequence[str]) -> list[Verdict]:
        """One forward pass, watched by the watchdog and reported to `on_batch`."""
        started = self._busy_since = time.monotonic()
        verdicts: list[Verdict] = []
        try:
            verdicts = self._screen(texts)
            return verdicts
        finally:
            self._busy_since = None
            tokens = sum(len(text) for text in texts) // CHARS_PER_TOKEN
            ok = len(verdicts) == len(texts)
            self._on_batch(BatchStats(len(texts), tokens, time.monotonic() - started, ok))

    def _watch(self) -> None:
        tick = min(1.0, self._time_limit / 10)
        while not self._closed.wait(tick):
            busy_since = self._busy_since
            if busy_since is not None and time.monotonic() - busy_since > self._time_limit:
                self._on_overrun(time.monotonic() - busy_since)
                return
