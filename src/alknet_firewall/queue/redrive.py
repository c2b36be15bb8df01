"""Re-drive: a job whose message was lost is finished without a person.

Every chunk sits in its job's outbox (`job:{job}:chunks`) from before it is published
until all its rows are stored. A message can still vanish: Kombu pops a message (BRPOP)
and records it as unacked in a second command, so one popped just as Redis goes down is
in neither place (celery/kombu#305); a producer can die between the outbox and the
publish. Such a job stalls: documents pending, nothing stored.

`Redrive.sweep`, run by every worker every `redrive_after_s / 4` (one of them at a
time, under a short lock), looks at the jobs with chunks outstanding. A job stalled for
`redrive_after_s` (no row stored, nothing sent) while the broker queue is empty has its
outbox chunks sent again, except those a live worker holds (in Kombu's unacked hash).
Rows are written once per document, so a chunk sent twice costs work, never a duplicate.
The job's meta records how many chunks were re-driven and when (`status` shows it).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from alknet_firewall.queue.broker import queue_length
from alknet_firewall.queue.keys import JobField
from alknet_firewall.queue.message import ScreenChunk
from alknet_firewall.queue.store import ResultStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Redrive:
    """Finds stalled jobs and sends their outstanding chunks again."""

    store: ResultStore
    broker: redis.Redis
    send: Callable[[Sequence[ScreenChunk]], None]
    stall_s: float

    @property
    def interval_s(self) -> float:
        """How often a worker sweeps: a stall is noticed at most this late."""
        return self.stall_s / 4

    def sweep(self) -> dict[str, int]:
        """Re-drive every stalled job; chunks sent per job. Nothing when another worker
        is sweeping, or while messages wait in the queue (they are being worked off)."""
        keys = self.store.keys
        client = self.store.client
        token = uuid.uuid4().hex
        if not client.set(keys.redrive_lock, token, nx=True, px=int(self.interval_s * 1000)):
            return {}
        if queue_length(self.broker, keys) > 0:
            return {}
        sent: dict[str, int] = {}
        held: set[str] | None = None
        for job in [str(j) for j in client.zrange(keys.jobs, 0, -1)]:
            chunks = self._stalled_chunks(job)
            if not chunks:
                continue
            held = self._held_task_ids() if held is None else held
            lost = [chunk for chunk in chunks if chunk.task_id not in held]
            if lost:
                self.send(lost)
                self._record(job, len(lost))
                sent[job] = len(lost)
                log.warning("job %s stalled: re-drove %d chunks", job, len(lost))
        return sent

    def _stalled_chunks(self, job: str) -> list[ScreenChunk]:
        """The job's outbox if the job is stalled; drops a job with nothing outstanding."""
        keys = self.store.keys
        client = self.store.client
        fields = (JobField.LAST_DONE_AT, JobField.LAST_SENT_AT, JobField.REDRIVEN_AT)
        pipe = client.pipeline(transaction=False)
        pipe.hmget(keys.job_meta(job), [JobField.RUN_STARTED_AT, *fields])
        pipe.hlen(keys.job_chunks(job))
        stamps, outstanding = pipe.execute()
        if not outstanding:
            client.zrem(keys.jobs, job)
            return []
        last = max((float(s) for s in stamps if s is not None), default=0.0)
        if time.time() - last < self.stall_s:
            return []
        return [ScreenChunk.model_validate_json(raw) for raw in client.hvals(keys.job_chunks(job))]

    def _held_task_ids(self) -> set[str]:
        """Task ids of the messages workers hold (Kombu's unacked hash: [message, exchange,
        routing key] per delivery tag; the task id is a message header)."""
        held = set()
        for raw in self.broker.hvals(self.store.keys.unacked):
            message = json.loads(raw)[0]
            held.add(str(message.get("headers", {}).get("id")))
        return held

    def _record(self, job: str, chunks: int) -> None:
        keys = self.store.keys
        pipe = self.store.client.pipeline(transaction=False)
        pipe.hincrby(keys.job_meta(job), JobField.REDRIVEN, chunks)
        pipe.hset(keys.job_meta(job), JobField.REDRIVEN_AT, time.time())
        pipe.execute()
