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

A session belongs to the user it was opened under (its owner in the store). A session nothing
was written to yet becomes the first user's; once used, a ``user`` frame naming someone else
starts a new session, and so does a ``forget``: the ``user`` frame answering it carries the
new id. A resume finds only the sessions of the connection's user (send ``user`` first). When
the user is forgotten on another connection or replica, this one drops its copy of the
session's queries at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
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
from .sessions import SessionError, SessionStore, new_session_id, valid_session_id
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


# How long a connection ranks with its own copy of the session's queries before reading it
# from the store again (which also refreshes the session's TTL). The copy follows this
# connection's own submits at once; only another tab's submits wait for the refresh, which a
# keystroke starts in the background and never waits for.
HISTORY_REFRESH_SECONDS = 10.0
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
        self.session = ""  # the store's id; clients see it signed
        self._issued = 0.0  # time.time() when the session id was issued
        self._owner: str | None = None  # the key of the user the session was opened under
        self._claimed = False  # the session was resumed or written to: it keeps its owner
        self._resumable = True  # until the first query or submit
        self._over_since: float | None = None  # time.monotonic() since which frames are refused
        self._refused_at = 0.0
        self._pending: tuple[Query, float] | None = None
        self._wake = asyncio.Event()
        self._answered = asyncio.Event()  # set while no keystroke waits for its answer
        self._answered.set()
        self._send_lock = asyncio.Lock()
        self._store_lock = asyncio.Lock()  # one store call sequence at a time per connection
        self._last_id: int | None = None
        self._bucket = TokenBucket(state.config.rate, state.config.burst)
        self._queries: list[str] = []
        self._queries_read = 0.0  # time.monotonic() of the last read from the store
        # Submits not in the store yet (taken but not written, or made while it was down),
        # oldest first, each numbered: what _drop takes out while a write is on its way
        # leaves the others' numbers as they were.
        self._unsynced: list[tuple[int, str]] = []
        self._taken = 0  # submits numbered so far
        self._forgotten_upto = 0  # submits numbered up to this one were taken before a forget
        self._refresh: asyncio.Task[bool] | None = None  # a read of the session's queries a keystroke started
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

    async def serve(self) -> None:
        """Say hello, then read and answer frames until the client disconnects."""
        metrics = self.state.metrics
        self.session = new_session_id()  # created in the store when first used
        self._issued = time.time()
        self._remember([])
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
            ending: list[asyncio.Task[object]] = [*tasks, *([self._refresh] if self._refresh else [])]
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
        await self._send(protocol.hello(self.state.sign_session(self.session, self._issued),
                                        self.state.completer.version, self._queries, max_prefix=config.max_prefix,
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
        # Issued less than a TTL ago, the session cannot have expired: it may just never have
        # been used (sessions are created in the store on first use), so it is kept.
        young = time.time() - issued < self.state.store.ttl
        health = self.state.health
        opened = False
        if health.up:
            try:
                async with self._store_lock:
                    session, queries = await self.state.store.open(requested, create=young, owner=self._owner)
                health.answered()
                self.session = session
                self._issued = issued if session == requested else time.time()
                self._remember(queries)
                opened = True
            except SessionError as exc:
                health.failed(exc)
        if not opened:
            self.session, self._issued = (requested, issued) if young else (new_session_id(), time.time())
            self._remember([])
        self._unsynced.clear()
        self._claimed = True
        # Whether the store gave queries back: a client that held some learns they are gone
        # (expired, or lost with a restart of a server on the memory store). Unknown: left out.
        await self._hello(restored=bool(self._queries) if opened else None)

    def _remember(self, queries: list[str]) -> None:
        self._queries = list(queries)
        self._queries_read = time.monotonic()

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
                if isinstance(msg, Submit):
                    self._take_submit(query)
                    self._add(query)
                elif isinstance(msg, Remove):
                    self._drop(query)
                self._queued_writes += 1
                await self._writes.put((msg, query, self._taken if isinstance(msg, Submit) and query else 0))
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
                            await self._discard(query)
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
        async with self._store_lock:  # no write of this session's queries is on its way meanwhile
            answer = await self.user.handle(msg)
            session = None if isinstance(msg, Remove) else self._follow_user(isinstance(msg, Forget))
        # After a remove, the session's queries as they are now: a page redraws what it shows.
        return protocol.user(*answer, session=session, queries=self._queries if isinstance(msg, Remove) else None)

    def _follow_user(self, forgot: bool) -> str | None:
        """After a ``user`` or ``forget`` frame: a new session unless this one is the user's (or
        unused, and becomes theirs); the new session's signed id, if one began."""
        user = self.user.user
        key = user.key if user is not None else None
        if not forgot and (key is None or key == self._owner):
            return None
        if not forgot and not self._claimed:
            self._owner = key
            return None
        self._owner = key
        if forgot:
            self.user.news = None  # this forget's own announcement, if it came already
        self.session, self._issued, self._claimed = new_session_id(), time.time(), False
        self._remember([])
        self._unsynced.clear()
        return self.state.sign_session(self.session, self._issued)

    def _hear(self) -> None:
        """If the user was forgotten on another connection or replica, the copy of the session's
        queries goes; if they may have been, it is read again before long."""
        news, self.user.news = self.user.news, None
        if news:
            self._queries = []
            self._unsynced.clear()
            self._forgotten_upto = self._taken
        if news is not None:
            self._queries_read = -math.inf

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

    def _add(self, query: str) -> None:
        """A submitted (normalized) query joins this connection's copy of the session's queries."""
        self._hear()
        if query:
            self._claimed = True
            limit = self.state.config.session_queries
            self._queries = (self._queries + [query])[-limit:]
            # Held back until the store takes it: never more than the session keeps.
            self._taken += 1
            self._unsynced.append((self._taken, query))
            del self._unsynced[:-limit]
            self.state.metrics.submits.inc()

    def _drop(self, query: str) -> None:
        """A removed query leaves this session's queries too, so nothing suggests it again here."""
        if query in self._queries:
            self._queries = [q for q in self._queries if q != query]
            self._unsynced = [(n, q) for n, q in self._unsynced if q != query]

    async def _submit(self, query: str, number: int) -> None:
        """Write a submit :meth:`_add` took to the stores, then acknowledge it (a forget heard
        since it was taken keeps it out of both)."""
        stored = await self._sync()
        self._hear()
        if query and number > self._forgotten_upto:
            await self.user.record(query)
        await self._send(protocol.ack(self._queries, bool(query), stored))

    async def _discard(self, query: str) -> None:
        """A query :meth:`_drop` took out goes from the session store too."""
        if query and self.state.health.up:
            async with self._store_lock:
                try:
                    await self.state.store.discard(self.session, query, self._owner)
                except SessionError as exc:
                    self.state.health.failed(exc)

    async def _sync(self) -> bool:
        """Write held-back submits to the store and read the session's queries back if it is due; whether
        the store has everything. Never raises for the store."""
        health = self.state.health
        if not health.up:
            return False
        store = self.state.store
        async with self._store_lock:
            # Checked once the lock is ours: the sync that held it (the store writer's, or one a
            # keystroke started) may have done it all. A keystroke right after a submit started
            # a second sync, which read all the session's queries back: a Redis round trip per submit.
            self._hear()
            if self._synced():
                return True
            try:
                length = -1
                if self._unsynced:  # one round trip, however many were held back
                    last = self._unsynced[-1][0]
                    batch = [q for _, q in self._unsynced]
                    length = await store.extend(self.session, batch, self._owner)
                    self._unsynced = [(n, q) for n, q in self._unsynced if n > last]
                    self._hear()
                    if self._forgotten_upto >= last:  # forgotten while on their way: they may have landed after
                        for forgotten in set(batch):
                            length = await store.discard(self.session, forgotten, self._owner)
                if length != len(self._queries):  # nothing written, or another tab wrote meanwhile
                    # What the store has, and the submits taken since that wait their turn.
                    stored = await store.queries(self.session, self._owner)
                    later = [q for _, q in self._unsynced]
                    self._remember((stored + later)[-self.state.config.session_queries:])
                else:
                    self._queries_read = time.monotonic()
            except SessionError as exc:
                health.failed(exc)
                return False
        health.answered()
        return True

    def _sync_soon(self) -> None:
        """Start :meth:`_sync` in the background if it is due and not running: a keystroke ranks
        with the session's queries this connection has (a store round trip under load was a few ms of
        its p99, BENCHMARKS.md#store-writer) and the next one gets what the read found. Not while the store
        writer has frames to answer: it syncs after this keystroke is answered."""
        if (self._refresh is None or self._refresh.done()) and self.state.health.up and not self._queued_writes \
                and not self._synced():
            self._refresh = asyncio.create_task(self._sync())

    def _synced(self) -> bool:
        """Whether the store has every submit and the session's queries were read less than
        :data:`HISTORY_REFRESH_SECONDS` ago: nothing for a sync to do."""
        return not self._unsynced and time.monotonic() - self._queries_read < HISTORY_REFRESH_SECONDS

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
        self._hear()
        self._sync_soon()
        personal = await self.user.personal()
        try:
            ranked = await self.state.completer.complete(query.prefix, self._queries, personal, context=query.context)
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
