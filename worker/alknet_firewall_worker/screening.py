"""What a worker does with one delivered chunk, apart from Celery's plumbing.

In order, with one Redis round trip before and one after, whatever the chunk's size:
look up whether the chunk is still outstanding, how often it was in a forward pass that
never ended, which documents already have rows (a redelivery) and which verdicts are
cached. A copy of a chunk that was split already is dropped: the halves cover it. A chunk
whose worker died or hung in a forward pass on it is split, once: its unfinished
documents go back to the queue as two suspect halves, so a document that kills its worker
is cornered in a few redeliveries while its chunk-mates get their verdicts. A chunk of
one whose passes died `max_deliveries` times gets an error row instead of looping forever
(Redis has no dead-letter queue). Everything else is screened in a micro-batch (alone
when suspect), and rows, cache entries and counters are stored together. A document the
model raises on alone is retried a few times in place, then stored as an error row.

Every Redis call is retried on transient errors; what still fails propagates, and the
task requeues the message.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from alknet_firewall.queue.connection import backoff_s, with_retries
from alknet_firewall.queue.keys import result_field
from alknet_firewall.queue.message import ScreenChunk
from alknet_firewall.queue.settings import WorkerSettings
from alknet_firewall.queue.store import ChunkStart, ChunkStore, Row
from alknet_firewall.rows import result_row
from alknet_firewall.schema import Verdict
from alknet_firewall.screening import Screener
from alknet_firewall_worker.batching import MicroBatcher, Result

T = TypeVar("T")


class Outcome(StrEnum):
    """How a delivered document ended (the `outcome` label of the documents metric)."""

    SCREENED = "screened"
    CACHED = "cached"
    ERROR = "error"
    GAVE_UP = "gave_up"  # an error row after too many deliveries
    DUPLICATE = "duplicate"  # it had its row already


@dataclass(slots=True)
class ChunkReport:
    """What became of one delivered chunk: its documents' outcomes, or a split, or
    nothing (a copy of a chunk split before: its halves carry its documents)."""

    outcomes: Counter[Outcome] = field(default_factory=Counter)
    split: bool = False
    superseded: bool = False

    @property
    def fate(self) -> str:
        """The message's outcome label: stored, split or superseded."""
        return "split" if self.split else "superseded" if self.superseded else "stored"


@dataclass(frozen=True, slots=True)
class Screening:
    """Screens delivered chunks through the batcher and stores their rows."""

    store: ChunkStore
    screener: Screener
    batcher: MicroBatcher
    limits: WorkerSettings
    resend: Callable[[Sequence[ScreenChunk]], None]  # publish chunks (a split's halves)

    def handle(self, chunk: ScreenChunk) -> ChunkReport:
        """Screen the chunk's documents and store their rows, or split it."""
        digests = [doc.digest for doc in chunk.docs]
        fields = [result_field(d.id, digest) for d, digest in zip(chunk.docs, digests, strict=True)]
        version = self.screener.codebook_version
        start = self._redis(
            lambda: self.store.begin_chunk(chunk.job, chunk.id, fields, version, digests)
        )
        pending = [i for i, done in enumerate(start.done) if not done]
        report = ChunkReport()
        report.outcomes[Outcome.DUPLICATE] = len(chunk.docs) - len(pending)
        if start.superseded and pending:
            report.superseded = True
            return report
        if start.started and len(pending) > 1:
            parts = chunk.halves([chunk.docs[i] for i in pending])
            if self._redis(lambda: self.store.replace_chunk(chunk.job, chunk.id, parts)):
                self.resend(parts)
                report.split = True
            else:  # another copy of the chunk was split first
                report.superseded = True
            return report
        answers = self._answers(chunk, pending, start)
        rows: list[Row] = []
        fresh: list[tuple[str, Verdict]] = []  # verdicts the model gave: to cache
        for i, (verdict, outcome) in answers.items():
            rows.append((fields[i], result_row(chunk.docs[i].id, chunk.docs[i].meta, verdict)))
            report.outcomes[outcome] += 1
            if outcome in (Outcome.SCREENED, Outcome.ERROR):
                fresh.append((digests[i], verdict))
        self._redis(lambda: self.store.finish_chunk(chunk.job, chunk.id, rows, fresh))
        return report

    def _answers(
        self, chunk: ScreenChunk, pending: list[int], start: ChunkStart
    ) -> dict[int, tuple[Verdict, Outcome]]:
        """A verdict for each pending document: given up, cached, or from the model."""
        version = self.screener.codebook_version
        if start.started >= self.limits.max_deliveries:
            reason = (
                f"gave up after {start.started} deliveries: the worker died or ran "
                "out of time each time it screened this document"
            )
            return {i: (Verdict.failed(reason, version), Outcome.GAVE_UP) for i in pending}
        answers: dict[int, tuple[Verdict, Outcome]] = {}
        for i in pending:
            cached = start.cached[i]
            if cached is not None:
                answers[i] = (cached, Outcome.CACHED)
        todo = [i for i in pending if i not in answers]
        solo = chunk.suspect or start.started > 0
        verdicts = self._screen([chunk.docs[i].text for i in todo], solo, (chunk.job, chunk.id))
        for i, verdict in zip(todo, verdicts, strict=True):
            answers[i] = (verdict, Outcome.ERROR if verdict.error else Outcome.SCREENED)
        return answers

    def _screen(self, texts: list[str], solo: bool, tag: tuple[str, str]) -> list[Verdict]:
        """Verdicts for `texts`; a document the model raised on alone is tried again
        `model_retries` times (a passing fault, such as memory, does not repeat), then
        gets an error verdict."""
        if not texts:
            return []
        results: list[Result] = self.batcher.submit(texts, solo=solo, tag=tag).result()
        limits = self.limits
        for attempt in range(limits.model_retries):
            failed = [i for i, result in enumerate(results) if not isinstance(result, Verdict)]
            if not failed:
                break
            time.sleep(backoff_s(attempt, limits.retry_backoff_s, limits.retry_backoff_max_s))
            again = self.batcher.submit([texts[i] for i in failed], solo=True, tag=tag).result()
            for i, result in zip(failed, again, strict=True):
                results[i] = result
        version = self.screener.codebook_version
        return [r if isinstance(r, Verdict) else Verdict.failed(str(r), version) for r in results]

    def _redis(self, call: Callable[[], T]) -> T:
        limits = self.limits
        return with_retries(
            call, limits.store_retries, limits.retry_backoff_s, limits.retry_backoff_max_s
        )
