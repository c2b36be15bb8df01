"""The result store's in-memory twin: the same answers as Redis, in dicts.

For millisecond tests of what a worker does with a chunk (duplicate, split, give up,
cache) without Redis or a subprocess; the Redis store's own behaviour under faults is
tested against a real server. Thread-safe, as a threads-pool worker needs.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from alknet_firewall.queue.keys import JobField
from alknet_firewall.queue.message import ScreenChunk
from alknet_firewall.queue.store import ChunkStart, Row
from alknet_firewall.rows import is_error_row
from alknet_firewall.schema import Verdict


class MemoryStore:
    """Rows, passes begun per chunk, outboxes, job counters and the verdict cache."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.deliveries: Counter[tuple[str, str]] = Counter()
        self.chunks: dict[tuple[str, str], ScreenChunk] = {}
        self.counters: dict[str, Counter[str]] = {}
        self.cache: dict[tuple[str, str], Verdict] = {}
        self.codebook: str | None = None
        self._lock = threading.Lock()

    def begin_chunk(
        self, job: str, chunk_id: str, fields: Sequence[str], codebook: str, digests: Sequence[str]
    ) -> ChunkStart:
        with self._lock:
            outbox = {chunk for (j, chunk) in self.chunks if j == job}
            return ChunkStart(
                superseded=bool(outbox) and chunk_id not in outbox,
                started=self.deliveries[(job, chunk_id)],
                done=[(job, field) in self.rows for field in fields],
                cached=[self.cache.get((codebook, digest)) for digest in digests],
            )

    def finish_chunk(
        self, job: str, chunk_id: str, rows: Sequence[Row], verdicts: Sequence[tuple[str, Verdict]]
    ) -> int:
        with self._lock:
            written = 0
            for field, row in rows:
                if (job, field) not in self.rows:
                    self.rows[(job, field)] = row
                    counters = self.counters.setdefault(job, Counter())
                    counters[JobField.DONE] += 1
                    counters[JobField.ERRORS] += is_error_row(row)
                    written += 1
            for digest, verdict in verdicts:
                if verdict.error is None:
                    self.cache[(verdict.codebook_version, digest)] = verdict
            self.deliveries.pop((job, chunk_id), None)
            self.chunks.pop((job, chunk_id), None)
            return written

    def add_chunks(self, job: str, chunks: Sequence[ScreenChunk]) -> None:
        with self._lock:
            self.chunks.update({(job, chunk.id): chunk for chunk in chunks})

    def replace_chunk(self, job: str, chunk_id: str, parts: Sequence[ScreenChunk]) -> bool:
        with self._lock:
            if self.chunks.pop((job, chunk_id), None) is None:
                return False
            self.deliveries.pop((job, chunk_id), None)
            self.chunks.update({(job, part.id): part for part in parts})
            return True

    def count_starts(self, chunks: Sequence[tuple[str, str]]) -> None:
        with self._lock:
            self.deliveries.update(chunks)

    def count_ends(self, chunks: Sequence[tuple[str, str]]) -> None:
        with self._lock:
            for chunk in chunks:
                if chunk in self.deliveries:
                    self.deliveries[chunk] -= 1
                    if self.deliveries[chunk] <= 0:
                        del self.deliveries[chunk]

    def cached_verdict(self, codebook_version: str, digest: str) -> Verdict | None:
        with self._lock:
            return self.cache.get((codebook_version, digest))

    def cache_verdict(self, digest: str, verdict: Verdict) -> None:
        if verdict.error is None:
            with self._lock:
                self.cache[(verdict.codebook_version, digest)] = verdict

    def publish_codebook(self, version: str) -> None:
        self.codebook = version

    def codebook_version(self) -> str | None:
        return self.codebook
