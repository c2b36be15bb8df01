"""`QueueScreener`: `screen_batch` answered by a running worker fleet.

It has the shape of `Firewall.screen_batch` (texts in, one verdict each out, in order),
so whatever takes a screener (the ingestion hooks in `alknet_firewall.integrations`,
the screening service) can hand a corpus too large for its own process to the fleet
without knowing about queues. Each call is one job: the texts are enqueued as
documents `0..n-1` (with backpressure, like `alknet-firewall enqueue`), the call waits
until every row is stored, and the rows come back as verdicts. Texts the verdict cache
already knows are answered from it without reaching a worker.

The job's keys stay in Redis for `[queue] results_ttl_s`, as for any job, so a call that
timed out can still be read with `alknet-firewall results NAME`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from alknet_firewall.config import Settings, load_settings
from alknet_firewall.errors import AlknetError
from alknet_firewall.queue.jobs import JobBook
from alknet_firewall.queue.keys import check_job_name
from alknet_firewall.queue.store import ResultStore
from alknet_firewall.schema import Document, Verdict
from alknet_firewall_producer.enqueue import Enqueuer


class QueueTimeout(AlknetError, TimeoutError):
    """The fleet did not finish a job in time (no worker running, or too few)."""


class QueueScreener:
    """Screens through the queue; needs Redis and at least one running worker."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        job_prefix: str = "screen",
        timeout_s: float = 3600.0,
        poll_s: float = 0.2,
    ) -> None:
        self.settings = settings or load_settings()
        self.job_prefix = check_job_name(job_prefix)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.jobs: list[str] = []  # the jobs this screener ran, oldest first

    def screen_batch(self, texts: Sequence[str]) -> list[Verdict]:
        """One job for `texts`; blocks until its last row is stored."""
        if not texts:
            return []
        job = f"{self.job_prefix}-{uuid.uuid4().hex}"
        self.jobs.append(job)
        docs = [Document(id=str(i), text=text) for i, text in enumerate(texts)]
        Enqueuer(self.settings, job).run(docs, f"QueueScreener ({len(docs)} texts)", _quiet)
        book = JobBook(ResultStore.from_settings(self.settings.queue))
        self._wait(book, job)
        rows = list(book.rows(job))
        if len(rows) != len(texts) or any(row is None for row in rows):
            raise AlknetError(f"job {job}: {len(rows)} rows for {len(texts)} texts")
        fields = Verdict.model_fields
        return [
            Verdict.model_validate({k: v for k, v in r.items() if k in fields}) for r in rows if r
        ]

    def _wait(self, book: JobBook, job: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not ((progress := book.progress(job)) is not None and progress.finished):
            if time.monotonic() > deadline:
                done = 0 if progress is None else progress.done
                raise QueueTimeout(
                    f"job {job}: {done} of its documents screened after {self.timeout_s:.0f} s; "
                    "is a worker running (`alknet-firewall worker`)? The job goes on: "
                    f"`alknet-firewall results {job}` reads its rows later"
                )
            time.sleep(self.poll_s)


def _verdict(row: dict[str, Any]) -> Verdict:
    """The verdict a row was made from (its other fields are the input's)."""
    return Verdict.model_validate({k: v for k, v in row.items() if k in Verdict.model_fields})


def _quiet(_: object) -> None:
    """No per-chunk progress: the caller waits for the whole job."""
