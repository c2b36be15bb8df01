"""Dynamic micro-batching: messages that arrive close together share forward passes.

Task threads `submit` the documents of one message (a parcel) and wait on its future.
Two threads share the work, so that tokenising overlaps the model (on an H200 it was
31% of screening time): the collector prepares each parcel as it arrives (the
screener's `prepare`: refusals and token windows, no model) and gathers parcels into
the next batch; the runner screens one batch at a time in one forward pass over the
parcels' prepared parts (`screen_prepared`). A batch closes when its documents reach
the token budget (estimated from characters, so no text is tokenised just to plan a
batch), or when no more parcels can arrive (every task thread's parcel is in the
batcher: `max_parcels`), or when the next parcel does not fit; a full batch waits,
prepared, in a hand-off slot of one while the runner is busy, and the collector goes on
with the next. A batch that is not full is taken by the runner only once it is idle
and `max_wait` has passed since the batch's first parcel arrived, and the parcels that
arrived by then are prepared and in it: a lone message waits at most `max_wait` (or the
tokenising of what arrived by then, if longer), and under load a batch keeps filling
during the forward pass before it, so the overlap never makes batches smaller.
At most three batches are in the batcher (running, in the slot, being gathered), and
no more parcels than task threads: memory stays bounded.

For the overlap to matter the worker needs more messages in flight than one batch
holds ([queue.worker] concurrency): with fewer, every message is in the batch running
and nothing is left to prepare meanwhile.

Why our own batcher and not celery-batches: every message keeps its own late ack, and
batches are cut by tokens, not by a count of messages; celery-batches acks a whole batch
when its function returns, even when it raised (celery_batches/trace.py), and cannot
retry (celery-batches issue #10).

Failure isolation (`alknet_firewall.screening.screen_isolating`, as in process): when a
batched forward pass raises, each half is screened again (prepared again: the rare
path), so only the culprit gets a `ScreeningError`; its batch-mates get their verdicts.
A parcel whose preparing raised sends its whole batch down that path, so the text that
cannot be prepared gets the error, alone. A parcel flagged `solo` (a suspect: its
message was in a forward pass that never ended, or split from one) always runs alone.
Right before each batch's forward pass, not when it is prepared, `on_start` gets the
tags of the parcels in it: the worker counts, per message, the passes that began, so a
message queued or prepared behind a pass that killed the worker is not a suspect. A
forward pass that runs past `time_limit_s` cannot be interrupted from Python; the
watchdog, which times the forward pass alone, then calls `on_overrun`, which in a
worker ends the process (its messages come back, are split and run solo). Preparing is
not watched: it is linear in the text, whose length [limits] max_chars bounds.

`close` stops after the forward pass in progress; every message not screened by then
gets `BatcherClosed` (the task requeues it).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from alknet_firewall.errors import ScreeningError
from alknet_firewall.queue.settings import CHARS_PER_TOKEN
from alknet_firewall.schema import Verdict
from alknet_firewall.screening import Stages, screen_isolating, unstaged

Result = Verdict | ScreeningError  # per document: its verdict, or why the model failed on it


class BatcherClosed(RuntimeError):
    """The batcher closed (the worker is stopping) before this message was screened."""


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
    prepared: Any = None  # the screener's prepared texts, once the collector is done
    unprepared: Exception | None = None  # what preparing raised, if it did


class MicroBatcher:
    """Collects submitted parcels into token-budgeted batches, each prepared while the
    one before it is screened; one forward pass at a time."""

    def __init__(
        self,
        screen: Callable[[Sequence[str]], list[Verdict]] | Stages[Any],
        *,
        token_budget: int,
        max_parcels: int,
        max_wait_s: float,
        time_limit_s: float,
        on_batch: Callable[[BatchStats], None],
        on_overrun: Callable[[float], None],
        on_start: Callable[[list[object]], None] = lambda _tags: None,
    ) -> None:
        # A plain screen_batch is prepared by keeping the texts: no overlap, same batches.
        self._stages = screen if isinstance(screen, Stages) else unstaged(screen)
        self._budget = token_budget
        self._max_parcels = max_parcels
        self._max_wait = max_wait_s
        self._time_limit = time_limit_s
        self._on_batch = on_batch
        self._on_overrun = on_overrun
        self._on_start = on_start
        self._inbox: queue.SimpleQueue[_Parcel | None] = queue.SimpleQueue()
        # Guards the four fields below and `_closed` against `submit`; both threads
        # wait on it: the runner for a batch, the collector for the slot to empty.
        self._lock = threading.Condition()
        self._on_the_way: deque[float] = deque()  # arrival of each parcel not gathered yet
        self._gathering: list[_Parcel] = []  # prepared: the batch after `_ready`
        self._ready: list[_Parcel] | None = None  # closed and prepared: the next batch
        self._taken = 0  # parcels in `_ready` and in the forward pass (see _full)
        self._busy_since: float | None = None
        self._closed = threading.Event()
        self._collector = threading.Thread(target=self._collect, name="micro-batcher", daemon=True)
        self._runner = threading.Thread(target=self._run_batches, name="batch-runner", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="batch-watchdog", daemon=True)
        self._collector.start()
        self._runner.start()
        self._watchdog.start()

    def submit(
        self, texts: list[str], *, solo: bool = False, tag: object = None
    ) -> Future[list[Result]]:
        """Queue one message's documents; its future gets one Result per text, in order."""
        tokens = max(1, sum(len(text) for text in texts) // CHARS_PER_TOKEN)
        with self._lock:  # so that `close` sees every parcel it must fail
            if self._closed.is_set():
                raise RuntimeError("the micro-batcher is closed")
            parcel = _Parcel(texts, tokens, solo, tag)  # arrivals in inbox order
            self._on_the_way.append(parcel.arrived)
            self._inbox.put(parcel)
        return parcel.future

    def close(self) -> None:
        """Stop after the forward pass in progress; every message not screened by then
        gets `BatcherClosed`."""
        with self._lock:
            self._closed.set()
            self._inbox.put(None)
            self._lock.notify_all()
        self._collector.join()
        self._runner.join()
        left = [*self._gathering, *(self._ready or [])]
        self._gathering, self._ready = [], None
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                left.append(item)
        for parcel in left:
            if not parcel.future.done():
                parcel.future.set_exception(BatcherClosed("the micro-batcher closed first"))

    # The collector: prepares parcels as they arrive and gathers them into batches.

    def _collect(self) -> None:
        while (parcel := self._inbox.get()) is not None:
            self._prepare(parcel)
            with self._lock:
                self._on_the_way.popleft()
                if self._gathering and not self._fits(parcel) and not self._hand_over():
                    self._gathering.append(parcel)  # closed: `close` fails it
                    return
                self._gathering.append(parcel)
                if self._full() and not self._hand_over():
                    return
                self._lock.notify_all()  # the runner may take a batch that is not full

    def _prepare(self, parcel: _Parcel) -> None:
        try:
            parcel.prepared = self._stages.prepare(parcel.texts)
        except Exception as exc:  # the runner isolates the text that raised
            parcel.unprepared = exc

    def _fits(self, parcel: _Parcel) -> bool:
        gathering = self._gathering
        tokens = sum(p.tokens for p in gathering) + parcel.tokens
        return not parcel.solo and not gathering[0].solo and tokens <= self._budget

    def _full(self) -> bool:
        """No parcel can join the batch gathered: it is solo, at the token budget, or
        every task thread's parcel is in the batcher (so none can arrive before the
        forward pass in progress ends and the runner takes this batch)."""
        gathering = self._gathering
        return (
            gathering[0].solo
            or sum(p.tokens for p in gathering) >= self._budget
            or len(gathering) + self._taken >= self._max_parcels
        )

    def _hand_over(self) -> bool:
        """Close the batch gathered into the slot, once the runner has taken the one
        before; False when the batcher closed meanwhile. Called with the lock held."""
        while self._ready is not None and not self._closed.is_set():
            self._lock.wait()
        if self._closed.is_set():
            return False
        self._ready, self._gathering = self._gathering, []
        self._taken += len(self._ready)
        self._lock.notify_all()
        return True

    # The runner: one batch at a time, on the prepared parts.

    def _run_batches(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _next_batch(self) -> list[_Parcel] | None:
        """The batch in the slot, or else the one gathered once `max_wait` has passed
        since its first parcel arrived and every parcel that arrived by then has been
        prepared and gathered (as the batch held all that arrived by its deadline before
        preparing moved out of the pass); None once closed."""
        with self._lock:
            while not self._closed.is_set():
                if self._ready is not None:
                    batch, self._ready = self._ready, None
                    self._lock.notify_all()  # the collector may wait for the slot
                    return batch
                if not self._gathering:
                    self._lock.wait()
                    continue
                deadline = self._gathering[0].arrived + self._max_wait
                if time.monotonic() < deadline:
                    self._lock.wait(deadline - time.monotonic())
                elif self._on_the_way and self._on_the_way[0] <= deadline:
                    self._lock.wait()  # the collector notifies once it has gathered it
                else:
                    batch, self._gathering = self._gathering, []
                    self._taken += len(batch)
                    return batch
            return None

    def _run(self, batch: list[_Parcel]) -> None:
        try:
            outcome = self._screen(batch)
        except Exception as exc:  # a bug or a callback that raised: nobody waits forever
            outcome = exc
        finally:
            # Out of `_taken` before any caller can submit again: a parcel sent by a task
            # thread this frees must not find the batch gathered "full" of parcels gone.
            with self._lock:
                self._taken -= len(batch)
        if isinstance(outcome, Exception):
            for parcel in batch:
                parcel.future.set_exception(outcome)
            return
        results = iter(outcome)
        for parcel in batch:
            parcel.future.set_result([next(results) for _ in parcel.texts])

    def _screen(self, batch: list[_Parcel]) -> list[Result] | Exception:
        try:
            self._on_start([parcel.tag for parcel in batch if parcel.tag is not None])
        except Exception as exc:  # not counted, not screened: the callers requeue
            return exc
        texts = [text for parcel in batch for text in parcel.texts]
        return screen_isolating(self._pass, texts, first=lambda: self._first(batch, texts))

    def _first(self, batch: list[_Parcel], texts: list[str]) -> list[Verdict]:
        """The batch's forward pass on the parts prepared in advance."""
        for parcel in batch:
            if parcel.unprepared is not None:
                raise parcel.unprepared  # no pass ran: straight to the halves
        parts = [parcel.prepared for parcel in batch]
        return self._watched(texts, lambda: self._stages.run(parts))

    def _pass(self, texts: Sequence[str]) -> list[Verdict]:
        """A forward pass on texts prepared now (the halves of a batch that raised)."""
        return self._watched(texts, lambda: self._stages.screen_batch(texts))

    def _watched(self, texts: Sequence[str], run: Callable[[], list[Verdict]]) -> list[Verdict]:
        """One forward pass, watched by the watchdog and reported to `on_batch`."""
        started = self._busy_since = time.monotonic()
        verdicts: list[Verdict] = []
        try:
            verdicts = run()
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
