"""What the two Redis stores (sessions, histories) share: how a client is made from a
``redis://`` URL, its timeouts, and how Redis's errors become the store's own, without the
URL's password."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from indexer.errors import QacError

from .config import redact_url, scrub

# Seconds to wait for a pooled connection, to connect, and for an answer: a store that does not
# answer in time is down for this keystroke (the server degrades, it does not queue).
TIMEOUT = 2.0


def redis_client(url: str, pool: int, error: type[QacError], what: str) -> Any:
    """An asyncio Redis client of ``url`` over a pool of at most ``pool`` connections. A
    malformed URL raises ``error`` naming ``what`` (the store), without the URL's text."""
    import redis.asyncio  # only a Redis store needs the package

    try:
        connections = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=pool, timeout=TIMEOUT, decode_responses=True, socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT, health_check_interval=30,
        )
    except Exception as exc:  # its message may hold the URL, password included
        raise error(f"{what} (redis): bad URL ({exc.__class__.__name__})") from None
    return redis.asyncio.Redis.from_pool(connections)


@contextlib.contextmanager
def redis_failures(error: type[QacError], what: str, url: str, doing: str) -> Iterator[None]:
    """Raise Redis's errors (and the socket's) inside the block as ``error``: the store
    (``what``) at its redacted ``url``, what it was ``doing`` and the error, never the URL's
    password, nor the original exception (its text may hold the URL)."""
    from redis.exceptions import RedisError

    try:
        yield
    except (RedisError, OSError) as exc:
        raise error(scrub(f"{what} {redact_url(url)}: {exc.__class__.__name__} in {doing}: {exc}", url)) from None
