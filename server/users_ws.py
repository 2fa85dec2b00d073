"""One connection's user: the ``user``, ``forget`` and ``remove`` frames, and what a submit
adds to the user's personal history.

Without a user (none presented yet, or a token refused), the connection works as before,
minus personal history. Every answer here is a frame to send; errors are
:class:`~server.protocol.ProtocolError` like the rest of the protocol.
"""

from __future__ import annotations

from collections.abc import Callable

from indexer.normalize import normalize
from indexer.personal import PersonalHistory

from . import protocol
from .history import HistoryError
from .personal import PersonalHub
from .protocol import Forget, ProtocolError, Remove, UserHello
from .users import TokenError, User

MAX_HELD = 20  # submits kept by a connection while the history store does not answer


class UserLink:
    """The user of one connection, if any."""

    def __init__(self, hub: PersonalHub, allow: Callable[[str], bool] = lambda key: True):
        self.hub = hub
        self._allow = allow  # whether a user key may record one more submit now (its rate)
        self.user: User | None = None
        self._token = ""
        self._held: list[str] = []  # submits the store did not take yet, oldest first

    async def handle(self, msg: UserHello | Forget | Remove) -> str:
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
                await self.hub.forget(key)
                return protocol.user(self._token, 0)
            query = normalize(msg.query)
            self._held = [q for q in self._held if q != query]
            removed = bool(query) and await self.hub.remove(key, query)
        except HistoryError:
            raise ProtocolError(protocol.HISTORY_DOWN, "the personal history store does not answer; "
                                "try again", frame_type=kind) from None
        return protocol.user(self._token, await self.hub.refresh(key), removed)

    async def _identify(self, token: str | None) -> str:
        try:
            token, user = self.hub.identify(token)
        except TokenError as exc:  # the message names the reason, never the token
            self.close()
            raise ProtocolError(protocol.BAD_USER, f"user token refused ({exc.code}): {exc}",
                                frame_type="user") from None
        if self.user is None or user.key != self.user.key:
            self.close()
            self.user = user
            self.hub.attach(user.key)
        self._token = token
        await self._write_held()
        return protocol.user(token, await self.hub.refresh(user.key))

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
            self.hub.detach(self.user.key)
        self.user = None
        self._token = ""
        self._held.clear()

