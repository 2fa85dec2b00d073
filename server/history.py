"""Personal query history: each user's own past queries, suggested to that user only.

Per user (a :attr:`server.users.User.key`) at most ``max_entries`` distinct queries, each with
how often and when (unix seconds) it was last submitted; an entry expires ``ttl`` seconds after
its last use. Beyond the bound the least recently used entry goes (ties: the smallest query in
code point order, never the query just recorded). Any tab or replica records into the same
history when the store is Redis.

Storage as a whole is bounded too: anonymous users' histories hold at most ``anonymous_max``
entries together. Beyond it whole histories go, the least recently active anonymous user's
(the one whose last record is oldest) first, never the one just recorded into; a signed-in
user's history never goes to make room (the site vouches for those users, and each has its
own bound). A memory store also keeps at most ``max_users`` histories, and there too the
anonymous go first. An evicted user's copies are dropped like any change.

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
import functools
import logging
import math
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from indexer.errors import QacError
from indexer.personal import least_recent

from .redis_client import redis_client, redis_failures
from .users import ANONYMOUS

log = logging.getLogger("qac.server")

ALL_USERS = "*"  # yielded by changes(): forget everything cached (never a user key)
FORGOTTEN = "!"  # yielded by changes() before the key of a user whose history was forgotten
MAX_ENTRIES = 1000
TTL = 90 * 86400.0
ANONYMOUS_MAX = 500_000  # entries over all anonymous users' histories
_QUEUE = 1024  # undelivered notifications per subscriber of a memory store


class HistoryError(QacError):
    """The history store cannot be reached or answered with an error."""


@dataclass(frozen=True)
class HistoryEntry:
    """One query of a user's history."""

    query: str
    count: int
    last_used: float


def _anonymous(user_key: str) -> bool:
    """Whether a user key (:attr:`server.users.User.key`) names an anonymous user."""
    return user_key.startswith(ANONYMOUS + ":")


def _check(user_key: str, query: str | None = None) -> None:
    if not isinstance(user_key, str) or not user_key or user_key == ALL_USERS:
        raise ValueError("bad user key")
    if query is not None and (not isinstance(query, str) or not query):
        raise ValueError("empty query")


def _check_seeded(user_key: str) -> None:
    _check(user_key)
    if _anonymous(user_key):  # the anonymous bound counts what users record, not seeds
        raise ValueError("only signed-in users are seeded")


def _kept(entries: Sequence[HistoryEntry], now: float, ttl: float, max_entries: int) -> list[HistoryEntry]:
    """The live ``entries`` at ``now`` a bounded history keeps: the ``max_entries`` most
    recently used (ties: the larger query stays, as :func:`least_recent` drops the smallest),
    least recently used first."""
    live = sorted((e for e in entries if e.query and e.last_used > now - ttl), key=lambda e: (e.last_used, e.query))
    return live[-max_entries:]


class HistoryStore(ABC):
    """Where histories live; every method of a remote store may raise :class:`HistoryError`."""

    kind: str

    def __init__(self, max_entries: int = MAX_ENTRIES, ttl: float = TTL,
                 clock: Callable[[], float] = time.time, anonymous_max: int = ANONYMOUS_MAX):
        if max_entries < 1 or ttl <= 0 or anonymous_max < 1:
            raise ValueError("max_entries, ttl and anonymous_max must be positive")
        self.max_entries = max_entries
        self.ttl = ttl
        self.anonymous_max = anonymous_max
        self._clock = clock

    @abstractmethod
    async def record(self, user_key: str, query: str, now: float | None = None) -> int:
        """Count ``query`` once more, used at ``now``; the number of entries afterwards."""

    @abstractmethod
    async def entries(self, user_key: str) -> list[HistoryEntry]:
        """The user's live entries, most recently used first."""

    @abstractmethod
    async def seed(self, user_key: str, entries: Sequence[HistoryEntry]) -> bool:
        """Give a user who has no history ``entries`` (from a log, see ``server/seed.py``):
        whether it did. A user the store holds a history of is left alone, and so, in Redis,
        is one it was ever seeded for (a forgotten user stays forgotten). Entries expired by
        now go, and beyond :attr:`max_entries` the least recently used ones."""

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
    """Histories in this process; at most ``max_users`` of them, least recently used go first
    (anonymous users before signed-in ones)."""

    kind = "memory"

    def __init__(self, max_entries: int = MAX_ENTRIES, ttl: float = TTL,
                 clock: Callable[[], float] = time.time, max_users: int = 100_000,
                 anonymous_max: int = ANONYMOUS_MAX):
        super().__init__(max_entries, ttl, clock, anonymous_max)
        self.max_users = max_users
        # user key -> query -> (count, last use); users least recently used first, queries too
        self._users: OrderedDict[str, OrderedDict[str, tuple[int, float]]] = OrderedDict()
        # anonymous user key -> entries held, least recently active (recorded) first
        self._anonymous: OrderedDict[str, int] = OrderedDict()
        self._anonymous_total = 0
        self._subscribers: set[asyncio.Queue[str | None]] = set()
        self._revoked: OrderedDict[str, float] = OrderedDict()  # user key -> until, oldest first

    def _notify(self, user_key: str) -> None:
        for queue in self._subscribers:
            overflow = queue.full()  # a slow consumer: what it missed becomes "everything"
            while overflow and not queue.empty():
                queue.get_nowait()
            queue.put_nowait(ALL_USERS if overflow else user_key)

    def _resize(self, user_key: str, active: bool = False) -> None:
        """Count what an anonymous user holds now (``active``: they just recorded)."""
        if not _anonymous(user_key):
            return
        size = len(self._users.get(user_key) or ())
        self._anonymous_total += size - self._anonymous.get(user_key, 0)
        if not size:
            self._anonymous.pop(user_key, None)
            return
        self._anonymous[user_key] = size
        if active:
            self._anonymous.move_to_end(user_key)

    def _drop_user(self, user_key: str) -> None:
        self._users.pop(user_key, None)
        self._resize(user_key)

    def _evict(self, keep: str) -> None:
        """Whole histories go while the store is over a bound (the module's docstring)."""
        while self._anonymous_total > self.anonymous_max or len(self._users) > self.max_users:
            victim = next((key for key in self._anonymous if key != keep), None)
            if victim is None:
                if self._anonymous_total > self.anonymous_max:
                    return  # only ``keep`` is left to take from
                victim = next(key for key in self._users if key != keep)  # signed-in, for max_users only
            self._drop_user(victim)
            self._notify(victim)

    def _live(self, user_key: str, now: float) -> OrderedDict[str, tuple[int, float]] | None:
        """The user's history without expired entries (and users without any) at ``now``."""
        cutoff = now - self.ttl
        users = self._users
        while users:  # whole users that expired, oldest first
            key, oldest = next(iter(users.items()))
            if oldest and next(reversed(oldest.values()))[1] > cutoff:
                break
            self._drop_user(key)
        history = users.get(user_key)
        if history is None:
            return None
        users.move_to_end(user_key)
        if history and next(iter(history.values()))[1] <= cutoff:
            while history and next(iter(history.values()))[1] <= cutoff:
                history.popitem(last=False)
            self._resize(user_key)
        return history

    async def record(self, user_key: str, query: str, now: float | None = None) -> int:
        _check(user_key, query)
        now = self._clock() if now is None else now
        history = self._live(user_key, now)
        if history is None:
            history = self._users[user_key] = OrderedDict()
        count = history.pop(query, (0, now))[0] + 1
        out_of_order = bool(history) and next(reversed(history.values()))[1] > now
        history[query] = (count, now)
        if out_of_order:  # the clock went back: keep the entries in order of last use
            ordered = sorted(history.items(), key=lambda item: item[1][1])
            history.clear()
            history.update(ordered)
        while len(history) > self.max_entries:
            del history[least_recent(((q, used) for q, (_, used) in history.items()), query)]
        self._resize(user_key, active=True)
        self._evict(user_key)
        self._notify(user_key)
        return len(history)

    async def seed(self, user_key: str, entries: Sequence[HistoryEntry]) -> bool:
        _check_seeded(user_key)
        now = self._clock()
        if self._live(user_key, now):
            return False
        kept = _kept(entries, now, self.ttl, self.max_entries)
        if not kept:
            return False
        self._users[user_key] = OrderedDict((e.query, (e.count, e.last_used)) for e in kept)
        self._users.move_to_end(user_key)
        self._resize(user_key, active=True)
        self._evict(user_key)
        self._notify(user_key)
        return True

    async def entries(self, user_key: str) -> list[HistoryEntry]:
        _check(user_key)
        history = self._live(user_key, self._clock())
        if not history:
            return []
        items = sorted(history.items(), key=lambda item: (item[1][1], item[0]), reverse=True)
        return [HistoryEntry(query, count, used) for query, (count, used) in items]

    async def forget(self, user_key: str, revoke_for: float = 0.0) -> None:
        _check(user_key)
        self._drop_user(user_key)
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
        self._resize(user_key)
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

# KEYS: times, counts, seeded (a mark that never expires)
# ARGV: cutoff, key ttl, channel, user key, then query, count, last use of each entry
_SEED = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('SET', KEYS[3], '1')
if redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf') > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
for i = 5, #ARGV, 3 do
  redis.call('ZADD', KEYS[1], ARGV[i + 2], ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
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


# KEYS: active (zset anonymous user key -> last record), sizes (hash user key -> entries), total
# ARGV: user key, its entries now, now (or '' when it did not record), cutoff, anonymous max
# Counts what an anonymous user holds and returns the users whose histories must go, least
# recently active first; users whose histories expired (by TTL) are no longer counted.
_ACCOUNT = """
local function uncount(user)
  redis.call('ZREM', KEYS[1], user)
  redis.call('INCRBY', KEYS[3], -tonumber(redis.call('HGET', KEYS[2], user) or '0'))
  redis.call('HDEL', KEYS[2], user)
end
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0, 100)) do
  uncount(user)
end
local size = tonumber(ARGV[2])
redis.call('INCRBY', KEYS[3], size - tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0'))
if size > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], size)
  if ARGV[3] ~= '' then redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) end
else
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
local victims = {}
while tonumber(redis.call('GET', KEYS[3]) or '0') > tonumber(ARGV[5]) do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 1)
  local victim = oldest[1]
  if victim == ARGV[1] then victim = oldest[2] end
  if not victim then break end
  uncount(victim)
  victims[#victims + 1] = victim
end
return victims
"""


class RedisHistoryStore(HistoryStore):
    """Histories in Redis, shared by replicas.

    Per user a sorted set ``<prefix>u:{<user key>}:t`` of query -> last use and a hash
    ``...:c`` of query -> count (one hash slot, so Redis Cluster can run the scripts), both
    expiring ``ttl`` after the last record, ``...:x`` while the user is revoked, and ``...:s``
    (never expiring, kept by a forget) once the user was offered a seeded history. Changes
    are published on ``<prefix>history``. What anonymous users hold is counted in
    ``<prefix>{anonymous}:active`` (a sorted set of user keys by last record), ``...:sizes`` (a
    hash of their entries) and ``...:total``, one hash slot of their own; the store deletes the
    histories :data:`_ACCOUNT` names beyond the bound.
    Error messages name the error class only, never the URL (it may hold a password).
    """

    kind = "redis"

    def __init__(self, url: str, max_entries: int = MAX_ENTRIES, ttl: float = TTL,
                 clock: Callable[[], float] = time.time, prefix: str = "qac:", pool: int = 64,
                 anonymous_max: int = ANONYMOUS_MAX):
        super().__init__(max_entries, ttl, clock, anonymous_max)
        self._url = url
        self.prefix = prefix
        self.channel = prefix + "history"
        self._closed = False
        self._redis: Any = redis_client(url, pool, HistoryError, "history store")
        self._record = self._redis.register_script(_RECORD)
        self._remove = self._redis.register_script(_REMOVE)
        self._seed = self._redis.register_script(_SEED)
        self._account = self._redis.register_script(_ACCOUNT)
        self._anonymous_keys = [f"{prefix}{{anonymous}}:{name}" for name in ("active", "sizes", "total")]

    def _keys(self, user_key: str) -> list[str]:
        base = f"{self.prefix}u:{{{user_key}}}:"
        return [base + "t", base + "c"]

    async def _run(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        with redis_failures(HistoryError, "history store", self._url, what):
            return await call()

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
        size = int(await self._run("record", lambda: self._record(keys=self._keys(user_key), args=args)))
        try:
            await self._count(user_key, size, now)
        except HistoryError as exc:  # recorded all the same: a retry would count the query twice
            log.warning("%s; the anonymous bound applies from the user's next submit", exc)
        return size

    async def _count(self, user_key: str, size: int, now: float | None) -> None:
        """Count what an anonymous user holds now (``now``: when they recorded) and delete the
        histories beyond the bound, announcing each."""
        if not _anonymous(user_key):
            return
        args: list[Any] = [user_key, size, "" if now is None else repr(float(now)),
                           repr(float(self._clock() - self.ttl)), self.anonymous_max]
        victims = await self._run("count", lambda: self._account(keys=self._anonymous_keys, args=args))
        for victim in victims:
            await self._transaction("evict", functools.partial(self._evict, victim))

    def _evict(self, user_key: str, pipe: Any) -> None:
        pipe.delete(*self._keys(user_key)).publish(self.channel, user_key)

    async def entries(self, user_key: str) -> list[HistoryEntry]:
        _check(user_key)
        times, counts = self._keys(user_key)
        cutoff = f"({float(self._clock() - self.ttl)!r}"
        used, count = await self._transaction(
            "entries", lambda p: p.zrevrangebyscore(times, "+inf", cutoff, withscores=True).hgetall(counts)
        )
        return [HistoryEntry(query, int(count.get(query, 1)), float(last)) for query, last in used]

    async def seed(self, user_key: str, entries: Sequence[HistoryEntry]) -> bool:
        _check_seeded(user_key)
        now = self._clock()
        kept = _kept(entries, now, self.ttl, self.max_entries)
        if not kept:
            return False
        key_ttl = max(1, math.ceil(kept[-1].last_used + self.ttl - now))
        args: list[Any] = [repr(float(now - self.ttl)), key_ttl, self.channel, user_key]
        for e in kept:
            args += [e.query, int(e.count), repr(float(e.last_used))]
        keys = [*self._keys(user_key), f"{self.prefix}u:{{{user_key}}}:s"]
        return bool(await self._run("seed", lambda: self._seed(keys=keys, args=args)))

    async def forget(self, user_key: str, revoke_for: float = 0.0) -> None:
        _check(user_key)

        def build(pipe: Any) -> None:
            pipe.delete(*self._keys(user_key))
            if revoke_for > 0:
                pipe.set(self._revocation(user_key), "1", ex=max(1, math.ceil(revoke_for)))
            pipe.publish(self.channel, FORGOTTEN + user_key)

        await self._transaction("forget", build)
        await self._count(user_key, 0, None)

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


def open_history(url: str, *, max_entries: int = MAX_ENTRIES, ttl: float = TTL, anonymous_max: int = ANONYMOUS_MAX,
                 pool: int = 64) -> HistoryStore:
    """The store named by ``url``: ``memory`` or a ``redis://`` (``rediss://``, ``unix://``) URL."""
    if url == "memory":
        return MemoryHistoryStore(max_entries, ttl, anonymous_max=anonymous_max)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHistoryStore(url, max_entries, ttl, pool=pool, anonymous_max=anonymous_max)
    raise HistoryError("history store: expected 'memory' or a redis:// URL")
