"""What one client address may cost a process: open connections, messages and requests per second,
submits (which write history) per minute, per address and per user, and the CPU time of its rankings.

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

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
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

    def charge(self, amount: float) -> None:
        """Spend ``amount`` tokens for work already done, going into debt if there are fewer:
        :meth:`ready` is then false until the rate has paid the debt back."""
        self.ready()
        self._tokens -= amount


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

    def __init__(self, rate: float, burst: float, *, max_addresses: int = MAX_ADDRESSES,
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

    def ready(self, address: str, user_key: str | None) -> bool:
        """When a submit is read: whether the connection's user (if any) and its address have
        a submit left (spent when it is recorded, :meth:`take`). A submit without a user writes
        no history: it is not counted."""
        return user_key is None or (self.users[user_key].ready() and self.addresses[address].ready())

    def take(self, address: str, user_key: str) -> bool:
        """When a submit goes into the user's personal history: spend one of the user's and one
        of the address's, if both have one."""
        user, place = self.users[user_key], self.addresses[address]
        return user.ready() and place.ready() and user.take() and place.take()


class AddressLimits:
    """What one client address may cost a process: open WebSocket connections, WebSocket
    messages (over all its connections), and ``GET /complete`` requests, each per second,
    submits per minute (with those of each user), and the CPU time of its rankings.

    ``cpu`` holds a bucket of CPU milliseconds per address: each ranking is charged what it
    took (:meth:`charge`), and an address in debt is refused (:meth:`cpu_ready`) until the rate
    has paid it back, so keystrokes crafted to be costly are slowed by what they cost, not
    only by how many they are. None: rankings are not charged."""

    def __init__(self, max_connections: int, messages: AddressBuckets, completes: AddressBuckets,
                 submits: SubmitLimits, cpu: AddressBuckets | None = None):
        self.max_connections = max_connections
        self.messages = messages
        self.completes = completes
        self.submits = submits
        self.cpu = cpu
        self._connections: dict[str, int] = {}

    def cpu_ready(self, address: str) -> bool:
        """Whether ``address`` may have a keystroke ranked: it owes no ranking CPU time."""
        return self.cpu is None or self.cpu[address].ready()

    def cpu_retry_after(self, address: str) -> int:
        """Whole seconds (at least 1) until ``address`` owes no ranking CPU time, for ``Retry-After``."""
        return self.cpu.retry_after(address) if self.cpu is not None else 1

    def charge(self, address: str, seconds: float) -> None:
        """Charge ``address`` the CPU ``seconds`` one of its rankings took."""
        if self.cpu is not None and seconds > 0:
            self.cpu[address].charge(seconds * 1000)

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
