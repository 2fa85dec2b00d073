"""One connection's session: its id and owner, its copy of the session queries, and the sync
of that copy with the session store (``server/sessions.py``).

The connection ranks with :attr:`SessionQueries.queries`, which follows its own submits and
removes at once; the store gets the submits in turn (:meth:`SessionQueries.sync`, one round
trip however many wait), and the copy is read back when another tab may have written to the
session, at most :data:`REFRESH_SECONDS` after the last read (which also refreshes the
session's TTL). No method raises for the store: a failure marks it down (``StoreHealth``) and
the copy goes on.

A session belongs to the user it was opened under (:attr:`SessionQueries.owner`, a user key,
or None without a user). A session nothing was written to yet becomes the first user's; once
used (:attr:`SessionQueries.claimed`), another user, or a forget, starts a new session. When
the user is forgotten on another connection or replica, the copy goes at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from .sessions import SessionError, SessionStore, new_session_id
from .store_health import StoreHealth

# How long a connection ranks with its own copy of the session queries before reading them
# from the store again. The copy follows this connection's own submits at once; only another
# tab's submits wait for the refresh, which a keystroke starts in the background and never waits for.
REFRESH_SECONDS = 10.0


class SessionQueries:
    """The session of one connection and its copy of the session queries."""

    def __init__(self, store: SessionStore, health: StoreHealth, limit: int,
                 news: Callable[[], bool | None], clock: Callable[[], float] = time.monotonic):
        """``limit``: the queries a session keeps (``ServerConfig.session_queries``); ``news``
        takes, once, what the connection's user heard of a forget elsewhere (True: forgotten;
        False: maybe, notifications were missed; None: nothing, see ``UserLink.take_news``)."""
        self.store = store
        self.health = health
        self.limit = limit
        self._news = news
        self._clock = clock
        self.id = ""  # the store's id; clients see it signed
        self.issued = 0.0  # time.time() when the id was issued
        self.owner: str | None = None  # the key of the user the session was opened under
        self.claimed = False  # the session was resumed or written to: it keeps its owner
        self.queries: list[str] = []  # what ranking uses, oldest first
        self._read = 0.0  # clock() of the last read from the store
        # Submits not in the store yet (taken but not written, or made while it was down),
        # oldest first, each numbered: what drop() takes out while a write is on its way
        # leaves the others' numbers as they were.
        self._unsynced: list[tuple[int, str]] = []
        self._taken = 0  # submits numbered so far
        self._forgotten_upto = 0  # submits numbered up to this one were taken before a forget
        self.lock = asyncio.Lock()  # one store call sequence at a time per connection
        self.refresh: asyncio.Task[bool] | None = None  # a sync a keystroke started

    def renew(self) -> None:
        """Go on in a new, empty session (created in the store when first used)."""
        self.id, self.issued, self.claimed = new_session_id(), time.time(), False
        self._remember([])
        self._unsynced.clear()

    def _remember(self, queries: list[str]) -> None:
        self.queries = list(queries)
        self._read = self._clock()

    async def resume(self, requested: str, issued: float) -> bool | None:
        """Go on in the session ``requested`` (a verified id issued at ``issued``): its queries,
        if it is alive and the owner's. Issued less than a TTL ago, it cannot have expired: it may
        just never have been used, so the id is kept. Whether the store gave queries back (None
        when the store did not answer)."""
        young = time.time() - issued < self.store.ttl
        opened = False
        if self.health.up:
            try:
                async with self.lock:
                    session, queries = await self.store.open(requested, create=young, owner=self.owner)
                self.health.answered()
                self.id = session
                self.issued = issued if session == requested else time.time()
                self._remember(queries)
                opened = True
            except SessionError as exc:
                self.health.failed(exc)
        if not opened:
            self.id, self.issued = (requested, issued) if young else (new_session_id(), time.time())
            self._remember([])
        self._unsynced.clear()
        self.claimed = True
        return bool(self.queries) if opened else None

    def follow(self, owner: str | None, forgot: bool) -> bool:
        """After a ``user`` frame (naming ``owner``) or a ``forget``: whether a new session began
        (unless forgotten, the session stays when it is the owner's, or unused and becomes theirs)."""
        if not forgot and (owner is None or owner == self.owner):
            return False
        self.owner = owner
        if not forgot and not self.claimed:
            return False
        self.renew()
        return True

    def hear(self) -> None:
        """If the user was forgotten on another connection or replica, the copy goes; if they
        may have been, it is read again before long."""
        news = self._news()
        if news:
            self.queries = []
            self._unsynced.clear()
            self._forgotten_upto = self._taken
        if news is not None:
            self._read = -math.inf

    def add(self, query: str) -> int:
        """A submitted (normalized) query joins the copy, and waits for the store: its number
        (0 when the query is empty and nothing was added)."""
        self.hear()
        if not query:
            return 0
        self.claimed = True
        self.queries = (self.queries + [query])[-self.limit:]
        # Held back until the store takes it: never more than the session keeps.
        self._taken += 1
        self._unsynced.append((self._taken, query))
        del self._unsynced[:-self.limit]
        return self._taken

    def forgotten(self, number: int) -> bool:
        """Whether a forget was heard after submit ``number`` was taken: it goes into no store."""
        return number <= self._forgotten_upto

    def drop(self, query: str) -> None:
        """A removed query leaves the copy (and the submits waiting), so nothing suggests it again."""
        if query in self.queries:
            self.queries = [q for q in self.queries if q != query]
            self._unsynced = [(n, q) for n, q in self._unsynced if q != query]

    async def discard(self, query: str) -> None:
        """A query :meth:`drop` took out goes from the store too."""
        if query and self.health.up:
            async with self.lock:
                try:
                    await self.store.discard(self.id, query, self.owner)
                except SessionError as exc:
                    self.health.failed(exc)

    async def sync(self) -> bool:
        """Write the submits held back to the store and read the session queries back if due;
        whether the store has everything."""
        health = self.health
        if not health.up:
            return False
        store = self.store
        async with self.lock:
            # Checked once the lock is ours: the sync that held it (the store writer's, or one a
            # keystroke started) may have done it all. A keystroke right after a submit started
            # a second sync, which read all the session queries back: a Redis round trip per submit.
            self.hear()
            if self.synced():
                return True
            try:
                length = -1
                if self._unsynced:  # one round trip, however many were held back
                    last = self._unsynced[-1][0]
                    batch = [q for _, q in self._unsynced]
                    length = await store.extend(self.id, batch, self.owner)
                    self._unsynced = [(n, q) for n, q in self._unsynced if n > last]
                    self.hear()
                    if self._forgotten_upto >= last:  # forgotten while on their way: they may have landed after
                        for forgotten in set(batch):
                            length = await store.discard(self.id, forgotten, self.owner)
                if length != len(self.queries):  # nothing written, or another tab wrote meanwhile
                    # What the store has, and the submits taken since that wait their turn.
                    stored = await store.queries(self.id, self.owner)
                    later = [q for _, q in self._unsynced]
                    self._remember((stored + later)[-self.limit:])
                else:
                    self._read = self._clock()
            except SessionError as exc:
                health.failed(exc)
                return False
        health.answered()
        return True

    def sync_soon(self) -> None:
        """Start :meth:`sync` in the background if it is due and not running: a keystroke ranks
        with the copy (a store round trip under load was a few ms of its p99,
        BENCHMARKS.md#store-writer) and the next one gets what the read found."""
        if (self.refresh is None or self.refresh.done()) and self.health.up and not self.synced():
            self.refresh = asyncio.create_task(self.sync())

    def synced(self) -> bool:
        """Whether the store has every submit and the session queries were read less than
        :data:`REFRESH_SECONDS` ago: nothing for a sync to do."""
        return not self._unsynced and self._clock() - self._read < REFRESH_SECONDS
