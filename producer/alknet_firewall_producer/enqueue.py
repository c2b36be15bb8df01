"""`alknet-firewall enqueue`: stream an input into the queue, a chunk of documents per message.

Memory stays flat whatever the input's size: records are read lazily, handled in chunks
of `[queue.producer].chunk_size`, and a chunk is only sent while the broker queue is
shorter than `max_queue_length` messages (backpressure: the producer waits for the
workers). Per chunk of input, one pipelined round trip registers the documents and looks
them up; one writes rows, counters and the job's outbox (the messages about to be sent,
kept until their rows are stored: see queue.redrive); one publishes the messages (Kombu's
publish batch), each holding up to `message_docs` documents and `message_chars` characters.

Nothing is sent twice for nothing: a document whose job already has its row is skipped
(a re-run of a finished job sends nothing), and one whose text has a cached verdict
under the codebook the workers serve gets its row from the cache. The producer has no
model, so it learns that codebook version from the key the workers publish at start-up;
before any worker has run, every document is sent (the workers check the cache too).
A record the reader cannot turn into a document (`UnreadableRecord`) is stored as an error
row, so rows in = rows out.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from kombu.exceptions import BatchPublishError, OperationalError
from kombu.utils.url import maybe_sanitize_url
from redis.exceptions import AuthenticationError

from alknet_firewall.config import Settings
from alknet_firewall.errors import QueueUnavailable
from alknet_firewall.queue.app import FirewallApp, create_app
from alknet_firewall.queue.broker import queue_length
from alknet_firewall.queue.connection import TRANSIENT_ERRORS, redis_client, with_retries
from alknet_firewall.queue.jobs import JobBook, Lookup
from alknet_firewall.queue.keys import JobField, check_job_name, error_field, result_field
from alknet_firewall.queue.message import ScreenChunk, pack
from alknet_firewall.queue.store import ResultStore, Row
from alknet_firewall.rows import result_row, unreadable_row
from alknet_firewall.schema import Document, Verdict
from alknet_firewall.sources import Format, Record, UnreadableRecord, read_records

T = TypeVar("T")
# What the producer retries with backoff: Redis away, or a publish pipeline that failed.
_UNREACHABLE: tuple[type[Exception], ...] = (
    *TRANSIENT_ERRORS,
    OperationalError,
    BatchPublishError,
)


@dataclass(slots=True)
class EnqueueReport:
    """What one `enqueue` run did; also kept in the job's counters."""

    job: str
    read: int = 0  # records read: documents and unreadable records
    sent: int = 0  # documents sent (in `messages` messages)
    messages: int = 0
    skipped: int = 0  # documents that already had a row, or got one from the cache
    read_errors: int = 0  # unreadable records, stored as error rows
    waited_s: float = 0.0  # time spent waiting for the queue to shrink


@dataclass(slots=True)
class _Chunk:
    """One chunk's work, sorted out after the lookup."""

    to_send: list[Document] = dataclasses.field(default_factory=list)
    rows: list[Row] = dataclasses.field(default_factory=list)
    skipped: int = 0
    read_errors: int = 0


class Enqueuer:
    """Sends one input to the queue for one job."""

    def __init__(self, settings: Settings, job: str) -> None:
        self.settings = settings
        self.q = settings.queue
        self.job = check_job_name(job)
        self.store = ResultStore.from_settings(self.q)
        self.book = JobBook(self.store)
        self.broker = redis_client(self.q.broker_url)
        self.app: FirewallApp = create_app(settings)
        self.report = EnqueueReport(job)

    def run(
        self, records: Iterable[Record], source: str, on_chunk: Callable[[EnqueueReport], None]
    ) -> EnqueueReport:
        """Send every record; `on_chunk` sees the report after each chunk."""
        base = self._retry(lambda: self.book.start_run(self.job, source))
        codebook = self._retry(self.store.codebook_version)
        numbered = enumerate(records)
        while chunk := list(itertools.islice(numbered, self.q.producer.chunk_size)):
            self._wait_for_room()
            self._send_chunk(chunk, base, codebook)
            on_chunk(self.report)
        self._retry(lambda: self.book.finish_run(self.job))
        return self.report

    def _send_chunk(self, chunk: list[tuple[int, Record]], base: int, codebook: str | None) -> None:
        entries = [_entry(pos, rec, base, self.store, codebook) for pos, rec in chunk]
        found = self._retry(lambda: self.book.look_up(self.job, entries))
        work = _sort_out(chunk, entries, found, codebook)
        p = self.q.producer
        messages = list(pack(self.job, work.to_send, p.message_docs, p.message_chars))
        counts = {
            JobField.READ: len(chunk),
            JobField.SENT: len(work.to_send),
            JobField.SKIPPED: work.skipped,
            JobField.READ_ERRORS: work.read_errors,
        }
        self._retry(lambda: self._store(work.rows, messages, counts))
        self._retry(lambda: self.app.send_chunks(messages, retry=False))
        self.report.sent += len(work.to_send)
        self.report.messages += len(messages)
        self.report.read += len(chunk)
        self.report.skipped += work.skipped
        self.report.read_errors += work.read_errors

    def _store(
        self, rows: Sequence[Row], messages: Sequence[ScreenChunk], counts: dict[JobField, int]
    ) -> None:
        """Rows of cache hits and unreadable records, the outbox, counters: one pipeline,
        before the messages are published."""
        pipe = self.store.client.pipeline(transaction=False)
        if rows:
            self.store.put_rows(pipe, self.job, rows)
        self.store.add_chunks(pipe, self.job, messages)
        self.book.add_counts(self.job, counts, pipe)
        pipe.execute()

    def _wait_for_room(self) -> None:
        limit = self.q.producer.max_queue_length
        started = time.monotonic()
        while self._retry(lambda: queue_length(self.broker, self.store.keys)) > limit:
            time.sleep(self.q.producer.backpressure_poll_s)
        self.report.waited_s += time.monotonic() - started

    def _retry(self, call: Callable[[], T]) -> T:
        """`call()` with retries and backoff while Redis is unreachable, then give up."""
        p = self.q.producer
        try:
            return with_retries(
                call, p.connect_retries, p.connect_backoff_s, transient=_UNREACHABLE
            )
        except AuthenticationError as exc:
            # Not retried (see with_retries): say so at once, not after a minute of backoff.
            raise QueueUnavailable(self._unavailable(exc, refused=True)) from exc
        except _UNREACHABLE as exc:
            raise QueueUnavailable(self._unavailable(exc)) from exc

    def _unavailable(self, exc: Exception, *, refused: bool = False) -> str:
        r = self.report
        # URLs may carry a password: this message goes to terminals and CI logs.
        broker, results = (maybe_sanitize_url(u) for u in (self.q.broker_url, self.q.result_url))
        what = (
            "Redis refused the credentials"
            if refused
            else f"Redis unreachable after {self.q.producer.connect_retries} retries"
        )
        return (
            f"{what} ({type(exc).__name__}: {exc}); broker {broker}, "
            f"results {results}. Job {r.job!r} so far: {r.read} read, "
            f"{r.sent} sent, {r.skipped} skipped, {r.read_errors} unreadable. "
            "Run the same command again to send the rest: documents already sent "
            "are screened once."
        )


def _entry(
    position: int, record: Record, base: int, store: ResultStore, codebook: str | None
) -> tuple[str, int, str | None]:
    """(field, position in the job, cache key to look up) for one record."""
    if isinstance(record, UnreadableRecord):
        return error_field(position), base + position, None
    digest = record.digest
    cache_key = None if codebook is None else store.keys.cache(codebook, digest)
    return result_field(record.id, digest), base + position, cache_key


def _sort_out(
    chunk: list[tuple[int, Record]],
    entries: list[tuple[str, int, str | None]],
    found: list[Lookup],
    codebook: str | None,
) -> _Chunk:
    work = _Chunk()
    for (_, record), (field, _, _), lookup in zip(chunk, entries, found, strict=True):
        if isinstance(record, UnreadableRecord):
            work.read_errors += 1
            work.rows.append((field, unreadable_row(record, codebook)))
        elif lookup.done:
            work.skipped += 1
        elif lookup.cached is not None:
            work.skipped += 1
            verdict = Verdict.model_validate_json(lookup.cached)
            work.rows.append((field, result_row(record.id, record.meta, verdict)))
        else:
            work.to_send.append(record)
    return work


def enqueue(
    settings: Settings,
    source: str,
    job: str,
    *,
    fmt: Format = "auto",
    on_chunk: Callable[[EnqueueReport], None] = lambda _: None,
) -> EnqueueReport:
    """Read `source` (JSONL, CSV, chat log, folder or "-") and queue it as `job`."""
    records: Iterator[Record] = read_records(source, fmt=fmt, max_chars=settings.limits.max_chars)
    return Enqueuer(settings, job).run(records, source, on_chunk)
