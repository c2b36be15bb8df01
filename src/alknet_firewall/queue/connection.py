"""Talking to Redis: one client factory, one set of timeouts, one retry helper.

The broker (Kombu), the result store and the producer all use these numbers, so a
Redis that vanishes without closing its sockets costs every component the same wait.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.exceptions import AuthenticationError, BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# A reply that takes longer means a dead peer, not a slow one: every call we make is small.
SOCKET_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 5
# Below the usual 30-60 s idle timeouts of load balancers and NAT tables.
HEALTH_CHECK_INTERVAL_S = 25

# What a retry can fix: the server is away, slow or still loading its data. Anything else
# (a wrong type, a script error) is a bug, and retrying it only hides it.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
)

T = TypeVar("T")


def redis_client(url: str) -> redis.Redis:
    """A client that returns str and gives up on a dead connection instead of hanging."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )


def backoff_s(attempt: int, first_s: float, cap_s: float = math.inf) -> float:
    """The wait before retry number `attempt` (0-based): `first_s`, doubled each time, capped."""
    return min(first_s * 2.0**attempt, cap_s)


def with_retries(
    call: Callable[[], T],
    retries: int,
    first_s: float,
    cap_s: float = math.inf,
    transient: tuple[type[Exception], ...] = TRANSIENT_ERRORS,
) -> T:
    """`call()`, retried up to `retries` times on `transient` errors with exponential
    backoff; the last error propagates.

    A refused password is never retried: redis-py's AuthenticationError is a
    ConnectionError, but waiting does not fix credentials.
    """
    for attempt in range(retries):
        try:
            return call()
        except AuthenticationError:
            raise
        except transient:
            time.sleep(backoff_s(attempt, first_s, cap_s))
    return call()
