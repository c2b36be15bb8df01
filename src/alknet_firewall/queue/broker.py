"""The Redis broker as Kombu sees it: transport options, and how long the queue is."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import redis

from alknet_firewall.queue.connection import CONNECT_TIMEOUT_S, SOCKET_TIMEOUT_S
from alknet_firewall.queue.keys import Keys
from alknet_firewall.queue.settings import QueueSettings


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
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
    }


_CERT_REQS = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}
_SSL_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def ssl_options(url: str) -> dict[str, Any] | None:
    """Kombu's TLS options (`broker_use_ssl`) for a rediss:// broker URL; None otherwise.

    Given a rediss:// URL without `ssl_cert_reqs`, Kombu only logs a warning and does not
    verify the server's certificate, while redis-py (the result store) does. So the
    broker verifies too: the certificate is required unless the URL says otherwise, and
    checked against `?ssl_ca_certs=/path/ca.pem` or the system's CAs; `ssl_certfile` and
    `ssl_keyfile` give a client certificate. The same URL works for `result_url`.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return None
    query = dict(parse_qsl(parts.query))
    reqs = query.get("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    if reqs not in _CERT_REQS:
        raise ValueError(
            f"ssl_cert_reqs={query['ssl_cert_reqs']!r} in the broker URL: use required, "
            "optional or none"
        )
    options: dict[str, Any] = {"ssl_cert_reqs": _CERT_REQS[reqs]}
    options |= {key: query[key] for key in _SSL_FILES if key in query}
    return options


def queue_length(client: redis.Redis, keys: Keys, queue: str | None = None) -> int:
    """Messages waiting in `queue` (all priority lists), not counting reserved ones."""
    pipe = client.pipeline(transaction=False)
    for name in keys.queue_lists(queue):
        pipe.llen(name)
    return sum(int(n) for n in pipe.execute())
