"""The WebSocket protocol: JSON text frames, parsed into messages and encoded back.

Every frame, error code and close code is described in docs/PROTOCOL.md.

Client to server::

    {"type": "query", "id": <int>, "prefix": "<text as typed>"}  (+ "context": true to be told)
    {"type": "submit", "query": "<text>"}
    {"type": "user", "token": "<user token>"}      present a user; without "token": be issued one
    {"type": "forget"}                              delete the user's whole personal history and sessions
    {"type": "remove", "query": "<text>"}          delete one query of it
    {"type": "resume", "session": "<signed id>"}   first frame: resume a session (answered with hello)

Server to client::

    {"type": "hello", "session": "<id>", "index": "<model version>", "queries": [<normalized>, ...],
     "limits": {"max_prefix": <int>, "rate": <float>, "burst": <int>}}   (+ "history": len(queries), deprecated)
    {"type": "suggestions", "id": <int>, "prefix": "<normalized>", "items": [...], "took_ms": <int>}
     (+ "context": <bool> when the query asked)
    {"type": "ack", "queries": [...], "added": <bool>}   (+ "stored": false; + "history": len(queries), deprecated)
    {"type": "user", "token": "<user token>", "history": <int or null>}   (+ "removed" after a remove;
                                                     + "session", "queries": [] when a new session began)
    {"type": "error", "id": <int or null>, "code": "<code>", "message": "<text>"}   (+ "for": "<type>")
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from indexer.model import Completion

# Error codes. Every one but INTERNAL names something the client did; all keep the connection open.
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
UNKNOWN_TYPE = "unknown_type"
TOO_LONG = "too_long"
STALE_ID = "stale_id"
RATE_LIMITED = "rate_limited"
INTERNAL = "internal"
BAD_USER = "bad_user"  # a user token that is forged, expired, malformed or forgotten
NO_USER = "no_user"  # forget or remove before a user was presented
HISTORY_DOWN = "history_unavailable"  # the personal history store does not answer
BAD_SESSION = "bad_session"  # a resume with a session id this server never issued
BINARY_FRAME = "binary_frame"  # a binary frame: the protocol is text
OVERLOADED = "overloaded"  # GET /complete only: the ranking queue is full (503)

# Close codes besides the standard ones: 1008 policy (over the rate limit too long, a client
# that does not read), 1009 frame too big, 1013 try again later (server or address full).
CLOSE_IDLE = 4000

MAX_ID = 2**53 - 1  # the largest integer a JavaScript client counts to exactly
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ProtocolError(Exception):
    """A message the server answers with an error frame; ``id`` is the query's and
    ``frame_type`` the refused frame's ``type``, if known."""

    def __init__(self, code: str, message: str, id: int | None = None, frame_type: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.frame_type = frame_type


@dataclass(frozen=True)
class Query:
    """A keystroke: rank completions of ``prefix``; ``id`` is echoed in the answer. ``context``:
    the client wants to know whether the session queries or personal history changed the list (it costs a second ranking
    when the answer is not cached)."""

    id: int
    prefix: str
    context: bool = False


@dataclass(frozen=True)
class Submit:
    """A finished query, appended to the session's queries."""

    query: str


@dataclass(frozen=True)
class UserHello:
    """Present a user token, or ask for an anonymous one (``token`` None)."""

    token: str | None


@dataclass(frozen=True)
class Forget:
    """Delete the user's whole personal history."""


@dataclass(frozen=True)
class Remove:
    """Delete one query from the user's personal history."""

    query: str


@dataclass(frozen=True)
class Resume:
    """Resume a session by the (signed) id a ``hello`` gave; the first frame of a connection."""

    session: str


ClientMessage = Query | Submit | UserHello | Forget | Remove | Resume
CLIENT_TYPES = frozenset({"query", "submit", "user", "forget", "remove", "resume"})

MAX_SESSION = 256  # characters of a signed session id (they are about 80)


def frame_size(text: str) -> int:
    """The size of a text frame in bytes (UTF-8)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def parse(text: str, *, max_prefix: int) -> ClientMessage:
    """The message in a text frame; raises :class:`ProtocolError` naming what is wrong."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(BAD_JSON, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(BAD_MESSAGE, f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind == "query":
        qid = data.get("id")
        if not _is_int(qid):
            raise ProtocolError(BAD_MESSAGE, f"a query needs an integer 'id', got {qid!r}"[:200], None, kind)
        if not 0 <= qid <= MAX_ID:
            raise ProtocolError(BAD_MESSAGE, f"a query 'id' must be in 0..2**53-1, got {qid}"[:200], None, kind)
        context = data.get("context", False)
        if not isinstance(context, bool):
            raise ProtocolError(BAD_MESSAGE, "a query's 'context' is true or false", qid, kind)
        return Query(qid, _text(data, kind, "prefix", max_prefix, qid), context)
    if kind == "submit":
        return Submit(_text(data, kind, "query", max_prefix, None))
    if kind == "user":
        token = data.get("token")
        if token is not None and not isinstance(token, str):
            raise ProtocolError(BAD_MESSAGE, "a user 'token' is a string", None, kind)
        return UserHello(token)  # checked by the signer: any bad token is a bad_user
    if kind == "forget":
        return Forget()
    if kind == "remove":
        return Remove(_text(data, kind, "query", max_prefix, None))
    if kind == "resume":
        return Resume(_text(data, kind, "session", MAX_SESSION, None))
    if not isinstance(kind, str):
        raise ProtocolError(BAD_MESSAGE, f"expected a string 'type', got {kind!r}", peek_id(data))
    raise ProtocolError(UNKNOWN_TYPE, f"expected type 'query', 'submit', 'user', 'forget', 'remove' or 'resume', "
                        f"got {kind[:40]!r}", peek_id(data))


def peek(text: str) -> dict[str, Any] | None:
    """The JSON object of a frame, or None if it is not one; never raises."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def peek_id(message: str | dict[str, Any] | None) -> int | None:
    """The integer ``id`` of a message (a frame's text, or its :func:`peek` value) if it has
    one, for error frames; never raises."""
    if isinstance(message, str):
        message = peek(message)
    qid = message.get("id") if isinstance(message, dict) else None
    return qid if _is_int(qid) and 0 <= qid <= MAX_ID else None


def peek_type(message: str | dict[str, Any] | None) -> str | None:
    """The ``type`` of a message (as :func:`peek_id` takes it) if it is a client frame's, for
    error frames; never raises."""
    if isinstance(message, str):
        message = peek(message)
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if isinstance(kind, str) and kind in CLIENT_TYPES else None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(data: dict[str, Any], kind: str, key: str, limit: int, qid: int | None) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ProtocolError(BAD_MESSAGE, f"expected a string {key!r}, got {value!r}"[:200], qid, kind)
    if len(value) > limit:
        raise ProtocolError(TOO_LONG, f"{key} of {len(value)} characters; the limit is {limit}", qid, kind)
    if _CONTROL.search(value):
        raise ProtocolError(BAD_MESSAGE, f"{key} holds control characters", qid, kind)
    return value


def items(completions: Sequence[Completion]) -> list[dict[str, Any]]:
    """Suggestions as JSON objects, the same for the WebSocket and ``GET /complete``."""
    out: list[dict[str, Any]] = []
    for c in completions:
        item: dict[str, Any] = {"query": c.query, "score": round(c.score, 6)}
        if c.personal:  # only then: frames stay small
            item["personal"] = True
        if c.corrected:  # does not start with what was typed
            item["corrected"] = True
        out.append(item)
    return out


def hello(session: str, index: str, queries: Sequence[str], *, max_prefix: int, rate: float, burst: int,
          restored: bool | None = None) -> str:
    """``queries``: the session queries, oldest first; the limits are the connection's;
    ``restored``, in the hello answering a resume whose store answered: whether the store gave
    queries back (left out otherwise). ``history``, their number, is a deprecated alias kept for
    a release (on ``user`` frames, ``history`` is the size of the user's personal history)."""
    frame: dict[str, Any] = {"type": "hello", "session": session, "index": index, "history": len(queries),
                             "queries": list(queries),
                             "limits": {"max_prefix": max_prefix, "rate": float(rate), "burst": burst}}
    if restored is not None:
        frame["restored"] = restored
    return _dump(frame)


TOOK_MS_STEP = 5
"""``took_ms`` is given in steps this coarse (rounded up): an answer ranked ahead and one ranked
on the spot look alike (docs/PROTOCOL.md)."""


def coarse_ms(ms: float) -> int:
    """``ms`` rounded up to a whole :data:`TOOK_MS_STEP` (at least one)."""
    return TOOK_MS_STEP * max(1, math.ceil(ms / TOOK_MS_STEP))


def suggestions(qid: int, prefix: str, completions: Sequence[Completion], took_ms: float,
                context: bool | None = None) -> str:
    """``context``: the history (session or personal) changed the list a fresh session gets;
    left out when the query did not ask (None)."""
    frame: dict[str, Any] = {"type": "suggestions", "id": qid, "prefix": prefix, "items": items(completions),
                             "took_ms": coarse_ms(took_ms)}
    if context is not None:
        frame["context"] = context
    return _dump(frame)


def ack(queries: Sequence[str], added: bool, stored: bool = True) -> str:
    """``queries``: the session queries after the submit (``history``: deprecated, as in
    :func:`hello`); ``added`` is false when the query normalized to nothing; ``stored`` is false
    while the session store is down (the query is kept by this connection)."""
    frame: dict[str, Any] = {"type": "ack", "history": len(queries), "queries": list(queries), "added": added}
    if not stored:
        frame["stored"] = False
    return _dump(frame)


def user(token: str, history: int | None, removed: bool | None = None, session: str | None = None,
         queries: Sequence[str] | None = None) -> str:
    """``history`` is None while the personal history store cannot be read; ``session``: the
    (signed) id of the new, empty session the connection goes on in, if it started one;
    ``queries``: after ``remove``, the session's queries as they are now."""
    frame: dict[str, Any] = {"type": "user", "token": token, "history": history}
    if removed is not None:
        frame["removed"] = removed
    if session is not None:
        frame["session"] = session
        frame["queries"] = []
    elif queries is not None:
        frame["queries"] = list(queries)
    return _dump(frame)


def error(code: str, message: str, qid: int | None = None, frame_type: str | None = None) -> str:
    """``frame_type``: the ``type`` of the refused frame, left out when unknown."""
    frame: dict[str, Any] = {"type": "error", "id": qid, "code": code, "message": message}
    if frame_type is not None:
        frame["for"] = frame_type
    return _dump(frame)


def _dump(obj: dict[str, Any]) -> str:
    """A frame's text. orjson encodes a suggestions frame in ~2 us where json took 25-50; a
    string orjson refuses (a lone surrogate a client escaped in its prefix) goes through json."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
