"""The result store's in-memory twin: the same answers as Redis, in dicts.

For millisecond tests of what a worker does with a delivery (duplicate, give up, cache,
solo) without Redis or a subprocess; the Redis store's own behaviour under faults is
tested against a real server. Thread-safe, as a threads-pool worker needs.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from alknet_firewall.queue.keys import JobField
from alknet_firewall.rows import is_error_row
from alknet_firewall.schema import Verdict


class MemoryStore:
    """Rows, delivery counts, job counters and the verdict cache of one process."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.deliveries: Counter[tuple[str, str]] = Counter()
        self.counters: dict[str, Counter[str]] = {}
        self.cache: dict[tuple[str, str], Verdict] = {}
        self.codebook: str | None = None
        self._lock = threading.Lock()

    def begin(self, job: str, field: str) -> tuple[bool, int]:
        with self._lock:
            self.deliveries[(job, field)] += 1
            return (job, field) in self.rows, self.deliveries[(job, field)]

    def put_row(self, job: str, field: str, row: dict[str, Any]) -> bool:
        with self._lock:
            if (job, field) in self.rows:
                return False
            self.rows[(job, field)] = row
            counters = self.counters.setdefault(job, Counter())
            counters[JobField.DONE] += 1
            counters[JobField.ERRORS] += is_error_row(row)
            self.deliveries.pop((job, field), None)
            return True

    def forgive(self, documents: list[tuple[str, str]]) -> None:
        with self._lock:
            for key in documents:
                if self.deliveries.get(key, 0) > 0:
                    self.deliveries[key] -= 1

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
