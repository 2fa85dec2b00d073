"""Personal query history: each user's own past queries, suggested to that user only.

Per user (a :attr:`server.users.User.key`) at most ``max_entries`` distinct queries, each with
how often and when (unix seconds) it was last submitted; an entry expires ``ttl`` seconds after
its last use. Beyond the bound the least recently used entry goes (ties: the smallest query in
code point order, never the query just recorded). Any tab or replica records into the same
history when the store is Redis.

Changes are announced so replicas can drop cached copies: :meth:`HistoryStore.changes` yields
the key of every user whose history changed, and :data:`ALL_USERS` whenever notifications may
have been missed -- first once the subscription is live, again after a reconnection or an
overflow -- upon which a consumer drops its whole cache. A forget is announced as
:data:`FORGOTTEN` followed by the key, so consumers also drop what they hold of the user's
sessions. A forget may revoke the user: :meth:`HistoryStore.revoked` then says so, for a
while, on every replica. In Redis the change and its PUBLISH
run in the same script or transaction, so no change goes unannounced. (A per-user version
counter was the alternative; it costs a round trip per cache hit, which is what the cache
saves, so publish/subscribe it is.)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from indexer.errors import QacError

ALL_USERS = "*"  # yielded by changes(): forget everything cached (never a user key)
FORGOTTEN = "!"  # yielded by changes() before the key of a user whose history was forgotten
MAX_ENTRIES = 1000
TTL = 90 * 86400.0
_QUEUE = 1024  # undelivered notifications per subscriber of a memory store


class HistoryError(QacError):
    """The history store cannot be reached or answered with an error."""


@dataclass(frozen=True)
class HistoryEntry:
    """One query of a user's history."""

    query: str
    count: int
    last_used: float


def _check(user_key: str, query: str | None = None) -> None:
    if not isinstance(user_key, str) or not user_key or user_key == ALL_USERS:
        raise ValueError("bad user key")
    if query is not None and (not isinstance(query, str) or not query):
        raise ValueError("empty query")


class HistoryStore(ABC):
    """Where histories live; every method of a remote store may raise :class:`HistoryError`."""

    kind: str

    def __init__(self, max_entries: int = MAX_ENTRIES, ttl: float = TTL,
                 clock: Callable[[], float] = time.time):
        if max_entries < 1 or ttl <= 0:
            raise ValueError("max_entries and ttl must be positive")
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock

    @abstractmethod
    async def record(self, user_key: str, query: str, now: float | None = None) -> int:
        """Count ``query`` once more, used at ``now``; the number of entries afterwards."""

    @abstractmethod
    async def entries(self, user_key: str) -> list[HistoryEntry]:
        """The user's live entries, most recently used first."""

    @abstractmethod
    async def forget(self, user_key: str, revoke_for: float = 0.0) -> None:
        """Delete the user's whole history; with ``revoke_for``, the user is :meth:`revoked` for
        that many seconds."""

    @abstractmethod
    async def revoked(self, user_key: str) -> bool:
        """Whether a forget revoked the user (and the revocation has not expired)."""

    @abstractmethod
    async def remove(self, user_key: str, query: str) -> bool:
        """Delete one query; whether it was there (and alive)."""

    @abstractmethod
    def changes(self) -> AsyncIterator[str]:
        """User keys whose history changed, and :data:`ALL_USERS` when some may have been missed."""

    async def ping(self) -> None:  # noqa: B027 (a store in this process is always there)
        """Raise :class:`HistoryError` unless the store answers."""

    async def close(self) -> None:  # noqa: B027
        """Release connections and end the iterators of :meth:`changes`."""


class MemoryHistoryStore(HistoryStore):
    """Histories in this process; at most ``max_users`` of them, least recently used go first."""

    kind = "memory"

    def __init__(self, max_entries: int = MAX_ENTRIES, ttl: float = TTL,
                 clock: Callable[[], float] = time.time, max_users: int = 100_000):
        super().__init__(max_entries, ttl, clock)
        self.max_users = max_users
        # user key -> query -> (count, last use); users least recently used first, queries too
        self._users: OrderedDict[str, OrderedDict[str, tuple[int, float]]] = OrderedDict()
        self._subscribers: set[asyncio.Queue[str | None]] = set()
        self._revoked: OrderedDict[str, float] = OrderedDict()  # user key -> until, oldest first

    def _notify(self, user_key: str) -> None:
        for queue in self._subscribers:
            overflow = queue.full()  # a slow consumer: what it missed becomes "everything"
            while overflow and not queue.empty():
                queue.get_nowait()
            queue.put_nowait(ALL_USERS if overflow else user_key)

    def _live(self, user_key: str, now: float) -> OrderedDict[str, tuple[int, float]] | None:
        """The user's history without expired entries (and users without any) at ``now``."""
        cutoff = now - self.ttl
        users = self._users
        while users:  # whole users that expired, oldest first
            key, oldest = next(iter(users.items()))
            if oldest and next(reversed(oldest.values()))[1] > cutoff:
                break
            del users[key]
        history = users.get(user_key)
        if history is None:
            return None
        users.move_to_end(user_key)
        while history and next(iter(history.values()))[1] <= cutoff:
            history.popitem(last=False)
        return history

    async def record(self, user_key: str, query: str, now: float | None = None) -> int:
        _check(user_key, query)
        now = self._clock() if now is None else now
        history = self._live(user_key, now)
        if history is None:
            history = self._users[user_key] = OrderedDict()
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
        count = history.pop(query, (0, now))[0] + 1
        out_of_order = bool(history) and next(reversed(history.values()))[1] > now
        history[query] = (count, now)
        if out_of_order:  # the clock went back: keep the entries in order of last use
            ordered = sorted(history.items(), key=lambda item: item[1][1])
            history.clear()
            history.update(ordered)
        while len(history) > self.max_entries:
            del history[self._victim(history, query)]
        self._notify(user_key)
        return len(history)

    @staticmethod
    def _victim(history: OrderedDict[str, tuple[int, float]], keep: str) -> str:
        """The least recently used query but ``keep`` (ties: the smallest query)."""
        return min((used, query) for query, (_, used) in history.items() if query != keep)[1]

    async def entries(self, user_key: str) -> list[HistoryEntry]:
        _check(user_key)
        history = self._live(user_key, self._clock())
        if not history:
            return []
        items = sorted(history.items(), key=lambda item: (item[1][1], item[0]), reverse=True)
        return [HistoryEntry(query, count, used) for query, (count, used) in items]

    async def forget(self, user_key: str, revoke_for: float = 0.0) -> None:
        _check(user_key)
        self._users.pop(user_key, None)
        if revoke_for > 0:
            self._revoked.pop(user_key, None)
            self._revoked[user_key] = self._clock() + revoke_for
            while len(self._revoked) > self.max_users:
                self._revoked.popitem(last=False)
        self._notify(FORGOTTEN + user_key)

    async def revoked(self, user_key: str) -> bool:
        _check(user_key)
        now = self._clock()
        while self._revoked and next(iter(self._revoked.values())) <= now:
            self._revoked.popitem(last=False)
        return user_key in self._revoked

    async def remove(self, user_key: str, query: str) -> bool:
        _check(user_key, query)
        history = self._live(user_key, self._clock())
        if history is None or history.pop(query, None) is None:
            return False
        self._notify(user_key)
        return True

    async def changes(self) -> AsyncIterator[str]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(_QUEUE)
        self._subscribers.add(queue)
        try:
            yield ALL_USERS
            while (key := await queue.get()) is not None:
                yield key
        finally:
            self._subscribers.discard(queue)

    async def close(self) -> None:
        for queue in self._subscribers:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)


# KEYS: times (zset query -> last use), counts (hash query -> count)
# ARGV: query, now, cutoff, max entries, key ttl, channel, user key
_RECORD = """
local function drop(members)
  for i = 1, #members, 500 do
    local chunk = {unpack(members, i, math.min(i + 499, #members))}
    redis.call('ZREM', KEYS[1], unpack(chunk))
    redis.call('HDEL', KEYS[2], unpack(chunk))
  end
end
drop(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3]))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if excess > 0 then
  local victims = {}
  for _, q in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess)) do
    if q ~= ARGV[1] and #victims < excess then victims[#victims + 1] = q end
  end
  drop(victims)
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: times, counts; ARGV: query, cutoff, channel, user key
_REMOVE = """
local used = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not used then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if tonumber(used) <= tonumber(ARGV[2]) then return 0 end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""


class RedisHistoryStore(HistoryStore):
    """Histories in Redis, shared by replicas.

    Per user a sorted set ``<prefix>u:{<user key>}:t`` of query -> last use and a hash
    ``...:c`` of query -> count (one hash slot, so Redis Cluster can run the scripts), both
    expiring ``ttl`` after the last record, and ``...:x`` while the user is revoked. Changes
    are published on ``<prefix>history``.
    Error messages name the error class only, never the URL (it may hold a password).
    """

    kind = "redis"

    def __init__(self, url: str, max_entries: int = MAX_ENTRIES, ttl: float = TTL,
                 clock: Callable[[], float] = time.time, prefix: str = "qac:", pool: int = 64):
        super().__init__(max_entries, ttl, clock)
        from .sessions import redis_client

        self.prefix = prefix
        self.channel = prefix + "history"
        self._closed = False
        self._redis: Any = redis_client(url, pool, HistoryError, "history store")
        self._record = self._redis.register_script(_RECORD)
        self._remove = self._redis.register_script(_REMOVE)

    def _keys(self, user_key: str) -> list[str]:
        base = f"{self.prefix}u:{{{user_key}}}:"
        return [base + "t", base + "c"]

    async def _run(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        from redis.exceptions import RedisError

        try:
            return await call()
        except (RedisError, OSError) as exc:
            raise HistoryError(f"history store (redis): {exc.__class__.__name__} in {what}") from exc

    async def _transaction(self, what: str, build: Callable[[Any], object]) -> list[Any]:
        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                build(pipe)
                return list(await pipe.execute())

        return await self._run(what, run)

    async def record(self, user_key: str, query: str, now: float | None = None) -> int:
        _check(user_key, query)
        now = self._clock() if now is None else now
        args: list[Any] = [query, repr(float(now)), repr(float(now - self.ttl)), self.max_entries,
                max(1, math.ceil(self.ttl)), self.channel, user_key]
        return int(await self._run("record", lambda: self._record(keys=self._keys(user_key), args=args)))

    async def entries(self, user_key: str) -> list[HistoryEntry]:
        _check(user_key)
        times, counts = self._keys(user_key)
        cutoff = f"({float(self._clock() - self.ttl)!r}"
        used, count = await self._transaction(
            "entries", lambda p: p.zrevrangebyscore(times, "+inf", cutoff, withscores=True).hgetall(counts)
        )
        return [HistoryEntry(query, int(count.get(query, 1)), float(last)) for query, last in used]

    async def forget(self, user_key: str, revoke_for: float = 0.0) -> None:
        _check(user_key)

        def build(pipe: Any) -> None:
            pipe.delete(*self._keys(user_key))
            if revoke_for > 0:
                pipe.set(self._revocation(user_key), "1", ex=max(1, math.ceil(revoke_for)))
            pipe.publish(self.channel, FORGOTTEN + user_key)

        await self._transaction("forget", build)

    def _revocation(self, user_key: str) -> str:
        return f"{self.prefix}u:{{{user_key}}}:x"

    async def revoked(self, user_key: str) -> bool:
        _check(user_key)
        return bool(await self._run("revoked", lambda: self._redis.exists(self._revocation(user_key))))

    async def remove(self, user_key: str, query: str) -> bool:
        _check(user_key, query)
        args: list[Any] = [query, repr(float(self._clock() - self.ttl)), self.channel, user_key]
        return bool(await self._run("remove", lambda: self._remove(keys=self._keys(user_key), args=args)))

    async def changes(self) -> AsyncIterator[str]:
        from redis.exceptions import RedisError

        pubsub = self._redis.pubsub()
        delay = 0.1
        try:
            while not self._closed:
                try:
                    if not pubsub.subscribed:
                        await pubsub.subscribe(self.channel)
                    message = await pubsub.get_message(timeout=1.0)
                    delay = 0.1
                except (RedisError, OSError):  # the next call reconnects and subscribes again
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, 2.0)
                    continue
                if message is None:
                    continue
                if message["type"] == "subscribe":  # live now, or again after a reconnection
                    yield ALL_USERS
                elif message["type"] == "message":
                    yield message["data"]
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def ping(self) -> None:
        await self._run("ping", self._redis.ping)

    async def close(self) -> None:
        self._closed = True
        await self._redis.aclose()


def open_history(url: str, *, max_entries: int = MAX_ENTRIES, ttl: float = TTL, pool: int = 64) -> HistoryStore:
    """The store named by ``url``: ``memory`` or a ``redis://`` (``rediss://``, ``unix://``) URL."""
    if url == "memory":
        return MemoryHistoryStore(max_entries, ttl)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHistoryStore(url, max_entries, ttl, pool=pool)
    raise HistoryError("history store: expected 'memory' or a redis:// URL")
