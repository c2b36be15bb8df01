"""Every Redis key the queue side uses, every hash field and every TTL, in one place.

All keys start with `[queue].key_prefix` ("alknet:" by default). Kombu gets the same
prefix as its `global_keyprefix`, so the broker's own keys (the queue list, `unacked`,
`unacked_index`, `_kombu.binding.*`) live under it too: one deployment, or one test, owns
exactly the keys that start with its prefix.

Per job (expire `results.ttl_s` after the last write):
    job:{job}:meta        hash    counters and timestamps: the fields of `JobField`
    job:{job}:docs        zset    result field -> input position: the job's documents, in order
    job:{job}:results     hash    result field -> the output row (JSON), written once (HSETNX)
    job:{job}:deliveries  hash    chunk id -> forward passes begun on that chunk and never
                                  finished (no DLQ in Redis). Until 2026-11 the field was a
                                  document's result field, counting deliveries.
    job:{job}:chunks      hash    chunk id -> the message (JSON) until all its rows are stored
                                  or it is split into halves: what a re-drive sends again when
                                  a message was lost; a delivered chunk that a non-empty outbox
                                  does not list is a superseded copy, and is dropped
Shared:
    jobs                       zset    jobs with chunks outstanding -> when registered; the
                                       re-drive sweep reads it and drops finished jobs
    redrive-lock               string  held by the one worker sweeping for stalled jobs
    cache:{codebook}:{digest}  string  verdict JSON for that text under that codebook
                                       (expires `results.cache_ttl_s` after it was written)
    codebook                   string  codebook version the workers serve (no expiry: the
                                       last worker to start wins, and a stale value only
                                       costs the producer some cache misses)
Kombu's, read or refreshed by us:
    {queue}, {queue}\x06\x16{3,6,9}  lists  waiting messages (LLEN is the queue length)
    unacked               hash    delivery tag -> message a worker holds, not yet acked
    unacked_index         zset    delivery tag -> when it was delivered, or last refreshed by
                                  the holder's heartbeat; older than the visibility timeout
                                  means its worker is gone, and Kombu puts it back in the queue
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from alknet_firewall.queue.settings import QueueSettings

# Kombu's Redis transport puts priority p > 0 in `queue + SEP + p`: count those lists too.
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)


class JobField(StrEnum):
    """The fields of a job's meta hash (`job:{job}:meta`)."""

    SOURCE = "source"  # the input the last `enqueue` run read
    RUN_STARTED_AT = "run_started_at"  # when that run started (epoch seconds)
    DONE_AT_RUN_START = "done_at_run_start"  # rows stored before it: docs/s counts from here
    ENQUEUE_FINISHED_AT = "enqueue_finished_at"  # present once the input is fully sent
    LAST_SENT_AT = "last_sent_at"  # the last message sent (enqueue, a split, a re-drive)
    # Written by a re-drive: chunks sent again, and when it last happened.
    REDRIVEN = "redriven"
    REDRIVEN_AT = "redriven_at"
    # Added to by the producer, reset at each run:
    READ = "read"
    SENT = "sent"
    SKIPPED = "skipped"
    READ_ERRORS = "read_errors"
    # Added to by whoever stores a row (the store's Lua script):
    DONE = "done"
    ERRORS = "errors"
    LAST_DONE_AT = "last_done_at"


# The counters one `enqueue` run adds to (the store adds DONE and ERRORS).
PRODUCER_COUNTERS = (JobField.READ, JobField.SENT, JobField.SKIPPED, JobField.READ_ERRORS)

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_job_name(job: str) -> str:
    """Return `job` if it is a usable job name, else raise ValueError saying what is."""
    if not JOB_NAME.match(job):
        raise ValueError(
            f"bad job name {job!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return job


def result_field(doc_id: str, digest: str) -> str:
    """A document's field in its job's hashes: content digest, then id (idempotency key)."""
    return f"{digest}:{doc_id}"


def error_field(position: int) -> str:
    """The field of an input record that could not be read: its position in the input.

    Reading is deterministic, so a re-run of the same input gives the same field and
    writes no second row.
    """
    return f"error:{position}"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names and TTLs for one key prefix."""

    prefix: str
    queue_name: str
    results_ttl_s: int
    cache_ttl_s: int

    @classmethod
    def from_settings(cls, settings: QueueSettings) -> Keys:
        return cls(
            prefix=settings.key_prefix,
            queue_name=settings.queue,
            results_ttl_s=settings.results.ttl_s,
            cache_ttl_s=settings.results.cache_ttl_s,
        )

    def job_meta(self, job: str) -> str:
        return f"{self.prefix}job:{job}:meta"

    def job_docs(self, job: str) -> str:
        return f"{self.prefix}job:{job}:docs"

    def job_results(self, job: str) -> str:
        return f"{self.prefix}job:{job}:results"

    def job_deliveries(self, job: str) -> str:
        return f"{self.prefix}job:{job}:deliveries"

    def job_chunks(self, job: str) -> str:
        return f"{self.prefix}job:{job}:chunks"

    def job_keys(self, job: str) -> tuple[str, ...]:
        return (
            self.job_meta(job),
            self.job_docs(job),
            self.job_results(job),
            self.job_deliveries(job),
            self.job_chunks(job),
        )

    @property
    def jobs(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def redrive_lock(self) -> str:
        return f"{self.prefix}redrive-lock"

    @property
    def unacked(self) -> str:
        return f"{self.prefix}unacked"

    @property
    def unacked_index(self) -> str:
        return f"{self.prefix}unacked_index"

    def cache(self, codebook_version: str, digest: str) -> str:
        return f"{self.prefix}cache:{codebook_version}:{digest}"

    @property
    def codebook(self) -> str:
        return f"{self.prefix}codebook"

    def queue_lists(self, queue: str | None = None) -> list[str]:
        """The broker lists holding `queue`'s waiting messages, one per priority step."""
        base = self.prefix + (queue or self.queue_name)
        return [base] + [f"{base}{KOMBU_PRIORITY_SEP}{p}" for p in KOMBU_PRIORITY_STEPS]
