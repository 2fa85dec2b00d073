"""What one client address may cost a process: open connections, messages and requests per second,
and submits (which write history) per minute, per address and per user.

A client's address is the peer of its TCP connection, or the one a proxy trusted with
``--forwarded-allow-ips`` names in ``X-Forwarded-For`` (``server/forwarded.py`` rewrites the
ASGI ``client`` then; an untrusted peer's header is ignored). IPv6 clients are counted per /64,
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
        return self.reserve(0.0) is not None

    def ready(self) -> bool:
        """Whether a token is there, spending none."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        return self._tokens >= 1

    def reserve(self, max_wait: float) -> float | None:
        """Spend a token that is there or due within ``max_wait`` seconds: how long to wait for
        it (0: it is there), or None, spending nothing, if it is due later. Waiting callers
        queue in the bucket's debt, so they go in turn, at the rate."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        wait = self.wait()
        if wait > max_wait:
            return None
        self._tokens -= 1
        return wait

    def wait(self) -> float:
        """Seconds until the next token (0 if there is one), as of the last call."""
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


class AddressBuckets:
    """A token bucket per client address; beyond ``max_addresses`` the least recently seen go."""

    def __init__(self, rate: float, burst: int, *, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __getitem__(self, address: str) -> TokenBucket:
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(self.rate, self.burst, self._clock)
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        return bucket

    def retry_after(self, address: str) -> int:
        """Whole seconds (at least 1) until the address has a token again, for ``Retry-After``."""
        return max(1, int(-(-self[address].wait() // 1)))


class SubmitLimits:
    """Submits that write history, per client address and per user (rates per minute): a person
    submits a few queries a minute, far fewer than the keystrokes the message rate allows."""

    def __init__(self, user_rate: float, user_burst: int, address_rate: float, address_burst: int, *,
                 clock: Callable[[], float] = time.monotonic):
        self.users = AddressBuckets(user_rate / 60, user_burst, clock=clock)
        self.addresses = AddressBuckets(address_rate / 60, address_burst, clock=clock)

    def take(self, address: str, user_key: str | None) -> bool:
        """When a submit is read: spend one of the address's, unless it or the connection's user
        (if any; spent when the submit is recorded, :meth:`take_user`) has none left."""
        if user_key is not None and not self.users[user_key].ready():
            return False
        return self.addresses[address].take()

    def take_user(self, user_key: str) -> bool:
        """When a submit goes into the user's personal history: spend one of the user's."""
        return self.users[user_key].take()


class AddressLimits:
    """What one client address may cost a process: open WebSocket connections, WebSocket
    messages (over all its connections), and ``GET /complete`` requests, each per second, and
    submits per minute (with those of each user)."""

    def __init__(self, max_connections: int, messages: AddressBuckets, completes: AddressBuckets,
                 submits: SubmitLimits):
        self.max_connections = max_connections
        self.messages = messages
        self.completes = completes
        self.submits = submits
        self._connections: dict[str, int] = {}

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
