"""A job's bookkeeping in Redis: its documents, counters, progress and rows.

A job is the set of documents of one input, named by the user. Its documents are a
sorted set (field -> input position), so a job knows its size and its order without
the producer holding anything; the workers' rows land in the results hash (see
`store`). Enqueuing the same input again resumes or, for a finished job, does
nothing: a job name stands for one input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from alknet_firewall.queue.keys import PRODUCER_COUNTERS, JobField
from alknet_firewall.queue.store import ResultStore


@dataclass(frozen=True, slots=True)
class JobProgress:
    """A snapshot of a job, as `alknet-firewall status` shows it."""

    job: str
    total: int  # documents and unreadable records known so far
    done: int  # rows stored (verdicts, cache hits and error rows)
    errors: int  # rows whose decision is "error"
    counters: dict[str, int]
    run_started_at: float
    enqueue_finished: bool
    done_at_run_start: int
    last_done_at: float | None
    redriven: int = 0  # chunks sent again because the job had stalled (queue.redrive)
    redriven_at: float | None = None  # when that last happened

    @property
    def pending(self) -> int:
        return max(0, self.total - self.done)

    @property
    def finished(self) -> bool:
        return self.enqueue_finished and self.pending == 0

    @property
    def docs_per_second(self) -> float | None:
        """Rows stored per second since this run of `enqueue` started."""
        done = self.done - self.done_at_run_start
        if self.last_done_at is None or done <= 0:
            return None
        return done / max(self.last_done_at - self.run_started_at, 1e-3)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What Redis knows of one record of a chunk."""

    done: bool  # the job already has its row
    cached: str | None  # verdict JSON from the shared cache, if any


class JobBook:
    """Reads and writes a job's bookkeeping keys."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.client = store.client
        self.keys = store.keys

    def start_run(self, job: str, source: str) -> int:
        """Mark the start of an `enqueue` run; returns the position of its first record."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(k.job_docs(job))
        pipe.hlen(k.job_results(job))
        base, done = pipe.execute()
        meta: dict[FieldT, EncodableT] = {
            JobField.SOURCE: source,
            JobField.RUN_STARTED_AT: time.time(),
            JobField.DONE_AT_RUN_START: int(done),
        }
        pipe.hset(k.job_meta(job), mapping=meta)
        pipe.hdel(k.job_meta(job), JobField.ENQUEUE_FINISHED_AT, *PRODUCER_COUNTERS)
        self._refresh_expiry(pipe, job)
        pipe.execute()
        return int(base)

    def look_up(self, job: str, entries: Sequence[tuple[str, int, str | None]]) -> list[Lookup]:
        """Register (field, position, cache key or None) entries; say which are done."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        for field, position, cache_key in entries:
            pipe.zadd(k.job_docs(job), {field: position}, nx=True)
            pipe.hexists(k.job_results(job), field)
            if cache_key is not None:
                pipe.get(cache_key)
        replies = iter(pipe.execute())
        found = []
        for _, _, cache_key in entries:
            next(replies)  # ZADD: whether the field is new does not change what to do
            done = bool(next(replies))
            cached = next(replies) if cache_key is not None else None
            found.append(Lookup(done, cached))
        return found

    def add_counts(
        self, job: str, deltas: Mapping[JobField, int], pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Add to the job's producer counters (see PRODUCER_COUNTERS) and keep its keys
        alive; queued on `pipe` when given, else sent at once."""
        own = pipe is None
        pipe = self.client.pipeline(transaction=False) if pipe is None else pipe
        for name, delta in deltas.items():
            if delta:
                pipe.hincrby(self.keys.job_meta(job), name, delta)
        self._refresh_expiry(pipe, job)
        if own:
            pipe.execute()

    def finish_run(self, job: str) -> None:
        """Mark the input as fully enqueued: the job is done once every row is stored."""
        self.client.hset(self.keys.job_meta(job), JobField.ENQUEUE_FINISHED_AT, time.time())

    def progress(self, job: str) -> JobProgress | None:
        """The job's progress, or None when Redis knows no such job."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(k.job_meta(job))
        pipe.zcard(k.job_docs(job))
        pipe.hlen(k.job_results(job))
        meta, total, done = pipe.execute()
        if not meta:
            return None
        last = meta.get(JobField.LAST_DONE_AT)
        redriven_at = meta.get(JobField.REDRIVEN_AT)
        return JobProgress(
            job=job,
            total=int(total),
            done=int(done),
            errors=int(meta.get(JobField.ERRORS, 0)),
            counters={str(name): int(meta.get(name, 0)) for name in PRODUCER_COUNTERS},
            run_started_at=float(meta.get(JobField.RUN_STARTED_AT, 0.0)),
            enqueue_finished=JobField.ENQUEUE_FINISHED_AT in meta,
            done_at_run_start=int(meta.get(JobField.DONE_AT_RUN_START, 0)),
            last_done_at=None if last is None else float(last),
            redriven=int(meta.get(JobField.REDRIVEN, 0)),
            redriven_at=None if redriven_at is None else float(redriven_at),
        )

    def rows(self, job: str, chunk: int = 1000) -> Iterator[dict[str, Any] | None]:
        """Every document's row in input order; None for one not screened yet."""
        k = self.keys
        start = 0
        while fields := self.client.zrange(k.job_docs(job), start, start + chunk - 1):
            for raw in self.client.hmget(k.job_results(job), [str(f) for f in fields]):
                yield None if raw is None else json.loads(raw)
            start += chunk

    def _refresh_expiry(self, pipe: Any, job: str) -> None:
        for key in self.keys.job_keys(job):
            pipe.expire(key, self.keys.results_ttl_s)
