"""What a worker does with one delivered document, apart from Celery's plumbing.

In order: skip it if it already has a row (a redelivery); give up with an error verdict
if it was delivered too often (Redis has no dead-letter queue, and a document that kills
its worker would otherwise loop forever); answer from the verdict cache; else screen it
in a micro-batch, alone if it was delivered before (a suspect), and store the row.
Every Redis call is retried on transient errors; what still fails propagates, and the
task requeues the message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from alknet_firewall.errors import ScreeningError
from alknet_firewall.queue.connection import with_retries
from alknet_firewall.queue.keys import result_field
from alknet_firewall.queue.settings import WorkerSettings
from alknet_firewall.queue.store import DeliveryStore
from alknet_firewall.rows import result_row
from alknet_firewall.schema import Document, Verdict
from alknet_firewall.screening import REASON_MAX_CHARS, Screener
from alknet_firewall_worker.batching import MicroBatcher

T = TypeVar("T")


class Outcome(StrEnum):
    """How a delivered document ended (the `outcome` label of the documents metric)."""

    SCREENED = "screened"
    CACHED = "cached"
    ERROR = "error"
    GAVE_UP = "gave_up"  # an error row after too many deliveries
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Screening:
    """Screens delivered documents through the batcher and stores their rows."""

    store: DeliveryStore
    screener: Screener
    batcher: MicroBatcher
    limits: WorkerSettings

    def handle(self, job: str, doc: Document, *, may_retry: bool) -> Outcome:
        """Screen and store one document; raises ScreeningError only when `may_retry`."""
        digest = doc.digest
        field = result_field(doc.id, digest)
        done, deliveries = self._redis(lambda: self.store.begin(job, field))
        if done:
            return Outcome.DUPLICATE
        version = self.screener.codebook_version
        if deliveries > self.limits.max_deliveries:
            reason = (
                f"gave up after {deliveries - 1} deliveries: the worker died or ran out "
                "of time each time it screened this document"
            )
            self._finish(job, field, doc, Verdict.failed(reason, version))
            return Outcome.GAVE_UP
        cached = self._redis(lambda: self.store.cached_verdict(version, digest))
        if cached is not None:
            self._finish(job, field, doc, cached)
            return Outcome.CACHED
        verdict = self._screen(doc, (job, field), solo=deliveries > 1, may_retry=may_retry)
        self._redis(lambda: self.store.cache_verdict(digest, verdict))
        return self._finish(job, field, doc, verdict)

    def _screen(
        self, doc: Document, tag: tuple[str, str], *, solo: bool, may_retry: bool
    ) -> Verdict:
        try:
            return self._submit(doc, tag, solo=solo)
        except ScreeningError as exc:
            if may_retry:
                raise
            return Verdict.failed(str(exc), self.screener.codebook_version)

    def _submit(self, doc: Document, tag: tuple[str, str], *, solo: bool) -> Verdict:
        try:
            tokens = self.screener.count_tokens([doc.text])[0]
        except Exception as exc:  # the tokenizer is part of the model: same treatment
            reason = f"tokenizer error: {type(exc).__name__}: {exc}"
            raise ScreeningError(reason[:REASON_MAX_CHARS]) from exc
        # The tag lets an overrun forgive the documents that never reached the model.
        return self.batcher.submit(doc.text, tokens, solo=solo, tag=tag).result()

    def _finish(self, job: str, field: str, doc: Document, verdict: Verdict) -> Outcome:
        row = result_row(doc.id, doc.meta, verdict)
        self._redis(lambda: self.store.put_row(job, field, row))
        return Outcome.ERROR if verdict.error is not None else Outcome.SCREENED

    def _redis(self, call: Callable[[], T]) -> T:
        limits = self.limits
        return with_retries(
            call, limits.store_retries, limits.retry_backoff_s, limits.retry_backoff_max_s
        )
