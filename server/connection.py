"""One WebSocket client, from hello to disconnect.

Two tasks per connection: the reader parses frames, answers submits, user frames
(``server/users_ws.py``) and errors at once, and puts each keystroke in a one-slot mailbox,
replacing (superseding) a keystroke not yet ranked; the ranker takes the newest keystroke
from the mailbox, ranks it with the session's history (and the user's personal history, when
the connection has a user) and sends the suggestions. Query ids must increase on a
connection, so answers never go backwards and the last keystroke is always answered.

What a connection may cost is bounded: one pending keystroke, a token bucket of messages, a
frame size, an idle timeout, and a send timeout for a client that stops reading (the
transport's write buffer is bounded, so a send waits; it does not queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from indexer.normalize import normalize

from . import protocol
from .config import ServerConfig
from .metrics import Metrics
from .personal import PersonalHub
from .protocol import ProtocolError, Query, Remove, Submit
from .ranker import Ranker
from .sessions import SessionError, SessionStore, new_session_id, valid_session_id
from .store_health import StoreHealth
from .users_ws import UserLink

log = logging.getLogger("qac.server")


class _Drop(Exception):
    """End the connection from the server's side: close code, reason, and the metric's label."""

    def __init__(self, code: int, reason: str, label: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.label = label


_Closed = (WebSocketDisconnect, WebSocketDisconnected)

# Scope key of a callable that aborts the connection's transport, set by :func:`expose_abort`.
ABORT_KEY = "qac.abort"


def expose_abort(app: ASGIApp) -> ASGIApp:
    """Outermost ASGI wrapper: puts an abort of the TCP connection under ``scope[ABORT_KEY]``
    when the server is uvicorn (whose ASGI ``send`` is a method of the protocol that owns the
    transport). ASGI can only close a WebSocket, and a close waits for the client to read."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None and hasattr(transport, "abort"):
                scope[ABORT_KEY] = transport.abort
        await app(scope, receive, send)

    return wrapped


@dataclass
class ServerState:
    """What every request handler shares: configuration, model, sessions, users, metrics."""

    config: ServerConfig
    ranker: Ranker
    store: SessionStore
    metrics: Metrics
    health: StoreHealth
    users: PersonalHub
    open_connections: int = 0


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
    """Serves one accepted WebSocket until the client leaves or is dropped."""

    def __init__(self, websocket: WebSocket, state: ServerState):
        self.ws = websocket
        self.state = state
        self.session = ""
        self._pending: tuple[Query, float] | None = None
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._store_lock = asyncio.Lock()  # one store call sequence at a time per connection
        self._last_id: int | None = None
        self._bucket = TokenBucket(state.config.rate, state.config.burst)
        self._history: list[str] = []
        self._history_read = 0.0  # time.monotonic() of the last read from the store
        self._unsynced: list[str] = []  # submits made while the store was down, oldest first
        self.user = UserLink(state.users)

    async def serve(self, requested_session: str | None) -> None:
        """Say hello, then read and answer frames until the client disconnects."""
        metrics = self.state.metrics
        await self._open(requested_session)
        metrics.connections.inc()
        tasks: set[asyncio.Task[None]] = set()
        try:
            await self._send(protocol.hello(self.session, self.state.ranker.version, len(self._history)))
            tasks = {asyncio.create_task(self._read_loop()), asyncio.create_task(self._rank_loop())}
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # what ended the connection, if it was an exception
        except _Closed:
            pass
        except _Drop as drop:
            metrics.closed.labels(drop.label).inc()
            log.info("closing a connection: %s", drop.reason)
            for task in tasks:
                task.cancel()
            # A close frame waits on the same write buffer as a stuck send: bound it, then cut
            # the TCP connection, which would otherwise linger until the client reads.
            try:
                await asyncio.wait_for(self.ws.close(drop.code, drop.reason), 1.0)
            except TimeoutError:
                abort = self.ws.scope.get(ABORT_KEY)
                if abort is not None:
                    abort()
            except _Closed:
                pass
        finally:
            metrics.connections.dec()
            self.user.close()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, *_Closed, _Drop):
                    await task

    async def _open(self, requested: str | None) -> None:
        """Resume or start the session; without a store, go on with the requested id and no history."""
        health = self.state.health
        if health.up:
            try:
                self.session, history = await self.state.store.open(requested)
                health.answered()
                self._remember(history)
                return
            except SessionError as exc:
                health.failed(exc)
        self.session = requested if valid_session_id(requested) else new_session_id()
        self._remember([])

    def _remember(self, history: list[str]) -> None:
        self._history = list(history)
        self._history_read = time.monotonic()

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            try:
                await asyncio.wait_for(self.ws.send_text(text), self.state.config.send_timeout)
            except TimeoutError:
                raise _Drop(1008, "client does not read its messages", "slow_client") from None

    async def _receive(self) -> Message:
        config = self.state.config
        try:
            return await asyncio.wait_for(self.ws.receive(), config.idle_timeout)
        except TimeoutError:
            raise _Drop(protocol.CLOSE_IDLE, f"idle for {config.idle_timeout:g} s", "idle") from None

    async def _read_loop(self) -> None:
        config = self.state.config
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                return
            received = time.perf_counter()
            text = message.get("text")
            try:
                if not isinstance(text, str):
                    raise ProtocolError(protocol.BAD_MESSAGE, "binary frames are not supported; send text")
                if protocol.frame_size(text) > config.max_message:
                    raise _Drop(1009, f"frames are limited to {config.max_message} bytes", "frame_too_big")
                if not self._bucket.take():
                    raise ProtocolError(protocol.RATE_LIMITED,
                                        f"more than {config.rate:g} messages per second; slow down",
                                        protocol.peek_id(text))
                msg = protocol.parse(text, max_prefix=config.max_prefix)
                if isinstance(msg, Query):
                    self._enqueue(msg, received)
                elif isinstance(msg, Submit):
                    await self._submit(msg)
                else:
                    if isinstance(msg, Remove):
                        await self._discard(normalize(msg.query))
                    await self._send(await self.user.handle(msg))
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
        if query:
            self._history = (self._history + [query])[-self.state.config.max_history :]
            self._unsynced.append(query)
            self.state.metrics.submits.inc()
        stored = await self._sync(force=True)
        if query:
            await self.user.record(query)
        await self._send(protocol.ack(len(self._history), stored))

    async def _discard(self, query: str) -> None:
        """A removed query leaves this session's history too, so nothing suggests it again here."""
        if not query or query not in self._history:
            return
        self._history = [q for q in self._history if q != query]
        self._unsynced = [q for q in self._unsynced if q != query]
        if self.state.health.up:
            async with self._store_lock:
                try:
                    await self.state.store.discard(self.session, query)
                except SessionError as exc:
                    self.state.health.failed(exc)

    async def _sync(self, force: bool = False) -> bool:
        """Write held-back submits to the store and read the history back if it is due (or
        ``force``); whether the store has everything. Never raises for the store."""
        health = self.state.health
        if not health.up:
            return False
        if not force and not self._unsynced and time.monotonic() - self._history_read < HISTORY_REFRESH_SECONDS:
            return True
        store = self.state.store
        async with self._store_lock:
            try:
                length = -1
                while self._unsynced:
                    length = await store.append(self.session, self._unsynced[0])
                    del self._unsynced[0]
                if length != len(self._history):  # nothing written, or another tab wrote meanwhile
                    self._remember(await store.history(self.session))
                else:
                    self._history_read = time.monotonic()
            except SessionError as exc:
                health.failed(exc)
                return False
        health.answered()
        return True

    async def _rank_loop(self) -> None:
        metrics = self.state.metrics
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending is None:
                continue
            query, received = self._pending
            self._pending = None
            await self._sync()
            personal = await self.user.personal()
            try:
                ranked = await self.state.ranker.complete(query.prefix, self._history, personal)
            except Exception:
                log.exception("ranking %r failed", query.prefix)
                metrics.errors.labels(protocol.INTERNAL).inc()
                await self._send(protocol.error(protocol.INTERNAL, "ranking failed", query.id))
                continue
            took = time.perf_counter() - received
            metrics.latency.labels("ws").observe(took)
            await self._send(protocol.suggestions(query.id, ranked.prefix, ranked.items, took * 1000))
