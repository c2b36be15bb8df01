"""Heartbeats: a live worker keeps the messages it holds from being taken for a dead one's.

Kombu's Redis transport files every delivered message in a sorted set (`unacked_index`)
under the time it was delivered, and any consumer puts a message back in the queue once
that time is older than the visibility timeout (kombu/transport/redis.py, `QoS.append` and
`QoS.restore_visible`). Without heartbeats the timeout must outlast the longest a message
can be held (reserved, queued behind other chunks in the batcher, screened), an hour in
our old config, so a dead worker's messages waited an hour. Here each worker re-files the
messages it still holds under the current time every `[queue] visibility_timeout_s / 6`
seconds (one ZADD XX per beat), so the timeout only has to outlast a few missed beats:
60 s by default, and a SIGKILLed worker's messages are delivered again about a minute
later. If a beat comes too late (Redis away for longer), a message may be delivered
twice at once; rows are written once per document, so that costs work, not correctness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from celery.worker import state

log = logging.getLogger(__name__)


def held_delivery_tags() -> list[str]:
    """Delivery tags of the messages this worker process holds (reserved or running).

    Celery's `reserved_requests` is a WeakSet that the consumer thread changes while we
    read it; a copy that raced with a change is simply taken again.
    """
    for _ in range(5):
        try:
            requests = list(state.reserved_requests)
        except RuntimeError:  # "set changed size during iteration"
            continue
        return [str(r.message.delivery_tag) for r in requests if r.message is not None]
    return []


def beat(client: redis.Redis, unacked_index: str, tags: list[str]) -> int:
    """Re-file `tags` under the current time; tags no longer in the index (acked, or put
    back by a sweep meanwhile) are not added back. Returns how many were refreshed."""
    if not tags:
        return 0
    now = time.time()
    changed = client.zadd(unacked_index, dict.fromkeys(tags, now), xx=True, ch=True)
    return int(changed or 0)


def every(seconds: float, name: str, work: Callable[[], object]) -> threading.Thread:
    """Run `work` every `seconds` on a daemon thread, logging (never raising) its errors."""

    def loop() -> None:
        while True:
            time.sleep(seconds)
            try:
                work()
            except Exception:
                log.warning("%s failed; trying again in %.0f s", name, seconds, exc_info=True)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread
