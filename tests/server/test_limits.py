"""Token buckets and per-address limits, on a clock the tests move."""

from __future__ import annotations

import pytest

from server.limits import AddressBuckets, AddressLimits, SubmitLimits, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=4, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait() == pytest.approx(0.25)
    clock.now += 0.25
    assert bucket.take() and not bucket.take()


def test_reserved_tokens_are_handed_out_in_turn_and_only_within_the_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=4, burst=1, clock=clock)
    waits = [bucket.reserve(1.0) for _ in range(7)]
    assert waits == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, None, None])
    assert not bucket.take()  # the reserved tokens are spent
    clock.now += 1.25
    assert bucket.reserve(0.0) == 0.0  # the debt is paid: the next token is there


def test_addresses_have_buckets_of_their_own_and_the_oldest_are_forgotten() -> None:
    clock = Clock()
    buckets = AddressBuckets(rate=1, burst=1, max_addresses=2, clock=clock)
    assert buckets["a"].take() and not buckets["a"].take()
    assert buckets.retry_after("a") == 1
    assert buckets["b"].take()
    buckets["c"].take()  # "a" was seen least recently: it goes
    assert buckets["a"].take()


def test_connections_per_address_are_counted_and_given_back() -> None:
    limits = AddressLimits(2, AddressBuckets(1, 1), AddressBuckets(1, 1), SubmitLimits(1, 1, 1, 1))
    assert limits.connect("a") and limits.connect("a") and not limits.connect("a")
    assert limits.connect("b")
    limits.disconnect("a")
    assert limits.connect("a")


def test_one_address_adds_at_most_a_human_scale_amount_of_history_an_hour() -> None:
    """The figure in docs/OPERATIONS.md: with the default limits, one address that submits ten
    200-character queries a second, each under a new anonymous user (the cheapest identity),
    stores at most 30 + 30 * 60 = 1,830 queries an hour: 366,000 characters."""
    import asyncio

    from server.config import ServerConfig
    from server.history import MemoryHistoryStore

    config = ServerConfig()
    now = [0.0]
    limits = SubmitLimits(config.submit_rate, config.submit_burst, config.address_submit_rate,
                          config.address_submit_burst, clock=lambda: now[0])
    store = MemoryHistoryStore(clock=lambda: 1_700_000_000 + now[0])

    async def attack() -> None:
        for i in range(36_000):
            now[0] = i / 10
            user = f"a:{i:032x}"
            if limits.ready("203.0.113.9", user) and limits.take("203.0.113.9", user):
                await store.record(user, f"{i:08d}".ljust(200, "x"))

    asyncio.run(attack())
    stored = [e.query for u in list(store._users) for e in asyncio.run(store.entries(u))]
    assert 1800 <= len(stored) <= 1830 and sum(map(len, stored)) <= 366_000
    now[0] = 0.0
    limits = SubmitLimits(config.submit_rate, config.submit_burst, config.address_submit_rate,
                          config.address_submit_burst, clock=lambda: now[0])
    taken = 0
    for second in range(3600):  # one user, a submit a second, from addresses of its own
        now[0] = float(second)
        address = f"198.51.100.{second % 250}"
        taken += limits.ready(address, "s:bob") and limits.take(address, "s:bob")
    assert taken <= 10 + 6 * 60  # 370 an hour, whatever the addresses
    # A submit without a user writes no history: never counted, never refused.
    assert all(limits.ready("203.0.113.9", None) for _ in range(1000))


def test_an_address_is_charged_the_cpu_time_of_its_rankings_and_refused_while_in_debt() -> None:
    """Issue 27: at 100 CPU ms a second (1,000 at once), keystrokes that cost 30 ms each are
    ranked 34 times (the 34th goes into debt), then refused until the rate has paid the debt
    back; a cheap address beside it is not touched."""
    clock = Clock()
    limits = AddressLimits(2, AddressBuckets(1, 1), AddressBuckets(1, 1), SubmitLimits(1, 1, 1, 1),
                           AddressBuckets(100, 1000, clock=clock))
    ranked = 0
    while limits.cpu_ready("a"):
        limits.charge("a", 0.030)
        ranked += 1
    assert ranked == 34
    assert limits.cpu_retry_after("a") == 1
    clock.now += 0.2  # -20 ms + 20 ms: still short of the next millisecond
    assert not limits.cpu_ready("a")
    clock.now += 0.011
    assert limits.cpu_ready("a")
    limits.charge("b", 0.001)
    assert limits.cpu_ready("b")


def test_without_a_cpu_bucket_rankings_are_not_charged() -> None:
    limits = AddressLimits(2, AddressBuckets(1, 1), AddressBuckets(1, 1), SubmitLimits(1, 1, 1, 1))
    limits.charge("a", 1e6)
    assert limits.cpu_ready("a")
