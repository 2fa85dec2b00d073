"""Session stores: each session's submitted queries, newest last, bounded, with an idle TTL.

A session is created by the server (:meth:`SessionStore.open` without a live id) and stays
alive while it is used; any read or write refreshes its TTL. Writing to a session that has
expired meanwhile revives it.

A session belongs to the user it was opened under (``owner``, a user key, or None for a
connection without a user): every call names the owner, and the same id under another owner
is another session, so no user reads or writes a session opened under someone else. The
sessions of an owner are listed, so :meth:`SessionStore.forget` deletes them all at once.
"""

from __future__ import annotations

import re
import secrets
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, TypeGuard

from indexer.errors import QacError

from .config import redact_url
from .redis_client import redis_client, redis_failures

_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


class SessionError(QacError):
    """The session store cannot be reached or answered with an error."""


def new_session_id() -> str:
    """A fresh unguessable session id (22 URL-safe characters)."""
    return secrets.token_urlsafe(16)


def valid_session_id(sid: str | None) -> TypeGuard[str]:
    """Whether ``sid`` looks like an id this server hands out."""
    return sid is not None and _ID.fullmatch(sid) is not None


class SessionStore(ABC):
    """Where sessions live; every method may raise :class:`SessionError`."""

    kind: str

    def __init__(self, ttl: float, max_queries: int):
        self.ttl = ttl
        self.max_queries = max_queries

    @abstractmethod
    async def open(self, requested: str | None = None, create: bool = False,
                   owner: str | None = None) -> tuple[str, list[str]]:
        """Resume ``requested`` of ``owner`` if it is alive, else start a new session: its id and
        history. With ``create``, a ``requested`` id that is not alive is started under that id."""

    @abstractmethod
    async def queries(self, sid: str, owner: str | None = None) -> list[str]:
        """The session's queries, oldest first (empty if expired)."""

    async def append(self, sid: str, query: str, owner: str | None = None) -> int:
        """Append a normalized query; how many queries the session holds afterwards."""
        return await self.extend(sid, [query], owner)

    @abstractmethod
    async def extend(self, sid: str, queries: list[str], owner: str | None = None) -> int:
        """Append normalized queries, oldest first, in one round trip; the length afterwards."""

    @abstractmethod
    async def discard(self, sid: str, query: str, owner: str | None = None) -> int:
        """Delete every occurrence of a normalized query (a user removed it); the length afterwards."""

    @abstractmethod
    async def forget(self, owner: str) -> int:
        """Delete every session opened under ``owner``; how many there were."""

    @abstractmethod
    async def count(self) -> int:
        """How many sessions are alive."""

    async def ping(self) -> None:  # noqa: B027 (a store in this process is always there)
        """Raise :class:`SessionError` unless the store answers."""

    async def close(self) -> None:  # noqa: B027
        """Release connections."""


def _name(sid: str, owner: str | None) -> str:
    """Where a session of ``owner`` lives in a store: a session id holds no ``@``."""
    return sid if owner is None else f"{sid}@{owner}"


class _Entry:
    __slots__ = ("queries", "seen", "owner")

    def __init__(self, max_queries: int, now: float, owner: str | None):
        self.queries: deque[str] = deque(maxlen=max_queries)
        self.seen = now
        self.owner = owner


class MemorySessionStore(SessionStore):
    """Sessions in this process, least recently used first; at most ``max_sessions`` of them."""

    kind = "memory"

    def __init__(self, ttl: float, max_queries: int, max_sessions: int,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(ttl, max_queries)
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, _Entry] = OrderedDict()  # by _name()
        self._owned: dict[str, set[str]] = {}  # owner -> names of their sessions

    def _delete(self, name: str) -> None:
        entry = self._sessions.pop(name)
        if entry.owner is not None:
            names = self._owned[entry.owner]
            names.discard(name)
            if not names:
                del self._owned[entry.owner]

    def _expire(self, now: float) -> None:
        sessions = self._sessions
        while sessions:
            name, entry = next(iter(sessions.items()))
            if now - entry.seen < self.ttl and len(sessions) <= self.max_sessions:
                break
            self._delete(name)

    def _get(self, sid: str, owner: str | None) -> _Entry | None:
        now = self._clock()
        self._expire(now)
        name = _name(sid, owner)
        entry = self._sessions.get(name)
        if entry is not None:
            entry.seen = now
            self._sessions.move_to_end(name)
        return entry

    def _ensure(self, sid: str, owner: str | None) -> _Entry:
        entry = self._get(sid, owner)
        if entry is None:
            name = _name(sid, owner)
            entry = self._sessions[name] = _Entry(self.max_queries, self._clock(), owner)
            if owner is not None:
                self._owned.setdefault(owner, set()).add(name)
            self._expire(entry.seen)
        return entry

    async def open(self, requested: str | None = None, create: bool = False,
                   owner: str | None = None) -> tuple[str, list[str]]:
        if valid_session_id(requested):
            entry = self._get(requested, owner)
            if entry is not None:
                return requested, list(entry.queries)
        sid = requested if create and valid_session_id(requested) else new_session_id()
        self._ensure(sid, owner)
        return sid, []

    async def queries(self, sid: str, owner: str | None = None) -> list[str]:
        entry = self._get(sid, owner)
        return list(entry.queries) if entry is not None else []

    async def extend(self, sid: str, queries: list[str], owner: str | None = None) -> int:
        entry = self._ensure(sid, owner)
        entry.queries.extend(queries)
        return len(entry.queries)

    async def discard(self, sid: str, query: str, owner: str | None = None) -> int:
        entry = self._get(sid, owner)
        if entry is None:
            return 0
        kept = [q for q in entry.queries if q != query]
        entry.queries.clear()
        entry.queries.extend(kept)
        return len(kept)

    async def forget(self, owner: str) -> int:
        names = list(self._owned.get(owner, ()))
        for name in names:
            self._delete(name)
        return len(names)

    async def count(self) -> int:
        self._expire(self._clock())
        return len(self._sessions)


# KEYS: the session's list, the live set[, the owner's set]. ARGV: most queries, TTL (s), now,
# the session's name, queries. What extend() did as RPUSH, LTRIM, EXPIRE and ZADD in a
# transaction, plus listing the session under its owner; answers the length kept.
_EXTEND = """
local length = redis.call('RPUSH', KEYS[1], unpack(ARGV, 5))
local keep = tonumber(ARGV[1])
redis.call('LTRIM', KEYS[1], -keep, -1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if KEYS[3] then
  redis.call('SADD', KEYS[3], ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
return math.min(length, keep)
"""

# KEYS: the owner's set, the live set. ARGV: the prefix of session lists. Deletes every
# session the set names, at once; answers how many.
_FORGET = """
local names = redis.call('SMEMBERS', KEYS[1])
for _, name in ipairs(names) do
  redis.call('DEL', ARGV[1] .. name)
  redis.call('ZREM', KEYS[2], name)
end
redis.call('DEL', KEYS[1])
return #names
"""


class RedisSessionStore(SessionStore):
    """Sessions in Redis, shared by processes and replicas.

    Per session a list ``<prefix>h:<name>`` (RPUSH, LTRIM, EXPIRE), where the name is the id,
    followed by ``@<owner>`` for a session opened under a user; per owner a set
    ``<prefix>o:<owner>`` of the names of their sessions (expiring with them), which
    :meth:`forget` deletes; and one sorted set ``<prefix>live`` of session names by last use,
    which says whether a session is alive and counts sessions (entries older than the TTL are
    pruned). Clocks of replicas should agree to well under the TTL.

    At most ``pool`` connections per process; a call waits up to 2 s for a free one. Errors
    and :attr:`url` never show the URL's password.
    """

    kind = "redis"

    def __init__(self, url: str, ttl: float, max_queries: int, prefix: str = "qac:",
                 clock: Callable[[], float] = time.time, pool: int = 64):
        super().__init__(ttl, max_queries)
        self.url = redact_url(url)
        self._raw_url = url
        self.prefix = prefix
        self._clock = clock
        self._redis: Any = redis_client(url, pool, SessionError, "session store")
        self._live = prefix + "live"
        self._expire_seconds = max(1, round(ttl))  # the key's EXPIRE, in whole seconds
        self._extend = self._redis.register_script(_EXTEND)
        self._forget = self._redis.register_script(_FORGET)

    def _key(self, name: str) -> str:
        return f"{self.prefix}h:{name}"

    def _owned(self, owner: str) -> str:
        return f"{self.prefix}o:{owner}"

    async def _run(self, build: Callable[[Any], object]) -> list[Any]:
        """Queue commands with ``build(pipeline)`` and run them as one transaction: their results."""
        with redis_failures(SessionError, "session store", self._raw_url, "a transaction"):
            async with self._redis.pipeline(transaction=True) as pipe:
                build(pipe)
                return list(await pipe.execute())

    def _touch(self, pipe: Any, sid: str, owner: str | None) -> Any:
        """Queue marking the session as used now (pipeline commands chain)."""
        name = _name(sid, owner)
        pipe = pipe.zadd(self._live, {name: self._clock()}).expire(self._key(name), self._expire_seconds)
        if owner is not None:
            pipe = pipe.sadd(self._owned(owner), name).expire(self._owned(owner), self._expire_seconds)
        return pipe

    async def open(self, requested: str | None = None, create: bool = False,
                   owner: str | None = None) -> tuple[str, list[str]]:
        if valid_session_id(requested):
            name = _name(requested, owner)
            seen, queries = await self._run(lambda p: p.zscore(self._live, name).lrange(self._key(name), 0, -1))
            if seen is not None and self._clock() - float(seen) < self.ttl:
                await self._run(lambda p: self._touch(p, requested, owner))
                return requested, list(queries)
        sid = requested if create and valid_session_id(requested) else new_session_id()
        cutoff = self._clock() - self.ttl
        await self._run(lambda p: self._touch(p.zremrangebyscore(self._live, "-inf", cutoff), sid, owner))
        return sid, []

    async def queries(self, sid: str, owner: str | None = None) -> list[str]:
        key = self._key(_name(sid, owner))
        result = await self._run(lambda p: self._touch(p.lrange(key, 0, -1), sid, owner))
        return list(result[0])

    async def extend(self, sid: str, queries: list[str], owner: str | None = None) -> int:
        # One script, not a transaction of five commands: a submit's write is most of what this
        # store costs a worker's event loop (0.2 against 0.35 ms of its CPU, BENCHMARKS.md#store-script).
        name = _name(sid, owner)
        keys = [self._key(name), self._live, *([self._owned(owner)] if owner is not None else [])]
        args = [self.max_queries, self._expire_seconds, repr(self._clock()), name, *queries[-self.max_queries:]]
        with redis_failures(SessionError, "session store", self._raw_url, "extend"):
            return int(await self._extend(keys=keys, args=args))

    async def discard(self, sid: str, query: str, owner: str | None = None) -> int:
        key = self._key(_name(sid, owner))
        result = await self._run(lambda p: self._touch(p.lrem(key, 0, query).llen(key), sid, owner))
        return int(result[1])

    async def forget(self, owner: str) -> int:
        with redis_failures(SessionError, "session store", self._raw_url, "forget"):
            return int(await self._forget(keys=[self._owned(owner), self._live], args=[self._key("")]))

    async def count(self) -> int:
        cutoff = self._clock() - self.ttl
        result = await self._run(lambda p: p.zremrangebyscore(self._live, "-inf", cutoff).zcard(self._live))
        return int(result[1])

    async def ping(self) -> None:
        await self._run(lambda p: p.ping())

    async def close(self) -> None:
        await self._redis.aclose()


def open_store(url: str, ttl: float, max_queries: int, max_sessions: int, pool: int = 64) -> SessionStore:
    """The store named by ``--sessions``: ``memory`` or a ``redis://`` URL."""
    if url == "memory":
        return MemorySessionStore(ttl, max_queries, max_sessions)
    return RedisSessionStore(url, ttl, max_queries, pool=pool)
