"""uvicorn's httptools HTTP protocol, with deadlines, a per-address count, and without the
garbage each WebSocket upgrade leaves.

Deadlines: a connection must send a whole request (headers and body) within ``--header-timeout``
seconds of its opening, or of the first byte of a later request; between requests uvicorn's
keep-alive timeout (``--keep-alive-timeout``) closes it. So neither a connection that sends
nothing, nor one that sends its headers a byte at a time, holds a file descriptor for long.

Count: a connection counts against ``--max-connections-per-address`` from its opening until it
closes or becomes a WebSocket (which the ``/ws`` endpoint then counts itself). A peer trusted
with ``--forwarded-allow-ips`` is a proxy that speaks for many clients and bounds them itself
(deploy/nginx.conf's ``limit_conn``): its connections are not counted.

Garbage: on an upgrade, the protocol hands its transport to the WebSocket protocol and is
dropped, still holding its parser, whose callbacks are the protocol's own methods. That
reference cycle waited for the cyclic garbage collector (BENCHMARKS.md#connection-garbage), so
the protocol lets go of its parser once the upgrade is done.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .forwarded import TrustedProxies
from .limits import address_key

STATE_KEY = "qac"  # the lifespan state entry holding the ServerState
_REFUSAL = b"too many connections from this address, try again later"
REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
           b"retry-after: 1\r\nconnection: close\r\n\r\n%s" % (len(_REFUSAL), _REFUSAL))


@functools.lru_cache(maxsize=8)
def _proxies(allowed: str) -> TrustedProxies:
    return TrustedProxies(allowed)  # checked by ServerConfig: valid


def trusted_proxy(host: str | None, allowed: str) -> bool:
    """Whether ``host`` (a peer's address) is one of the proxies of ``--forwarded-allow-ips``."""
    proxies = _proxies(allowed)
    try:
        return proxies.trusts(ipaddress.ip_address(host or ""))
    except ValueError:  # not an IP peer (a Unix socket): trusted only by '*'
        return proxies.any


class HttpProtocol(HttpToolsProtocol):
    """What ``qac serve`` gives ``uvicorn.Config(http=...)``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._state: Any = self.app_state.get(STATE_KEY)
        self._deadline: asyncio.TimerHandle | None = None
        self._counted: str | None = None  # the address this connection counts against

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._state is None:  # not the qac app: plain uvicorn
            return
        host = self.client[0] if self.client else None
        if not trusted_proxy(host, self._state.config.forwarded_allow_ips):
            address = address_key(host)
            if not self._state.limits.connect(address):
                self._state.metrics.closed.labels("address").inc()
                transport.write(REFUSED)
                transport.close()
                return
            self._counted = address
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._uncount()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        self._uncount()
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]

    def _arm(self) -> None:
        if self._state is not None:
            self._deadline = self.loop.call_later(self._state.config.header_timeout, self._late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self) -> None:
        """The request did not arrive in time: close the connection (an app still reading its
        body sees a disconnect)."""
        self._deadline = None
        if not self.transport.is_closing():
            self._state.metrics.closed.labels("request_deadline").inc()
            self.transport.close()

    def _uncount(self) -> None:
        if self._counted is not None:
            self._state.limits.disconnect(self._counted)
            self._counted = None
