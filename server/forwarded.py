"""A client's address behind trusted proxies: ``X-Forwarded-For`` read from the right.

Each proxy appends the address of its own peer to ``X-Forwarded-For``; whatever stands to its
left was written by someone further out, possibly the client itself. So when the TCP peer is a
trusted proxy, the client is the rightmost entry that is not itself a trusted proxy, and
entries further left are never read. ``*`` trusts any peer, but none of the entries: the client
is then the last one, the address the peer itself saw. An entry read that is not an IP address
is refused (400, or a refused WebSocket handshake): it would otherwise count as an address of
its own, one the client chose. A trusted peer's ``X-Forwarded-Proto`` sets the scheme.
"""

from __future__ import annotations

import ipaddress
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from .protocol import BAD_MESSAGE

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    """The peers trusted to name their client: ``*``, or addresses and networks (CIDR)."""

    def __init__(self, spec: str):
        """Parse ``spec`` (comma-separated); raises ValueError on an entry that is neither."""
        entries = [part.strip() for part in spec.split(",") if part.strip()]
        self.any = entries == ["*"]
        self.networks: tuple[Network, ...] = ()
        if not self.any:
            try:
                self.networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
            except ValueError as exc:
                raise ValueError(f"trusted proxies are '*' or IP addresses and networks (a.b.c.d/n), "
                                 f"comma-separated: {exc}") from None

    def trusts(self, address: Address) -> bool:
        """Whether ``address`` is a trusted proxy (``*``: any)."""
        return self.any or any(address in network for network in self.networks)

    def client(self, forwarded_for: str) -> str | None:
        """The client named by a trusted peer's ``X-Forwarded-For``, ``None`` if an entry read
        is not an IP address."""
        entries = [entry.strip() for entry in forwarded_for.split(",")]
        for entry in reversed(entries):
            address = parse_entry(entry)
            if address is None:
                return None
            if self.any or not self.trusts(address):
                return str(address)
        return str(parse_entry(entries[0]))  # only proxies: the farthest one is the client


def parse_entry(entry: str) -> Address | None:
    """An ``X-Forwarded-For`` entry's address: ``a.b.c.d``, ``a.b.c.d:port``, an IPv6 address
    bare or in brackets (with a port or not); ``None`` for anything else."""
    host = entry
    if entry.startswith("["):
        host, bracket, port = entry[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if not port.isdigit():
            return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class ForwardedFor:
    """ASGI middleware: ``scope["client"]`` becomes the client a trusted proxy names."""

    def __init__(self, app: ASGIApp, trusted: str):
        self.app = app
        self.proxies = TrustedProxies(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self._from_proxy(scope):
            headers = scope["headers"]
            forwarded = [value for name, value in headers if name == b"x-forwarded-for"]
            if forwarded:
                client = self.proxies.client(b",".join(forwarded).decode("latin-1"))
                if client is None:
                    return await _refuse(scope, send)
                # In place, as uvicorn's own middleware does, so that its access log names the client too.
                scope["client"] = (client, 0)
            proto = next((value for name, value in headers if name == b"x-forwarded-proto"), b"").strip()
            if proto in (b"http", b"https"):
                scheme = proto.decode()
                scope["scheme"] = scheme.replace("http", "ws") if scope["type"] == "websocket" else scheme
        await self.app(scope, receive, send)

    def _from_proxy(self, scope: Scope) -> bool:
        peer = scope.get("client")
        if not peer:
            return False
        try:
            return self.proxies.trusts(ipaddress.ip_address(peer[0]))
        except ValueError:  # a Unix socket's peer, or a test client's name
            return False


async def _refuse(scope: Scope, send: Send) -> None:
    """400 for a request; a WebSocket handshake is refused before it is accepted (uvicorn: 403)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"type": "error", "code": BAD_MESSAGE,
                       "message": "X-Forwarded-For holds an entry that is not an IP address"}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
