"""The results backend: one verdict row per (job, document id, content digest), in Redis.

Written by workers (and by the producer, for cache hits and unreadable records). A row is
written with HSETNX inside a Lua script that also bumps the job's counters, so a message
delivered twice, or two workers racing on the same document, leave exactly one row and
count it once. Verdicts are also cached by content digest + codebook version, shared by
all jobs: same text, same codebook, same verdict.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

import redis

from alknet_firewall.queue.connection import redis_client
from alknet_firewall.queue.keys import JobField, Keys
from alknet_firewall.queue.settings import QueueSettings
from alknet_firewall.rows import is_error_row
from alknet_firewall.schema import Verdict

# KEYS: results, meta, deliveries. ARGV: field, row JSON, is_error (0/1), now, ttl, and
# the meta fields JobField.DONE, ERRORS, LAST_DONE_AT (named in keys.py only).
_PUT_ROW = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[6], 1)
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[2], ARGV[7], 1) end
redis.call('HSET', KEYS[2], ARGV[8], ARGV[4])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"""

# KEYS: deliveries. ARGV: field. Undo one delivery, unless the row was written meanwhile
# (put_row deletes the field then, and a negative count must not appear).
_FORGIVE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then redis.call('HINCRBY', KEYS[1], ARGV[1], -1) end
"""


class DeliveryStore(Protocol):
    """What a worker needs of the store for one delivery; `memory.MemoryStore` is the
    in-memory twin of `ResultStore`."""

    def begin(self, job: str, field: str) -> tuple[bool, int]: ...

    def put_row(self, job: str, field: str, row: dict[str, Any]) -> bool: ...

    def forgive(self, documents: list[tuple[str, str]]) -> None: ...

    def cached_verdict(self, codebook_version: str, digest: str) -> Verdict | None: ...

    def cache_verdict(self, digest: str, verdict: Verdict) -> None: ...

    def publish_codebook(self, version: str) -> None: ...


class ResultStore:
    """Verdict rows per job, delivery counts, and the shared verdict cache."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._put_row = client.register_script(_PUT_ROW)
        self._forgive = client.register_script(_FORGIVE)

    @classmethod
    def from_settings(cls, settings: QueueSettings) -> ResultStore:
        return cls(redis_client(settings.result_url), Keys.from_settings(settings))

    def begin(self, job: str, field: str) -> tuple[bool, int]:
        """Record one more delivery of a document: (already has a row, deliveries so far)."""
        deliveries = self.keys.job_deliveries(job)
        pipe = self.client.pipeline(transaction=False)
        pipe.hexists(self.keys.job_results(job), field)
        pipe.hincrby(deliveries, field, 1)
        pipe.expire(deliveries, self.keys.results_ttl_s)
        done, count, _ = pipe.execute()
        return bool(done), int(count)

    def put_row(
        self, job: str, field: str, row: dict[str, Any], pipe: redis.client.Pipeline | None = None
    ) -> bool:
        """Write the row unless the document has one; True when this call wrote it.

        With `pipe`, the write is queued there and the return value means nothing.
        """
        k = self.keys
        keys = [k.job_results(job), k.job_meta(job), k.job_deliveries(job)]
        args: list[str | int | float] = [
            field,
            json.dumps(row),
            int(is_error_row(row)),
            time.time(),
            k.results_ttl_s,
            JobField.DONE,
            JobField.ERRORS,
            JobField.LAST_DONE_AT,
        ]
        written = self._put_row(keys=keys, args=args, client=pipe)
        return bool(written)

    def forgive(self, documents: list[tuple[str, str]]) -> None:
        """Take back one delivery of each (job, field): they were never screened."""
        pipe = self.client.pipeline(transaction=False)
        for job, field in documents:
            self._forgive(keys=[self.keys.job_deliveries(job)], args=[field], client=pipe)
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
