"""One WebSocket client, from hello to disconnect.

Three tasks per connection: the reader parses frames and answers errors at once, puts each
keystroke in a one-slot mailbox, replacing (superseding) a keystroke not yet ranked, and
hands submits and user frames (``server/users_ws.py``) to the store writer, which writes them
to the stores and answers them in order; the completer takes the newest keystroke from the
mailbox, ranks it with the session's queries (and the user's personal history, when the
connection has a user) and sends the suggestions. A submit changes the session queries the completer
sees at once, and no keystroke waits for a store: the writer writes a submit once the
keystrokes received after it are answered. Query ids must increase on a connection, so
answers never go backwards and the last keystroke is always answered.

What a connection may cost is bounded: one pending keystroke, a token bucket of messages (and
its address's bucket, ``server/limits.py``), a frame size (binary frames included), a time
over the rate limit, an idle timeout, and a send timeout for a client that stops reading (the
transport's write buffer is bounded, so a send waits; it does not queue).

Session ids: a connection starts with a fresh session (nothing is written to the store until
it is used). A client resumes one with a first frame ``{"type": "resume", "session": ...}``,
never in the URL (which access logs keep). The ids clients see are signed by the server
(``Signer.sign_value("session", id)``), so an id the server never issued is refused, whatever
the store's state: nobody can make a victim adopt a session they chose.

The connection's session (its id, whose it is, the copy of the session queries and their sync
with the store) is a :class:`SessionQueries` (``server/session_queries.py``). A ``user`` frame
that starts a new session, and a ``forget``, are answered with the new id. A resume finds only
the sessions of the connection's user (send ``user`` first).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from indexer.normalize import normalize

from . import protocol
from .completer import Completer
from .config import ServerConfig
from .limits import AddressLimits, TokenBucket
from .metrics import Metrics
from .personal import PersonalHub
from .protocol import Forget, ProtocolError, Query, Remove, Resume, Submit, UserHello
from .session_queries import SessionQueries
from .sessions import SessionStore, valid_session_id
from .store_health import StoreHealth
from .users import TokenError
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
# Scope key of a callable telling whether the server's transport takes a frame without waiting
# (uvicorn's ``send`` waits only while its write buffer is over the high-water mark).
WRITABLE_KEY = "qac.writable"


def expose_abort(app: ASGIApp) -> ASGIApp:
    """Outermost ASGI wrapper: puts an abort of the TCP connection under ``scope[ABORT_KEY]``
    when the server is uvicorn (whose ASGI ``send`` is a method of the protocol that owns the
    transport). ASGI can only close a WebSocket, and a close waits for the client to read.
    Under ``scope[WRITABLE_KEY]``, whether that protocol's ``send`` would write at once."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            owner = getattr(send, "__self__", None)
            transport = getattr(owner, "transport", None)
            if transport is not None and hasattr(transport, "abort"):
                scope[ABORT_KEY] = transport.abort
            writable = getattr(owner, "writable", None)
            if isinstance(writable, asyncio.Event):
                scope[WRITABLE_KEY] = writable.is_set
        await app(scope, receive, send)

    return wrapped


@dataclass
class ServerState:
    """What every request handler shares: configuration, model, sessions, users, metrics."""

    config: ServerConfig
    completer: Completer
    store: SessionStore
    metrics: Metrics
    health: StoreHealth
    users: PersonalHub
    limits: AddressLimits
    open_connections: int = 0
    complete_pending: int = 0  # GET /complete requests waiting or being ranked

    def sign_session(self, sid: str, issued: float | None = None) -> str:
        """The session id as clients see it: signed with when it was issued, so that only ids
        this server issued resume."""
        stamp = int(time.time() if issued is None else issued)
        return self.users.signer.sign_value(SESSION_PURPOSE, f"{sid}.{stamp}")

    def verify_session(self, signed: str) -> tuple[str, float]:
        """The store's id of a signed session id and when it was issued; raises :class:`TokenError`."""
        sid, _, stamp = self.users.signer.verify_value(SESSION_PURPOSE, signed).partition(".")
        if not valid_session_id(sid) or not stamp.isdigit():
            raise TokenError("malformed", "not a session id")
        return sid, float(stamp)


SESSION_PURPOSE = "session"
OVER_LIMIT_GAP = 1.0  # a connection refused again within this many seconds is still over its rate limit
OVER_LIMIT_PAUSE = 0.5  # longest a connection over its rate limit goes unread (< OVER_LIMIT_GAP)


# Frames that write to the stores waiting for them; reading stops while this many wait (each
# has already spent a token of the rate limit).
MAX_QUEUED_WRITES = 16
# How long a connection whose client left goes on writing what it had submitted (the store
# client's own timeout is 2 s).
WRITE_GRACE_SECONDS = 3.0
# A submit is written once the keystroke typed right after it is answered: a store round trip
# and the ack after it, on the event loop while that keystroke was ranked, made it ~1.5 ms
# slower at the median under load (BENCHMARKS.md#store-writer). The store writer first lets the frames
# already received be read (WRITE_DELAY_SECONDS), then waits for the answers, at most
# WRITE_DEFER_SECONDS (a client that never pauses still gets its submits written).
WRITE_DELAY_SECONDS = 0.005
WRITE_DEFER_SECONDS = 0.5


class Connection:
    """Serves one accepted WebSocket until the client leaves or is dropped."""

    def __init__(self, websocket: WebSocket, state: ServerState, address: str = "unknown"):
        self.ws = websocket
        self.state = state
        self.address = address
        self._resumable = True  # until the first query or submit
        self._over_since: float | None = None  # time.monotonic() since which frames are refused
        self._refused_at = 0.0
        self._pending: tuple[Query, float] | None = None
        self._wake = asyncio.Event()
        self._answered = asyncio.Event()  # set while no keystroke waits for its answer
        self._answered.set()
        self._send_lock = asyncio.Lock()
        self._last_id: int | None = None
        self._bucket = TokenBucket(state.config.rate, state.config.burst)
        # Frames that write to the stores (with the query of a submit or remove, normalized, and
        # a submit's number), answered in order by _store_loop so that a keystroke read after
        # one never waits for the store's round trip.
        self._writes: asyncio.Queue[tuple[Submit | UserHello | Forget | Remove, str, int]] = asyncio.Queue(
            MAX_QUEUED_WRITES)
        self._queued_writes = 0  # frames put in _writes and not answered yet
        self._gone = False  # the client left: nothing more is sent
        self._writable = websocket.scope.get(WRITABLE_KEY)
        self._waiting_since: float | None = None  # loop time since which the reader waits for a frame
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle = False  # the idle timer cancelled the reader
        self.user = UserLink(state.users, functools.partial(state.limits.submits.take, address))
        self.session = SessionQueries(state.store, state.health, state.config.session_queries, self.user.take_news)

    async def serve(self) -> None:
        """Say hello, then read and answer frames until the client disconnects."""
        metrics = self.state.metrics
        self.session.renew()
        metrics.connections.inc()
        tasks: set[asyncio.Task[None]] = set()
        dropped = False
        try:
            await self._hello()
            tasks = {asyncio.create_task(self._read_loop()), asyncio.create_task(self._rank_loop()),
                     asyncio.create_task(self._store_loop())}
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # what ended the connection, if it was an exception
        except _Closed:
            pass
        except _Drop as drop:
            # Raised again here, the exception holds this frame, whose tasks hold it: a cycle
            # that only the cyclic collector would free, and its pauses stall every keystroke.
            drop.__traceback__ = None
            dropped = True
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
            if not dropped:
                # A page that submits and goes (the usual end of a search) has its query
                # written all the same.
                self._gone = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._writes.join(), WRITE_GRACE_SECONDS)
            metrics.connections.dec()
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            self.user.close()
            refresh = self.session.refresh
            ending: list[asyncio.Task[object]] = [*tasks, *([refresh] if refresh else [])]
            for running in ending:
                running.cancel()
            if ending:
                # Waited for, not awaited: an awaited task raises its exception again here,
                # and that exception would hold this frame (the cycle above).
                await asyncio.wait(ending)
            for running in ending:
                error = None if running.cancelled() else running.exception()
                if error is not None and not isinstance(error, (*_Closed, _Drop)):
                    raise error

    async def _hello(self, restored: bool | None = None) -> None:
        config = self.state.config
        session = self.session
        await self._send(protocol.hello(self.state.sign_session(session.id, session.issued),
                                        self.state.completer.version, session.queries, max_prefix=config.max_prefix,
                                        rate=config.rate, burst=config.burst, restored=restored))

    async def _resume(self, msg: Resume) -> None:
        """Resume the session a signed id names, then hello again. An id this server did not
        sign is refused (``bad_session``) and the connection keeps its fresh session. Without a
        store, a signed id is kept with no queries (it is ours, so no one chose it)."""
        if not self._resumable:
            raise ProtocolError(protocol.BAD_MESSAGE, "resume must come before any query or submit",
                                frame_type="resume")
        try:
            requested, issued = self.state.verify_session(msg.session)
        except TokenError as exc:
            raise ProtocolError(protocol.BAD_SESSION, f"session id refused ({exc.code}); this connection keeps "
                                "its new session", frame_type="resume") from None
        # Whether the store gave queries back: a client that held some learns they are gone
        # (expired, or lost with a restart of a server on the memory store). Unknown: left out.
        await self._hello(restored=await self.session.resume(requested, issued))

    async def _send(self, text: str) -> None:
        if self._gone:
            return
        if self._writable is not None and self._writable() and not self._send_lock.locked():
            # The transport takes the frame at once: no await in the send can wait, so it
            # needs neither the lock nor a timeout (a timer set and cancelled per frame).
            await self.ws.send_text(text)
            return
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the call in a task of
        # its own, an extra task and loop turn per frame.
        async with self._send_lock:
            try:
                async with asyncio.timeout(self.state.config.send_timeout):
                    await self.ws.send_text(text)
            except TimeoutError:
                raise _Drop(1008, "client does not read its messages", "slow_client") from None

    async def _receive(self) -> Message:
        """The next ASGI message; :class:`_Drop` once the client sent nothing for ``idle_timeout``
        seconds. One timer per connection, moved on only when it fires (:meth:`_idle_check`), not
        a timeout set and cancelled per frame."""
        loop = asyncio.get_running_loop()
        self._waiting_since = loop.time()
        if self._idle_timer is None:
            reader = asyncio.current_task()
            assert reader is not None
            self._idle_timer = loop.call_at(self._waiting_since + self.state.config.idle_timeout, self._idle_check,
                                            reader)
        try:
            return await self.ws.receive()
        except asyncio.CancelledError:
            if not self._idle:
                raise
            idle = self.state.config.idle_timeout
            raise _Drop(protocol.CLOSE_IDLE, f"idle for {idle:g} s", "idle") from None
        finally:
            self._waiting_since = None

    def _idle_check(self, reader: asyncio.Task[Any]) -> None:
        """The idle timer: cancel the reader if it has waited ``idle_timeout`` seconds for a frame,
        else fire again when it would have (counted from now while it is not waiting)."""
        if reader.done():
            self._idle_timer = None
            return
        loop = asyncio.get_running_loop()
        idle = self.state.config.idle_timeout
        since = self._waiting_since
        if since is not None and loop.time() - since >= idle:
            self._idle = True
            self._idle_timer = None
            reader.cancel()
            return
        self._idle_timer = loop.call_at((loop.time() if since is None else since) + idle, self._idle_check, reader)

    def _take(self, text: str | None) -> None:
        """Spend a message token of the connection and of its address, or raise ``rate_limited``
        (and end a connection refused at least once a second for ``rate_limit_close`` seconds)."""
        config = self.state.config
        limits = self.state.limits
        # An address that owes ranking CPU time spends no message token: it is refused as a flooder is.
        cpu_ready = limits.cpu_ready(self.address)
        if cpu_ready and self._bucket.take() and limits.messages[self.address].take():
            return
        now = time.monotonic()
        if self._over_since is None or now - self._refused_at > OVER_LIMIT_GAP:
            self._over_since = now
        self._refused_at = now
        if now - self._over_since >= config.rate_limit_close:
            raise _Drop(1008, f"over the rate limit for {config.rate_limit_close:g} s", "rate_limited")
        frame = protocol.peek(text) if text else None  # parsed once, for the id and the type
        why = (f"more than {config.rate:g} messages per second from this connection or its address" if cpu_ready
               else f"more than {config.address_cpu_rate:g} ms of ranking CPU time per second from this address")
        raise ProtocolError(protocol.RATE_LIMITED, f"{why}; slow down", protocol.peek_id(frame),
                            protocol.peek_type(frame))

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
                    data = message.get("bytes") or b""
                    if len(data) > config.max_message:
                        raise _Drop(1009, f"frames are limited to {config.max_message} bytes", "frame_too_big")
                    self._take(None)
                    raise ProtocolError(protocol.BINARY_FRAME, "binary frames are not supported; send text")
                if protocol.frame_size(text) > config.max_message:
                    raise _Drop(1009, f"frames are limited to {config.max_message} bytes", "frame_too_big")
                self._take(text)
                msg = protocol.parse(text, max_prefix=config.max_prefix)
                if isinstance(msg, Resume):
                    await self._writes.join()  # a user frame sent before it names whose session it is
                    await self._resume(msg)
                    continue
                if isinstance(msg, (Query, Submit)):
                    self._resumable = False
                if isinstance(msg, Query):
                    self._enqueue(msg, received)
                    continue
                # What the session holds changes now, for the next keystroke; the stores, in turn.
                query = normalize(msg.query) if isinstance(msg, (Submit, Remove)) else ""
                number = 0
                if isinstance(msg, Submit):
                    self._take_submit(query)
                    number = self.session.add(query)
                    if number:
                        self.state.metrics.submits.inc()
                elif isinstance(msg, Remove):
                    self.session.drop(query)
                self._queued_writes += 1
                await self._writes.put((msg, query, number))
            except ProtocolError as exc:
                await self._refuse(exc)
                if exc.code == protocol.RATE_LIMITED:
                    await asyncio.sleep(self._over_limit_pause())

    def _take_submit(self, query: str) -> None:
        """Raise ``rate_limited`` if the user and its address have no submit left: a submit
        writes history, so it has a rate of its own (``server/limits.py``), spent when written."""
        user = self.user.user
        if not query or self.state.limits.submits.ready(self.address, user.key if user else None):
            return
        self.state.metrics.submits_refused.labels("read").inc()
        config = self.state.config
        raise ProtocolError(protocol.RATE_LIMITED, f"more than {config.submit_rate:g} submits per minute from this "
                            f"user or {config.address_submit_rate:g} from its address; slow down",
                            frame_type="submit")

    def _over_limit_pause(self) -> float:
        """How long a connection just refused for its rate goes unread: until a token is due.
        A flooder's frames then wait in its own buffers (TCP pushes back) instead of costing
        this process a refusal each."""
        limits = self.state.limits
        due = max(self._bucket.wait(), limits.messages[self.address].wait(),
                  limits.cpu[self.address].wait() if limits.cpu is not None else 0.0)
        return min(due, OVER_LIMIT_PAUSE)

    async def _refuse(self, exc: ProtocolError) -> None:
        self.state.metrics.errors.labels(exc.code).inc()
        await self._send(protocol.error(exc.code, exc.message, exc.id, exc.frame_type))

    async def _store_loop(self) -> None:
        """Answer the frames that write to the stores, one at a time, in the order they came."""
        while True:
            msg, query, number = await self._writes.get()
            try:
                try:
                    if isinstance(msg, Submit):
                        await self._keystrokes_first()
                        await self._submit(query, number)
                    else:
                        if isinstance(msg, Remove):
                            await self.session.discard(query)
                        await self._send(await self._user_frame(msg))
                except ProtocolError as exc:
                    await self._refuse(exc)
            except _Closed:
                self._gone = True  # the writes still waiting are made all the same, unanswered
            finally:
                self._queued_writes -= 1
                self._writes.task_done()

    async def _user_frame(self, msg: UserHello | Forget | Remove) -> str:
        """The answer to a ``user``, ``forget`` or ``remove`` frame; the session follows the user."""
        async with self.session.lock:  # no write of the session queries is on its way meanwhile
            answer = await self.user.handle(msg)
            session = None if isinstance(msg, Remove) else self._follow_user(isinstance(msg, Forget))
        # After a remove, the session queries as they are now: a page redraws what it shows.
        queries = self.session.queries if isinstance(msg, Remove) else None
        return protocol.user(*answer, session=session, queries=queries)

    def _follow_user(self, forgot: bool) -> str | None:
        """After a ``user`` or ``forget`` frame: the new session's signed id, if one began."""
        user = self.user.user
        if forgot:
            self.user.news = None  # this forget's own announcement, if it came already
        if not self.session.follow(user.key if user is not None else None, forgot):
            return None
        return self.state.sign_session(self.session.id, self.session.issued)

    async def _keystrokes_first(self) -> None:
        """Wait until the keystrokes received so far are answered, at most
        :data:`WRITE_DEFER_SECONDS` (none of it once the client has left)."""
        if self._gone:
            return
        await asyncio.sleep(WRITE_DELAY_SECONDS)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WRITE_DEFER_SECONDS):
                await self._answered.wait()

    def _enqueue(self, query: Query, received: float) -> None:
        if self._last_id is not None and query.id <= self._last_id:
            raise ProtocolError(protocol.STALE_ID, f"query ids must increase: got {query.id} after "
                                f"{self._last_id}", query.id, "query")
        self._last_id = query.id
        self.state.metrics.ws_keystrokes.inc()
        if self._pending is not None:
            self.state.metrics.superseded.inc()
        self._pending = (query, received)
        self._answered.clear()
        self._wake.set()

    async def _submit(self, query: str, number: int) -> None:
        """Write a submit the session took (``number``) to the stores, then acknowledge it (a
        forget heard since it was taken keeps it out of both)."""
        session = self.session
        stored = await session.sync()
        session.hear()
        if query and not session.forgotten(number):
            await self.user.record(query)
        await self._send(protocol.ack(session.queries, bool(query), stored))

    async def _rank_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending is None:
                continue
            query, received = self._pending
            self._pending = None
            try:
                await self._answer(query, received)
            finally:
                if self._pending is None:
                    self._answered.set()

    async def _answer(self, query: Query, received: float) -> None:
        """Rank one keystroke and send its suggestions (or an ``internal`` error)."""
        metrics = self.state.metrics
        self.session.hear()
        if not self._queued_writes:  # else the store writer syncs once this keystroke is answered
            self.session.sync_soon()
        personal = await self.user.personal()
        try:
            ranked = await self.state.completer.complete(query.prefix, self.session.queries, personal,
                                                         context=query.context)
        except Exception:
            log.exception("ranking %r failed", query.prefix)
            metrics.errors.labels(protocol.INTERNAL).inc()
            await self._send(protocol.error(protocol.INTERNAL, "ranking failed", query.id, "query"))
            return
        self.state.limits.charge(self.address, ranked.cpu)
        took = time.perf_counter() - received
        metrics.ws_latency.observe(took)
        metrics.ws_ranking_cpu.inc(ranked.cpu)
        await self._send(protocol.suggestions(query.id, ranked.prefix, ranked.items, took * 1000, ranked.context))
