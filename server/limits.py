"""What one client address may cost a process: open connections and messages per second.

A client's address is the peer of its TCP connection, or the address in ``X-Forwarded-For``
when the peer is a proxy trusted with ``--forwarded-allow-ips`` (uvicorn rewrites the ASGI
``client`` then; an untrusted peer's header is ignored). IPv6 clients are counted per /64,
the block one subscriber usually gets, so that they cannot rotate through their own addresses.

The limits hold per process: with ``--workers N`` or several replicas an address may have
up to N times as much, which the proxy's own limits (deploy/nginx.conf) bound in front.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import HTTPConnection

MAX_ADDRESSES = 100_000  # rate buckets kept; the least recently used go first


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

    def wait(self) -> float:
        """Seconds until the next token (0 if there is one)."""
        return max(0.0, (1 - self._tokens) / self.rate)


def address_key(host: str | None) -> str:
    """What an address is counted as: itself, its /64 for IPv6, ``"unknown"`` without one."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client_address(conn: HTTPConnection) -> str:
    """The counted address of a request or WebSocket (see the module's docstring)."""
    client = conn.scope.get("client")
    return address_key(client[0] if client else None)


class AddressLimits:
    """Open connections and a token bucket of messages, per client address."""

    def __init__(self, max_connections: int, rate: float, burst: int, *, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic):
        self.max_connections = max_connections
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self._clock = clock
        self._connections: dict[str, int] = {}
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def connect(self, address: str) -> bool:
        """Count a new connection of ``address``, unless it already holds its share."""
        held = self._connections.get(address, 0)
        if held >= self.max_connections:
            return False
        self._connections[address] = held + 1
        return True

    def disconnect(self, address: str) -> None:
        held = self._connections.get(address, 0) - 1
        if held > 0:
            self._connections[address] = held
        else:
            self._connections.pop(address, None)

    def connections(self, address: str) -> int:
        return self._connections.get(address, 0)

    def _bucket(self, address: str) -> TokenBucket:
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(self.rate, self.burst, self._clock)
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        return bucket

    def take(self, address: str) -> bool:
        """Spend one of the address's message tokens, if it has one."""
        return self._bucket(address).take()

    def retry_after(self, address: str) -> int:
        """Whole seconds (at least 1) until the address may send again, for ``Retry-After``."""
        return max(1, int(-(-self._bucket(address).wait() // 1)))
