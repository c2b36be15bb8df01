"""The re-drive sweep against the real Redis, with no worker: which chunks it sends again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from alknet_firewall.queue.keys import JobField
from alknet_firewall.queue.message import ScreenChunk
from alknet_firewall.queue.redrive import Redrive
from alknet_firewall.queue.store import ResultStore
from alknet_firewall.schema import Document
from tests.queue_helpers import Namespace, Sent, namespace

pytestmark = pytest.mark.redis

CHUNKS = [
    ScreenChunk(job="j", id=f"c{i}", docs=[Document(id=f"d{i}", text=f"text {i}")])
    for i in range(3)
]


@pytest.fixture
def ns() -> Iterator[Namespace]:
    with namespace() as ns:
        yield ns


def outbox(ns: Namespace, quiet_s: float) -> tuple[ResultStore, Redrive, Sent]:
    """Three chunks outstanding in job j, whose last activity was `quiet_s` ago."""
    store = ResultStore.from_settings(ns.settings().queue)
    pipe = store.client.pipeline()
    store.add_chunks(pipe, "j", CHUNKS)
    pipe.execute()
    store.client.hset(store.keys.job_meta("j"), JobField.LAST_SENT_AT, time.time() - quiet_s)
    sent = Sent()
    return store, Redrive(store, store.client, sent, stall_s=10), sent


def hold(ns: Namespace, chunk: ScreenChunk) -> None:
    """Put `chunk`'s message in Kombu's unacked hash, as a worker that reserved it would."""
    message = {"headers": {"id": chunk.task_id, "task": "alknet.screen_chunk"}, "body": "..."}
    ns.client.hset(f"{ns.prefix}unacked", "tag-1", json.dumps([message, "", "screen"]))


def test_a_stalled_job_gets_its_outstanding_chunks_sent_again(ns: Namespace) -> None:
    store, redrive, sent = outbox(ns, quiet_s=11)
    assert redrive.sweep() == {"j": 3}
    assert sorted(c.id for c in sent.chunks) == ["c0", "c1", "c2"]
    meta = ns.client.hgetall(store.keys.job_meta("j"))
    assert meta[JobField.REDRIVEN] == "3" and float(meta[JobField.REDRIVEN_AT]) > time.time() - 5


def test_a_chunk_a_live_worker_holds_is_not_sent_again(ns: Namespace) -> None:
    _, redrive, sent = outbox(ns, quiet_s=11)
    hold(ns, CHUNKS[1])
    assert redrive.sweep() == {"j": 2}
    assert sorted(c.id for c in sent.chunks) == ["c0", "c2"]


def test_nothing_is_sent_before_the_stall_time_or_while_messages_wait(ns: Namespace) -> None:
    store, redrive, sent = outbox(ns, quiet_s=5)
    assert redrive.sweep() == {}
    store.client.hset(store.keys.job_meta("j"), JobField.LAST_SENT_AT, time.time() - 11)
    ns.client.lpush(f"{ns.prefix}screen", "a message somebody will take")
    ns.client.delete(store.keys.redrive_lock)
    assert redrive.sweep() == {} and sent.chunks == []


def test_one_worker_sweeps_at_a_time_and_finished_jobs_are_dropped(ns: Namespace) -> None:
    store, redrive, _ = outbox(ns, quiet_s=11)
    assert redrive.sweep() == {"j": 3}
    meta, lock = store.keys.job_meta("j"), store.keys.redrive_lock
    store.client.hset(meta, JobField.REDRIVEN_AT, time.time() - 11)  # stalled again
    assert redrive.sweep() == {}  # the first sweep's lock still holds
    store.client.delete(lock)
    assert redrive.sweep() == {"j": 3}
    store.client.delete(store.keys.job_chunks("j"), lock)  # every chunk stored
    assert redrive.sweep() == {}
    assert ns.client.zrange(store.keys.jobs, 0, -1) == []
