"""Counting forward passes that never ended, in Redis and in its in-memory twin.

A chunk's count is what makes it a suspect (split, run solo) and, for a lone document, what
ends it with an error row: it must count the passes a worker died in, and no other.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from alknet_firewall.queue.memory import MemoryStore
from alknet_firewall.queue.message import ScreenChunk
from alknet_firewall.queue.store import ChunkStore, ResultStore
from alknet_firewall.schema import Document, Verdict
from tests.queue_helpers import eager_batcher, fake_verdict, namespace

CHUNK = ScreenChunk(job="j", id="c", docs=[Document(id="d0", text="text")])


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> Iterator[ChunkStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    with namespace() as ns:
        yield ResultStore.from_settings(ns.settings().queue)


def started(store: ChunkStore, chunk: ScreenChunk = CHUNK) -> int:
    return store.begin_chunk(chunk.job, chunk.id, [], "cb", []).started


def test_a_pass_that_ended_is_no_death_and_one_that_did_not_is(store: ChunkStore) -> None:
    store.count_starts([("j", "c")])
    store.count_ends([("j", "c")])
    assert started(store) == 0
    store.count_starts([("j", "c")])  # the worker dies in this one
    store.count_starts([("j", "c")])  # a redelivery's pass, which ends
    store.count_ends([("j", "c")])
    assert started(store) == 1


def test_an_end_after_the_rows_were_stored_leaves_no_negative_count(store: ChunkStore) -> None:
    store.count_starts([("j", "c")])
    store.finish_chunk("j", "c", [], [])  # forgets the chunk's passes
    store.count_ends([("j", "c")])
    store.count_starts([("j", "c")])  # a later copy's pass counts from zero
    assert started(store) == 1


def test_a_pass_is_off_the_count_before_its_callers_get_their_verdicts() -> None:
    # The batcher is serial: if the callers (who store the rows) only wake after the end is
    # counted, a next pass that kills the worker can never find this one still counted.
    store = MemoryStore()
    counts_seen: list[int] = []

    def screen(texts: Sequence[str]) -> list[Verdict]:
        counts_seen.append(started(store))
        return [fake_verdict(t) for t in texts]

    batcher = eager_batcher(
        screen,
        on_start=lambda tags: store.count_starts([("j", "c")] * len(tags)),
        on_end=lambda tags: store.count_ends([("j", "c")] * len(tags)),
    )
    try:
        result = batcher.submit(["text"], solo=True, tag=("j", "c")).result(timeout=10)
        assert started(store) == 0
    finally:
        batcher.close()
    assert counts_seen == [1] and result == [fake_verdict("text")]
