"""HTTP routes of personal history, with the user token in ``Authorization: Bearer <token>``
(never in the URL): ``POST /history/forget``, ``POST /history/remove`` and the optional user
of ``GET /complete``."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from indexer.normalize import normalize
from indexer.personal import PersonalHistory

from . import protocol
from .history import HistoryError
from .personal import PersonalHub
from .users import TokenError, User


def _hub(request: Request) -> PersonalHub:
    hub: PersonalHub = request.app.state.qac.users
    return hub


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"type": "error", "code": code, "message": message}, status, headers=headers)


def _refused(exc: TokenError) -> JSONResponse:
    return _error(401, protocol.BAD_USER, f"user token refused ({exc.code}): {exc}", {"WWW-Authenticate": "Bearer"})


def _unavailable() -> JSONResponse:
    return _error(503, protocol.HISTORY_DOWN, "the personal history store does not answer; try again")


async def _user(request: Request, required: bool) -> User | JSONResponse | None:
    try:
        user = await _hub(request).from_header(request.headers.get("authorization"))
    except TokenError as exc:
        return _refused(exc)
    if user is None and required:
        return _refused(TokenError("missing", "expected Authorization: Bearer <user token>"))
    return user


async def personal_of(request: Request) -> PersonalHistory | Response | None:
    """The history of the request's user for ``GET /complete``: None without a user (or while
    the store does not answer), a 401 response for a bad token."""
    user = await _user(request, required=False)
    if not isinstance(user, User):
        return user
    hub = _hub(request)
    hub.attach(user.key)  # shares the copy of this user's connections, if any
    try:
        return await hub.personal(user.key)
    finally:
        hub.detach(user.key)


async def forget_route(request: Request) -> Response:
    """``POST /history/forget``: delete the user's whole history and sessions; ``{"history": 0}``,
    with ``"token"``, the user's new one, for an anonymous user (the old one is refused from now on)."""
    user = await _user(request, required=True)
    if not isinstance(user, User):
        return user  # type: ignore[return-value]
    try:
        renewed = await _hub(request).forget(user)
    except HistoryError:
        return _unavailable()
    return JSONResponse({"history": 0} if renewed is None else {"history": 0, "token": renewed[0]})


async def remove_route(request: Request) -> Response:
    """``POST /history/remove`` with ``{"query": "..."}``: delete one query;
    ``{"history": N, "removed": bool}`` (``history`` null if it cannot be read back)."""
    user = await _user(request, required=True)
    if not isinstance(user, User):
        return user  # type: ignore[return-value]
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        return _error(400, protocol.BAD_JSON, f"not JSON: {exc}")
    query = body.get("query") if isinstance(body, dict) else None
    limit = request.app.state.qac.config.max_prefix
    if not isinstance(query, str):
        return _error(400, protocol.BAD_MESSAGE, 'expected {"query": "..."}')
    if len(query) > limit:
        return _error(400, protocol.TOO_LONG, f"query of {len(query)} characters; the limit is {limit}")
    hub = _hub(request)
    query = normalize(query)
    try:
        removed = bool(query) and await hub.remove(user.key, query)
    except HistoryError:
        return _unavailable()
    entries = await hub.entries(user.key)
    return JSONResponse({"history": None if entries is None else len(entries), "removed": removed})
