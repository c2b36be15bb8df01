"""The results backend: one verdict row per (job, document id, content digest), in Redis.

Written by workers (and by the producer, for cache hits and unreadable records). Rows are
written with HSETNX inside a Lua script that also bumps the job's counters, so a message
delivered twice, or two workers racing on the same document, leave exactly one row and
count it once. Verdicts are also cached by content digest + codebook version, shared by
all jobs: same text, same codebook, same verdict.

A worker talks to Redis twice per chunk, whatever its size: `begin_chunk` (whether the
chunk is still outstanding, how often it was in a forward pass before, which documents
have rows, which verdicts are cached) and `finish_chunk` (rows, counters, cache entries,
and the chunk off the job's outbox), each one pipeline; and twice per forward pass,
`count_starts` and `count_ends` for the chunks in it: what is left counts the passes that
never ended, the deaths a chunk may have caused.

A chunk id is split at most once (`replace_chunk` is atomic and says whether it won), and a
delivered copy of a chunk that its job's outbox no longer lists is superseded: a copy
already split into halves, which cover its documents. Copies arise where a dead worker's
restored messages meet a re-drive of the same chunks; without both rules each copy of a
poisoned chunk was split again and killed another worker (11 deaths in one fault test).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from alknet_firewall.queue.connection import redis_client
from alknet_firewall.queue.keys import JobField, Keys
from alknet_firewall.queue.message import ScreenChunk
from alknet_firewall.queue.settings import QueueSettings
from alknet_firewall.rows import is_error_row
from alknet_firewall.schema import Verdict

# KEYS: results, meta, deliveries, chunks. ARGV: now, ttl, chunk id, the meta fields
# JobField.DONE, ERRORS, LAST_DONE_AT (named in keys.py only), then (field, row JSON,
# is_error 0/1) for each row. Returns how many rows were new.
_PUT_ROWS = """
local written, errors = 0, 0
for i = 7, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    written = written + 1
    if ARGV[i + 2] == '1' then errors = errors + 1 end
  end
end
if written > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[4], written)
  if errors > 0 then redis.call('HINCRBY', KEYS[2], ARGV[5], errors) end
  redis.call('HSET', KEYS[2], ARGV[6], ARGV[1])
end
if ARGV[3] ~= '' then
  redis.call('HDEL', KEYS[3], ARGV[3])
  redis.call('HDEL', KEYS[4], ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return written
"""

# KEYS: deliveries. ARGV: chunk id. One forward pass on the chunk ended: take it off the
# count, unless the chunk is gone from the count already (finished or split meanwhile).
_END_PASS = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""

# KEYS: chunks, deliveries, meta, jobs. ARGV: chunk id, now, ttl, JobField.LAST_SENT_AT,
# job, then (part id, part JSON) pairs. Puts the parts in the outbox in the chunk's place
# only if the chunk was still there; returns 1 if so, 0 if another copy split it first.
# It repeats `add_chunks`'s bookkeeping because the removal and the additions must be one
# step: a worker dying between them would leave the documents in no outbox entry, and
# its redelivered copy would then be dropped as superseded.
_SPLIT_CHUNK = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[4], 'NX', ARGV[2], ARGV[5])
return 1
"""

Row = tuple[str, dict[str, Any]]  # (result field, row)


@dataclass(frozen=True, slots=True)
class ChunkStart:
    """What Redis knows of a chunk as a worker starts on it."""

    superseded: bool  # the job's outbox lists other chunks but not this one: split before
    started: int  # forward passes on this chunk that began and never ended: deaths
    done: list[bool]  # per document: the job already has its row
    cached: list[Verdict | None]  # per document: the shared cache's verdict


class ChunkStore(Protocol):
    """What a worker needs of the store for one chunk; `memory.MemoryStore` is the
    in-memory twin of `ResultStore`."""

    def begin_chunk(
        self, job: str, chunk_id: str, fields: Sequence[str], codebook: str, digests: Sequence[str]
    ) -> ChunkStart: ...

    def finish_chunk(
        self, job: str, chunk_id: str, rows: Sequence[Row], verdicts: Sequence[tuple[str, Verdict]]
    ) -> int: ...

    def replace_chunk(self, job: str, chunk_id: str, parts: Sequence[ScreenChunk]) -> bool: ...

    def count_starts(self, chunks: Sequence[tuple[str, str]]) -> None: ...

    def count_ends(self, chunks: Sequence[tuple[str, str]]) -> None: ...

    def publish_codebook(self, version: str) -> None: ...


class ResultStore:
    """Verdict rows per job, passes begun per chunk, the jobs' outboxes, the verdict cache."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    @classmethod
    def from_settings(cls, settings: QueueSettings) -> ResultStore:
        return cls(redis_client(settings.result_url), Keys.from_settings(settings))

    def begin_chunk(
        self, job: str, chunk_id: str, fields: Sequence[str], codebook: str, digests: Sequence[str]
    ) -> ChunkStart:
        """Whether the chunk was superseded, how often it entered a forward pass before;
        which documents are done or cached."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(k.job_chunks(job))
        pipe.hexists(k.job_chunks(job), chunk_id)
        pipe.hget(k.job_deliveries(job), chunk_id)
        # HMGET and MGET refuse an empty list of names.
        if fields:
            pipe.hmget(k.job_results(job), list(fields))
        if digests:
            pipe.mget([k.cache(codebook, digest) for digest in digests])
        replies = pipe.execute()
        rows = replies[3] if fields else []
        cached = replies[-1] if digests else []
        return ChunkStart(
            # An empty outbox is gone from Redis: every chunk finished (or the job expired),
            # and the copy goes on to find its documents done, or to screen them.
            superseded=bool(replies[0]) and not replies[1],
            started=int(replies[2] or 0),
            done=[row is not None for row in rows],
            cached=[None if raw is None else Verdict.model_validate_json(raw) for raw in cached],
        )

    def finish_chunk(
        self, job: str, chunk_id: str, rows: Sequence[Row], verdicts: Sequence[tuple[str, Verdict]]
    ) -> int:
        """Store the rows (each once), cache the verdicts, take the chunk off the job's
        outbox and forget its passes begun; how many rows were new."""
        pipe = self.client.pipeline(transaction=False)
        self.put_rows(pipe, job, rows, chunk_id)
        for digest, verdict in verdicts:
            if verdict.error is None:  # an error may pass: never remember it
                key = self.keys.cache(verdict.codebook_version, digest)
                pipe.set(key, verdict.model_dump_json(), ex=self.keys.cache_ttl_s)
        return int(pipe.execute()[0])

    def put_rows(
        self, pipe: redis.client.Pipeline, job: str, rows: Sequence[Row], chunk_id: str = ""
    ) -> None:
        """Queue the rows' write on `pipe` (see _PUT_ROWS); with `chunk_id`, also take that
        chunk off the outbox and forget its passes begun."""
        k = self.keys
        keys = [k.job_results(job), k.job_meta(job), k.job_deliveries(job), k.job_chunks(job)]
        args: list[str | int | float] = [
            time.time(),
            k.results_ttl_s,
            chunk_id,
            JobField.DONE,
            JobField.ERRORS,
            JobField.LAST_DONE_AT,
        ]
        for field, row in rows:
            args += [field, json.dumps(row), int(is_error_row(row))]
        # EVAL, not a registered script: redis-py checks a pipeline's registered scripts
        # with SCRIPT EXISTS first, one more round trip per chunk. Redis caches the
        # compiled script by its digest either way.
        pipe.eval(_PUT_ROWS, len(keys), *keys, *args)

    def add_chunks(
        self, pipe: redis.client.Pipeline, job: str, chunks: Sequence[ScreenChunk]
    ) -> None:
        """Queue on `pipe`: put `chunks` in the job's outbox (before they are published, so
        that a message lost on its way can be sent again) and the job among those the
        re-drive sweep watches."""
        if not chunks:
            return
        k = self.keys
        pipe.hset(k.job_chunks(job), mapping={c.id: c.model_dump_json() for c in chunks})
        pipe.expire(k.job_chunks(job), k.results_ttl_s)
        pipe.hset(k.job_meta(job), JobField.LAST_SENT_AT, time.time())
        pipe.zadd(k.jobs, {job: time.time()}, nx=True)

    def replace_chunk(self, job: str, chunk_id: str, parts: Sequence[ScreenChunk]) -> bool:
        """In the outbox, `parts` (a split chunk's halves) take the place of `chunk_id`, if
        it is still there; False when another copy of the chunk was split (or finished)
        first, and its halves must not be sent twice."""
        k = self.keys
        keys = [k.job_chunks(job), k.job_deliveries(job), k.job_meta(job), k.jobs]
        args: list[str | int | float] = [
            chunk_id,
            time.time(),
            k.results_ttl_s,
            JobField.LAST_SENT_AT,
            job,
        ]
        for part in parts:
            args += [part.id, part.model_dump_json()]
        return bool(self.client.eval(_SPLIT_CHUNK, len(keys), *keys, *args))

    def count_starts(self, chunks: Sequence[tuple[str, str]]) -> None:
        """Count a forward pass begun on each (job, chunk id). Counted as the pass starts,
        not as the message arrives: a worker that dies kills only the pass it was in, and
        the messages queued behind it come back with nothing against them."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        for job, chunk_id in chunks:
            pipe.hincrby(k.job_deliveries(job), chunk_id, 1)
            pipe.expire(k.job_deliveries(job), k.results_ttl_s)
        pipe.execute()

    def count_ends(self, chunks: Sequence[tuple[str, str]]) -> None:
        """Take an ended forward pass off each (job, chunk id)'s count. Without it, a pass
        that ended just before the next one killed the worker counted as a death of its own
        chunk, before the chunk's rows were stored: twice, and a lone document with nothing
        wrong got the poison's error row."""
        pipe = self.client.pipeline(transaction=False)
        for job, chunk_id in chunks:
            pipe.eval(_END_PASS, 1, self.keys.job_deliveries(job), chunk_id)
        pipe.execute()

    def cached_verdict(self, codebook_version: str, digest: str) -> Verdict | None:
        """The verdict this codebook gave the same text before, if still cached."""
        raw = self.client.get(self.keys.cache(codebook_version, digest))
        return None if raw is None else Verdict.model_validate_json(raw)

    def cache_verdict(self, digest: str, verdict: Verdict) -> None:
        """Remember a verdict for every job. Error verdicts are not cached: they may pass."""
        if verdict.error is None:
            key = self.keys.cache(verdict.codebook_version, digest)
            self.client.set(key, verdict.model_dump_json(), ex=self.keys.cache_ttl_s)

    def publish_codebook(self, version: str) -> None:
        """Say which codebook the workers serve, so producers can check the cache."""
        self.client.set(self.keys.codebook, version)

    def codebook_version(self) -> str | None:
        """The codebook version last published by a worker, if any."""
        value = self.client.get(self.keys.codebook)
        return None if value is None else str(value)
