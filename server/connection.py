"""One WebSocket client, from hello to disconnect.

Two tasks per connection: the reader parses frames, answers submits and errors at once, and
puts each keystroke in a one-slot mailbox, replacing (superseding) a keystroke not yet
ranked; the ranker takes the newest keystroke from the mailbox, ranks it with the session's
history and sends the suggestions. Query ids must increase on a connection, so answers never
go backwards and the last keystroke is always answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from indexer.normalize import normalize

from . import protocol
from .config import ServerConfig
from .metrics import Metrics
from .protocol import ProtocolError, Query, Submit
from .ranker import Ranker
from .sessions import SessionError, SessionStore

log = logging.getLogger("qac.server")

_Closed = (WebSocketDisconnect, WebSocketDisconnected)


@dataclass
class ServerState:
    """What every request handler shares: configuration, model, sessions, metrics."""

    config: ServerConfig
    ranker: Ranker
    store: SessionStore
    metrics: Metrics


class TokenBucket:
    """Allows ``rate`` events per second on average and ``burst`` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


# How long a connection ranks with its own copy of the session's history before reading it
# from the store again (which also refreshes the session's TTL). The copy follows this
# connection's own submits at once; only another tab's submits wait for the refresh.
HISTORY_REFRESH_SECONDS = 10.0


class Connection:
    """Serves one accepted WebSocket until the client leaves."""

    def __init__(self, websocket: WebSocket, state: ServerState):
        self.ws = websocket
        self.state = state
        self.session = ""
        self._pending: tuple[Query, float] | None = None
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._last_id: int | None = None
        self._bucket = TokenBucket(state.config.rate, state.config.burst)
        self._history: list[str] = []
        self._history_read = 0.0  # time.monotonic() of the last read from the store

    async def serve(self, requested_session: str | None) -> None:
        """Say hello, then read and answer frames until the client disconnects."""
        store, metrics = self.state.store, self.state.metrics
        try:
            self.session, history = await store.open(requested_session)
            self._remember(history)
        except SessionError as exc:
            log.error("%s", exc)
            await self._send(protocol.error(protocol.UNAVAILABLE, "session store unavailable"))
            await self.ws.close(code=1011)
            return
        metrics.connections.inc()
        ranking = asyncio.create_task(self._rank_loop())
        try:
            await self._send(protocol.hello(self.session, self.state.ranker.version, len(history)))
            await self._read_loop()
        except _Closed:
            pass
        finally:
            metrics.connections.dec()
            ranking.cancel()
            with contextlib.suppress(asyncio.CancelledError, *_Closed):
                await ranking

    def _remember(self, history: list[str]) -> None:
        self._history = list(history)
        self._history_read = time.monotonic()

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            await self.ws.send_text(text)

    async def _read_loop(self) -> None:
        config = self.state.config
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            received = time.perf_counter()
            text = message.get("text")
            try:
                if text is None:
                    raise ProtocolError(protocol.BAD_MESSAGE, "binary frames are not supported; send text")
                if not self._bucket.take():
                    raise ProtocolError(protocol.RATE_LIMITED,
                                        f"more than {config.rate:g} messages per second; slow down",
                                        protocol.peek_id(text) if len(text) <= config.max_message else None)
                msg = protocol.parse(text, max_message=config.max_message, max_prefix=config.max_prefix)
                if isinstance(msg, Query):
                    self._enqueue(msg, received)
                else:
                    await self._submit(msg)
            except ProtocolError as exc:
                self.state.metrics.errors.labels(exc.code).inc()
                await self._send(protocol.error(exc.code, exc.message, exc.id))

    def _enqueue(self, query: Query, received: float) -> None:
        if self._last_id is not None and query.id <= self._last_id:
            raise ProtocolError(protocol.STALE_ID, f"query ids must increase: got {query.id} after "
                                f"{self._last_id}", query.id)
        self._last_id = query.id
        self.state.metrics.keystrokes.labels("ws").inc()
        if self._pending is not None:
            self.state.metrics.superseded.inc()
        self._pending = (query, received)
        self._wake.set()

    async def _submit(self, submit: Submit) -> None:
        query = normalize(submit.query)
        store = self.state.store
        try:
            if query:
                length = await store.append(self.session, query)
                self._history = (self._history + [query])[-self.state.config.max_history :]
                if length != len(self._history):  # another tab wrote meanwhile
                    self._remember(await store.history(self.session))
            else:
                self._remember(await store.history(self.session))
                length = len(self._history)
        except SessionError as exc:
            log.error("%s", exc)
            raise ProtocolError(protocol.UNAVAILABLE, "session store unavailable; not recorded") from None
        if query:
            self.state.metrics.submits.inc()
        await self._send(protocol.ack(length))

    async def _rank_loop(self) -> None:
        metrics = self.state.metrics
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending is None:
                continue
            query, received = self._pending
            self._pending = None
            try:
                if time.monotonic() - self._history_read > HISTORY_REFRESH_SECONDS:
                    self._remember(await self.state.store.history(self.session))
                ranked = await self.state.ranker.complete(query.prefix, self._history)
            except SessionError as exc:
                log.error("%s", exc)
                metrics.errors.labels(protocol.UNAVAILABLE).inc()
                await self._send(protocol.error(protocol.UNAVAILABLE, "session store unavailable", query.id))
                continue
            except Exception:
                log.exception("ranking %r failed", query.prefix)
                metrics.errors.labels(protocol.INTERNAL).inc()
                await self._send(protocol.error(protocol.INTERNAL, "ranking failed", query.id))
                continue
            took = time.perf_counter() - received
            metrics.latency.labels("ws").observe(took)
            await self._send(protocol.suggestions(query.id, ranked.prefix, ranked.items, took * 1000))
