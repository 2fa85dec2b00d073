"""Personal history at serve time: who the user is, and a cached copy of their history.

A connection names its user with a signed token (``server/users.py``), never a bare id.
The user's history lives in a :class:`~server.history.HistoryStore` (memory, or Redis shared
by replicas); ranking uses a :class:`~indexer.personal.PersonalHistory` copy kept here, one
per user with open connections in this process, so the store is read once per change and
not on every keystroke. A submit of the user on this process updates the copy in place;
one task per process follows the store's change notifications and drops the copies they name
(but for those of this process's own submits, all of them when notifications may have been
missed); the next keystroke of that user reads the history again. A removal on any replica therefore reaches
every other one as fast as Redis publishes it.

A forget deletes the user's history and every session opened under them, and tells each
connection of that user on every replica (a listener given to :meth:`PersonalHub.attach`) to
drop what it holds of them. An anonymous user is revoked by it: their token is refused on
every replica from then on, and the forget issues a new one.

If the store does not answer, users are served without personal history: reads are skipped
for a second after a failure, and keystrokes never wait on the store for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from indexer.personal import PersonalEntry, PersonalHistory

from .history import ALL_USERS, FORGOTTEN, HistoryEntry, HistoryError, HistoryStore
from .metrics import Metrics
from .sessions import SessionError, SessionStore
from .users import ANONYMOUS, ANONYMOUS_LIFETIME, Signer, TokenError, User, issue_anonymous, renew_anonymous

log = logging.getLogger("qac.server")

REBUILD_SECONDS = 60.0  # a copy older than this is rebuilt for the present (recency, expiry)
RETRY_SECONDS = 1.0  # after a store failure, reads are skipped this long
WAIT_SECONDS = 0.5  # longest a keystroke waits for a history being read

# Told that the user was forgotten (True), or that a forget may have gone unheard (False:
# notifications were missed).
Listener = Callable[[bool], None]


@dataclass
class _Copy:
    """What this process holds of one connected user's history."""

    connections: int = 0
    personal: PersonalHistory | None = None
    built: float = 0.0  # time.monotonic() of the copy
    version: int = 0  # bumped by every change: a read that began before one is discarded
    own: int = 0  # notifications still to come of this process's records, already in the copy
    loading: asyncio.Task[None] | None = None
    listeners: list[Listener] = field(default_factory=list)


@dataclass
class PersonalHub:
    """Tokens, the history and session stores and the per-user copies of one process."""

    signer: Signer
    store: HistoryStore
    metrics: Metrics
    anonymous_lifetime: float = ANONYMOUS_LIFETIME  # seconds an anonymous token is valid
    copy_on_write: bool = False  # ranking threads may be reading a copy: a submit changes a copy of it
    sessions: SessionStore | None = None
    _copies: dict[str, _Copy] = field(default_factory=dict)
    _retry_at: float = 0.0  # time.monotonic() before which the store is not tried again

    # -- users ------------------------------------------------------------------------

    async def identify(self, token: str | None) -> tuple[str, User]:
        """The token to use and its user: ``token`` verified (an anonymous one renewed for
        :attr:`anonymous_lifetime` once a day old), or a new anonymous user if None. Raises
        :class:`TokenError` for a forged, expired, malformed or forgotten token (while the store
        does not answer, a forgotten token is not told from others)."""
        if token is None:
            token, user = issue_anonymous(self.signer, self.anonymous_lifetime)
            self.metrics.user_tokens.labels("issued").inc()
            return token, user
        try:
            user = self.signer.verify(token)
            if user.kind == ANONYMOUS and await self._revoked(user.key):
                raise TokenError("revoked", "this user was forgotten; ask for a new token")
        except TokenError:
            self.metrics.user_tokens.labels("refused").inc()
            raise
        self.metrics.user_tokens.labels("verified").inc()
        if user.kind == ANONYMOUS:
            token = renew_anonymous(self.signer, token, user, self.anonymous_lifetime)
        return token, user

    async def _revoked(self, key: str) -> bool:
        if not self.available():
            return False
        try:
            return await self.store.revoked(key)
        except HistoryError as exc:
            self._failed(exc)
            return False

    async def from_header(self, authorization: str | None) -> User | None:
        """The user of an ``Authorization: Bearer <user token>`` header, None without one;
        raises :class:`TokenError` for any other header."""
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.metrics.user_tokens.labels("refused").inc()
            raise TokenError("malformed", "expected Authorization: Bearer <user token>")
        return (await self.identify(token.strip()))[1]

    # -- copies -----------------------------------------------------------------------

    def attach(self, key: str, listener: Listener | None = None) -> None:
        """A connection of this user opened: keep a copy of their history from now on, and
        tell ``listener`` when the user is forgotten anywhere."""
        copy = self._copies.setdefault(key, _Copy())
        copy.connections += 1
        if listener is not None:
            copy.listeners.append(listener)

    def detach(self, key: str, listener: Listener | None = None) -> None:
        copy = self._copies.get(key)
        if copy is None:
            return
        if listener is not None:
            copy.listeners.remove(listener)
        copy.connections -= 1
        if copy.connections <= 0:
            del self._copies[key]
            if copy.loading is not None:
                copy.loading.cancel()

    def changed(self, key: str) -> None:
        """The user's history changed (``ALL_USERS``: anyone's may have): drop the copies."""
        targets = list(self._copies.values()) if key == ALL_USERS else [self._copies.get(key)]
        for copy in targets:
            if copy is not None:
                copy.version += 1
                copy.personal = None
                if key == ALL_USERS:
                    copy.own = 0  # the notifications awaited may never come

    def _notified(self, key: str) -> None:
        """The store announced a change: one this process's copy already has (its own record,
        announced in order with the others) is skipped; any other drops the copy."""
        copy = self._copies.get(key)
        if copy is not None and copy.own > 0:
            copy.own -= 1
        else:
            self.changed(key)

    async def personal(self, key: str) -> PersonalHistory | None:
        """The copy of a connected user's history for ranking: read from the store if there is
        none (waiting at most :data:`WAIT_SECONDS`); None while the store does not answer."""
        copy = self._copies.get(key)
        if copy is None:
            return None
        if copy.personal is None:
            if copy.loading is None or copy.loading.done():
                if time.monotonic() < self._retry_at:
                    return None
                copy.loading = asyncio.create_task(self._load(key, copy))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(copy.loading), WAIT_SECONDS)
        elif time.monotonic() - copy.built > REBUILD_SECONDS:
            copy.personal = self._rebuild(copy.personal)
            copy.built = time.monotonic()
        return copy.personal

    async def refresh(self, key: str) -> int | None:
        """Read the user's history now (and keep it if they are connected): its length, or
        None if the store does not answer."""
        copy = self._copies.get(key)
        version = copy.version if copy is not None else 0
        entries = await self.entries(key)
        if entries is None:
            return None
        if copy is not None and copy.version == version and self._copies.get(key) is copy:
            copy.personal, copy.built = self._build(entries), time.monotonic()
        return len(entries)

    async def _load(self, key: str, copy: _Copy) -> None:
        while copy.personal is None and self._copies.get(key) is copy:
            version = copy.version
            entries = await self.entries(key)
            if entries is None:
                return
            if copy.version == version:
                copy.personal, copy.built = self._build(entries), time.monotonic()

    def _build(self, entries: Sequence[HistoryEntry | PersonalEntry]) -> PersonalHistory:
        return PersonalHistory(entries, time.time())

    def _rebuild(self, old: PersonalHistory) -> PersonalHistory:
        """``old`` as of now: recency moves on and expired entries go, without the store."""
        now = time.time()
        cutoff = now - self.store.ttl
        kept = [PersonalEntry(q, c, t) for q, c, t in zip(old.keys, old.counts, old.last_used) if t > cutoff]
        return PersonalHistory(kept, now)

    def forgotten(self, key: str) -> None:
        """The user was forgotten (``ALL_USERS``: anyone may have been): tell their connections."""
        targets = list(self._copies.values()) if key == ALL_USERS else [self._copies.get(key)]
        for copy in targets:
            for listener in list(copy.listeners) if copy is not None else ():
                listener(key != ALL_USERS)

    async def follow(self) -> None:
        """Forever: drop the copies of users whose history changed anywhere, and tell the
        connections of users forgotten anywhere."""
        while True:
            try:
                async for key in self.store.changes():
                    user_key = key.removeprefix(FORGOTTEN)
                    if user_key != key or key == ALL_USERS:
                        self.changed(user_key)
                        self.forgotten(user_key)
                    else:
                        self._notified(key)
            except HistoryError as exc:
                self._failed(exc)
            self.changed(ALL_USERS)
            self.forgotten(ALL_USERS)
            await asyncio.sleep(RETRY_SECONDS)

    # -- the store, failures reported -------------------------------------------------

    def available(self) -> bool:
        """Whether the store answered its last call (or a second has passed since it failed)."""
        return time.monotonic() >= self._retry_at

    def _failed(self, exc: HistoryError) -> None:
        if time.monotonic() >= self._retry_at:
            log.error("personal history store failed, serving without it for now: %s", exc)
        self.metrics.history_errors.inc()
        self._retry_at = time.monotonic() + RETRY_SECONDS

    async def entries(self, key: str) -> list[HistoryEntry] | None:
        try:
            return await self.store.entries(key)
        except HistoryError as exc:
            self._failed(exc)
            return None

    async def record(self, key: str, query: str) -> bool:
        """Count a submitted query in the user's history; whether the store took it. The copy
        of a connected user counts it too (:meth:`PersonalHistory.record`), not rebuilt."""
        copy = self._copies.get(key)
        personal = copy.personal if copy is not None else None
        if copy is not None:
            copy.own += 1
        now = time.time()
        try:
            await self.store.record(key, query, now)
        except HistoryError as exc:
            if copy is not None:
                copy.own = max(0, copy.own - 1)
            self.changed(key)
            self._failed(exc)
            return False
        if copy is not None and personal is not None and self._copies.get(key) is copy and copy.personal is personal:
            if self.copy_on_write:
                personal = copy.personal = personal.copy()
            personal.record(query, now, self.store.max_entries, self.store.ttl)
        else:  # no copy, or one read meanwhile that may or may not have it: read it again
            self.changed(key)
        return True

    async def forget(self, user: User) -> tuple[str, User] | None:
        """Delete the user's whole history and every session opened under them, and announce
        it to every replica (raises HistoryError); this process's copy goes at once. An
        anonymous user is revoked: the new user and their token are returned (None for a
        signed-in user, who stays who they are)."""
        self.metrics.history_deletes.labels("forget").inc()
        anonymous = user.kind == ANONYMOUS
        try:
            if self.sessions is not None:  # first: the announcement below makes holders drop theirs
                await self.sessions.forget(user.key)
            # A revoked token stays refused as long as it could otherwise be valid.
            await self.store.forget(user.key, self.anonymous_lifetime if anonymous else 0.0)
        except SessionError as exc:
            error = HistoryError(f"session store: {exc.__class__.__name__}")
            self._failed(error)
            raise error from None
        except HistoryError as exc:
            self._failed(exc)
            raise
        self.changed(user.key)
        if not anonymous:
            return None
        self.metrics.user_tokens.labels("issued").inc()
        return issue_anonymous(self.signer, self.anonymous_lifetime)

    async def remove(self, key: str, query: str) -> bool:
        """Delete one query (raises HistoryError); whether it was there."""
        self.metrics.history_deletes.labels("remove").inc()
        try:
            removed = await self.store.remove(key, query)
        except HistoryError as exc:
            self._failed(exc)
            raise
        self.changed(key)
        return removed
