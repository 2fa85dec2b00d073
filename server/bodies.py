"""Request bodies capped before they are read: a larger one is answered 413 and its connection
closed, so that the server holds at most the cap (and uvicorn's read buffer) of it."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_LARGE = "too_large"


class BodyTooLarge(Exception):
    """Raised by the capped ``receive`` once a body passes its cap."""


def complete_body_limit(max_body: int, max_prefix: int, max_queries: int) -> int:
    """Bytes a ``POST /complete`` body may hold: ``max_body`` plus a prefix and ``max_queries``
    queries of ``max_prefix`` characters, each character JSON-escaped (``\\uXXXX``, 6 bytes)."""
    return max_body + (max_queries + 1) * max_prefix * 6


class BodyLimit:
    """ASGI middleware: caps each HTTP request's body at ``limits[path]`` (else ``default``)
    bytes. A ``Content-Length`` over the cap is answered before the app runs; a body without
    one (chunked) is counted as the app reads it, and answered once it passes the cap."""

    def __init__(self, app: ASGIApp, default: int, limits: Mapping[str, int] | None = None):
        self.app = app
        self.default = default
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        if _content_length(scope) > limit:
            await _too_large(send, limit)
            return
        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, tracked_send)
        except BodyTooLarge:
            if started:  # too late to answer 413: the server drops the connection
                raise
            await _too_large(send, limit)


def _content_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # uvicorn's parser refuses a malformed length before the app runs
    return 0


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"type": "error", "code": TOO_LARGE,
                       "message": f"a request body over {limit} bytes, the limit of this route"}).encode()
    # Connection: close, so that uvicorn stops reading what is left of the body.
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
