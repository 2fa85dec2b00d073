"""One connection's user: the ``user``, ``forget`` and ``remove`` frames, and what a submit
adds to the user's personal history.

Without a user (none presented yet, or a token refused), the connection works as before,
minus personal history. Every answer here is a :class:`UserAnswer`, which the connection
sends as a ``user`` frame; errors are :class:`~server.protocol.ProtocolError` like the rest
of the protocol.

When the user is forgotten elsewhere (another connection, another replica), the held
submits go, an anonymous user is dropped (their token is revoked), and :attr:`UserLink.news`
says so, for the connection to drop what it holds of the user's sessions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from indexer.normalize import normalize
from indexer.personal import PersonalHistory

from . import protocol
from .history import HistoryError
from .personal import PersonalHub
from .protocol import Forget, ProtocolError, Remove, UserHello
from .users import ANONYMOUS, TokenError, User

MAX_HELD = 20  # submits kept by a connection while the history store does not answer


class UserAnswer(NamedTuple):
    """What a ``user`` frame answers: the token, the history's length (None if unknown) and,
    after ``remove``, whether the query was there."""

    token: str
    history: int | None
    removed: bool | None = None


class UserLink:
    """The user of one connection, if any."""

    def __init__(self, hub: PersonalHub, allow: Callable[[str], bool] = lambda key: True):
        self.hub = hub
        self._allow = allow  # whether a user key may record one more submit now (its rate)
        self.user: User | None = None
        self._token = ""
        self._held: list[str] = []  # submits the store did not take yet, oldest first
        # Not yet taken by the connection: True when the user was forgotten elsewhere, False
        # when they may have been (notifications were missed).
        self.news: bool | None = None

    async def handle(self, msg: UserHello | Forget | Remove) -> UserAnswer:
        """The answer to a ``user``, ``forget`` or ``remove`` frame."""
        if isinstance(msg, UserHello):
            return await self._identify(msg.token)
        kind = "forget" if isinstance(msg, Forget) else "remove"
        if self.user is None:
            raise ProtocolError(protocol.NO_USER, "send a 'user' frame first", frame_type=kind)
        key = self.user.key
        try:
            if isinstance(msg, Forget):
                self._held.clear()
                renewed = await self.hub.forget(self.user)
                if renewed is not None:  # an anonymous user: the old token is refused from now on
                    self.close()
                    self._adopt(*renewed)
                return UserAnswer(self._token, 0)
            query = normalize(msg.query)
            self._held = [q for q in self._held if q != query]
            removed = bool(query) and await self.hub.remove(key, query)
        except HistoryError:
            raise ProtocolError(protocol.HISTORY_DOWN, "the personal history store does not answer; "
                                "try again", frame_type=kind) from None
        return UserAnswer(self._token, await self.hub.refresh(key), removed)

    async def _identify(self, token: str | None) -> UserAnswer:
        try:
            token, user = await self.hub.identify(token)
        except TokenError as exc:  # the message names the reason, never the token
            self.close()
            raise ProtocolError(protocol.BAD_USER, f"user token refused ({exc.code}): {exc}",
                                frame_type="user") from None
        if self.user is None or user.key != self.user.key:
            self.close()
        self._adopt(token, user)
        await self._write_held()
        return UserAnswer(token, await self.hub.refresh(user.key))

    def _adopt(self, token: str, user: User) -> None:
        if self.user is None:
            self.user = user
            self.hub.attach(user.key, self._heard)
        self._token = token

    def _heard(self, certain: bool) -> None:
        """The user was forgotten elsewhere (``certain``), or may have been."""
        if certain:
            self._held.clear()
            if self.user is not None and self.user.kind == ANONYMOUS:
                self.close()
        self.news = certain or bool(self.news)

    def take_news(self) -> bool | None:
        """:attr:`news`, once: what was heard since the last call."""
        news, self.news = self.news, None
        return news

    async def record(self, query: str) -> None:
        """A submitted (normalized, non-empty) query goes into the user's history, unless the
        user is over their submit rate."""
        if self.user is None:
            return
        if not self._allow(self.user.key):
            self.hub.metrics.submits_refused.labels("history").inc()
            return
        self._held = (self._held + [query])[-MAX_HELD:]
        await self._write_held()  # the copy counts it: the next keystroke ranks with it

    async def _write_held(self) -> bool:
        """Record the held submits; whether all went in."""
        while self.user is not None and self._held and await self.hub.record(self.user.key, self._held[0]):
            del self._held[0]
        return not self._held

    async def personal(self) -> PersonalHistory | None:
        """The user's history for ranking, or None."""
        return await self.hub.personal(self.user.key) if self.user is not None else None

    def close(self) -> None:
        """The connection ends, or changes user."""
        if self.user is not None:
            self.hub.detach(self.user.key, self._heard)
        self.user = None
        self._token = ""
        self._held.clear()

