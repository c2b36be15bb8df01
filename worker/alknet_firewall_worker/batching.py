"""Dynamic micro-batching: messages that arrive close together share forward passes.

Task threads `submit` the documents of one message (a parcel) and wait on its future.
Two threads do the rest, one batch apart: the preparer collects what has arrived into a
batch and prepares it (validation, tokenising, batch planning: `prepare`, when the
screener has a model-free half), while the runner screens the batch before it. On a GPU
tokenising is a third of screening's time; this way the model goes from one batch to the
next without waiting on the tokenizer. The preparer holds at most one batch ready: it
collects the next only once the runner has taken it.

A batch closes when its documents reach the token budget (estimated from characters, so
no text is tokenised just to plan a batch), or hold `max_parcels` parcels (the number
of task threads: no more can arrive), or `max_wait` after its first parcel arrived, so a
lone message waits at most `max_wait`. A batch past its max wait while the model is
still busy with the batch before keeps collecting until the model is free (closing it
sooner would only make it smaller), so under load batches fill to the budget with no
added delay, and one that fills during a pass is prepared during it. A parcel is never
cut: one larger than the budget is a batch of its own, and the model cuts its forward
passes by [batching] token_budget.

Why our own batcher and not celery-batches: every message keeps its own late ack, and
batches are cut by tokens, not by a count of messages; celery-batches acks a whole batch
when its function returns, even when it raised (celery_batches/trace.py), and cannot
retry (celery-batches issue #10).

Failure isolation (`alknet_firewall.screening.screen_isolating`, as in process): when a
batched forward pass raises, each half is screened again, so only the culprit gets a
`ScreeningError`; its batch-mates get their verdicts.
A parcel flagged `solo` (a suspect: its message was in a forward pass that never ended,
or split from one) always runs alone, and is never prepared ahead: its preparation runs
inside its own pass, so nothing of another batch is in flight when it may kill the
worker. Before each forward pass, and before each preparation ahead, `on_start` gets the
tags of the parcels in it, and `on_end` gets them again once it has returned (raised
included): the worker counts, per message, the steps that began and never ended, so a
message queued behind a pass that killed the worker is not a suspect, and neither is one
whose pass ended just before the next pass killed the worker, while its rows were still
being stored; a document that kills or hangs the tokenizer is cornered like one that
kills the model. A forward pass or preparation that runs past `time_limit_s` cannot be
interrupted from Python; the watchdog then calls `on_overrun`, which in a worker ends the
process (its messages come back, are split and run solo).
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


# How often a batch past its max wait looks whether the model is free to take it.
BUSY_POLL_S = 0.005

Run = Callable[[], list[Verdict]]  # screens a prepared batch (`prepared_run`)


@dataclass(slots=True)
class _Ready:
    """A closed batch, and the call that screens it when it was prepared ahead."""

    parcels: list[_Parcel]
    run: Run | None


class MicroBatcher:
    """Collects submitted parcels into token-budgeted batches; one thread prepares the
    next batch while another screens this one."""

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
        prepare: Callable[[Sequence[str]], Run] | None = None,
    ) -> None:
        self._screen = screen_batch
        self._prepare = prepare
        self._budget = token_budget
        self._max_parcels = max_parcels
        self._max_wait = max_wait_s
        self._time_limit = time_limit_s
        self._on_batch = on_batch
        self._on_overrun = on_overrun
        self._on_start = on_start
        self._on_end = on_end
        self._inbox: queue.SimpleQueue[_Parcel | None] = queue.SimpleQueue()
        self._ready: queue.SimpleQueue[_Ready | None] = queue.SimpleQueue()
        self._taken = threading.Semaphore(0)  # released as the runner takes a ready batch
        self._runner_idle = threading.Event()  # the runner waits for a batch
        self._carry: _Parcel | None = None  # arrived, but did not fit the last batch
        self._busy_since: float | None = None  # the forward pass in progress
        self._preparing_since: float | None = None  # the preparation in progress
        self._closed = threading.Event()
        self._threads = [
            threading.Thread(target=self._prepare_loop, name="batch-preparer", daemon=True),
            threading.Thread(target=self._run_loop, name="micro-batcher", daemon=True),
        ]
        self._watchdog = threading.Thread(target=self._watch, name="batch-watchdog", daemon=True)
        for thread in self._threads:
            thread.start()
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
        self._ready.put(None)
        self._taken.release()
        for thread in self._threads:
            thread.join()

    def _prepare_loop(self) -> None:
        while not self._closed.is_set():
            batch = self._collect()
            if not batch:
                continue
            self._ready.put(_Ready(batch, self._prepared(batch)))
            self._taken.acquire()  # one batch ahead of the runner, no more

    def _run_loop(self) -> None:
        while not self._closed.is_set():
            self._runner_idle.set()
            ready = self._ready.get()
            self._runner_idle.clear()
            if ready is None or self._closed.is_set():
                return
            self._taken.release()
            self._run(ready)

    def _prepared(self, batch: list[_Parcel]) -> Run | None:
        """The batch prepared now, counted and watched like a pass; None when it is
        prepared inside its pass instead (a suspect, or a screener with no model-free half,
        or a preparation whose start could not be counted)."""
        if self._prepare is None or batch[0].solo:
            return None
        tags = [parcel.tag for parcel in batch if parcel.tag is not None]
        try:
            self._on_start(tags)
        except Exception:  # the pass will prepare it, counted there
            log.warning("could not record the start of a preparation", exc_info=True)
            return None
        self._preparing_since = time.monotonic()
        try:
            return self._prepare([text for parcel in batch for text in parcel.texts])
        except Exception:  # screened unprepared: the pass meets the failure and isolates it
            log.warning("preparing a batch failed; its pass prepares it again", exc_info=True)
            return None
        finally:
            self._preparing_since = None
            try:
                self._on_end(tags)
            except Exception:
                log.warning("could not record the end of a preparation", exc_info=True)

    def _collect(self) -> list[_Parcel]:
        first = self._carry or self._inbox.get()
        self._carry = None
        if first is None:
            return []
        batch, used = [first], first.tokens
        deadline = first.arrived + self._max_wait
        while not first.solo and used < self._budget and len(batch) < self._max_parcels:
            wait = deadline - time.monotonic()
            if wait <= 0:
                if self._runner_idle.is_set():
                    break
                # The model is still busy with the batch before: closing now would only
                # cut this one short (on CPU, a small batch wastes its fixed row blocks).
                wait = BUSY_POLL_S
            try:
                item = self._inbox.get(timeout=wait)
            except queue.Empty:
                continue
            if item is None:
                break
            if item.solo or used + item.tokens > self._budget:
                self._carry = item
                break
            batch.append(item)
            used += item.tokens
        return batch

    def _run(self, ready: _Ready) -> None:
        batch = ready.parcels
        tags = [parcel.tag for parcel in batch if parcel.tag is not None]
        try:
            self._on_start(tags)
        except Exception as exc:  # not counted, not screened: the callers requeue
            for parcel in batch:
                parcel.future.set_exception(exc)
            return
        texts = [text for parcel in batch for text in parcel.texts]
        prepared = ready.run
        first = None if prepared is None else lambda: self._pass(texts, prepared)
        results = iter(screen_isolating(self._pass, texts, first=first))
        # Before the futures: the next pass may start, and kill the worker, while the
        # callers are still storing these rows.
        try:
            self._on_end(tags)
        except Exception:  # the verdicts stand; the messages only look suspect if redelivered
            log.warning("could not record the end of a forward pass", exc_info=True)
        for parcel in batch:
            parcel.future.set_result([next(results) for _ in parcel.texts])

    def _pass(self, texts: Sequence[str], prepared: Run | None = None) -> list[Verdict]:
        """One forward pass (of `texts`, or of what `prepared` screens: the same texts),
        watched by the watchdog and reported to `on_batch`."""
        started = self._busy_since = time.monotonic()
        verdicts: list[Verdict] = []
        try:
            verdicts = prepared() if prepared is not None else self._screen(texts)
            return verdicts
        finally:
            self._busy_since = None
            tokens = sum(len(text) for text in texts) // CHARS_PER_TOKEN
            ok = len(verdicts) == len(texts)
            self._on_batch(BatchStats(len(texts), tokens, time.monotonic() - started, ok))

    def _watch(self) -> None:
        tick = min(1.0, self._time_limit / 10)
        while not self._closed.wait(tick):
            for since in (self._busy_since, self._preparing_since):
                if since is not None and time.monotonic() - since > self._time_limit:
                    self._on_overrun(time.monotonic() - since)
                    return
