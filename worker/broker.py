"""The Redis broker as Kombu sees it: transport options, and how long the queue is."""

from __future__ import annotations

from typing import Any

import redis

from alknet_firewall.queue_settings import QueueSettings
from worker.keys import Keys


def transport_options(settings: QueueSettings) -> dict[str, Any]:
    """Kombu Redis transport options derived from the [queue] settings.

    Unacked messages (those a worker reserved, acks are late) come back to the queue once
    older than `visibility_timeout`; Kombu looks for them every `unacked_restore_interval`
    x `unacked_restore_throttle` seconds (100 s by default). We scan every tenth of the
    visibility timeout (1 to 60 s), so that a message is redelivered soon after it
    becomes due, not up to 100 s later. The scan reads a sorted set: cheap.
    """
    return {
        "visibility_timeout": settings.visibility_timeout_s,
        "global_keyprefix": settings.key_prefix,
        "unacked_restore_interval": min(60, max(1, settings.visibility_timeout_s // 10)),
        "unacked_restore_throttle": 1,
        # A broker that vanishes without closing the socket must not hang a publish.
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
    }


def queue_length(client: redis.Redis, keys: Keys, queue: str | None = None) -> int:
    """Messages waiting in `queue` (all priority lists), not counting reserved ones."""
    pipe = client.pipeline(transaction=False)
    for name in keys.queue_lists(queue):
        pipe.llen(name)
    return sum(int(n) for n in pipe.execute())
