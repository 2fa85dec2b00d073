"""Personal query history: the same behaviour in memory and in a real redis-server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.errors import QacError
from server.history import (
    ALL_USERS,
    FORGOTTEN,
    HistoryEntry,
    HistoryError,
    HistoryStore,
    MemoryHistoryStore,
    RedisHistoryStore,
    open_history,
)
from tests.support import free_port

T0 = 1_700_000_000.0
ALICE, BOB = "s:alice", "a:0123456789abcdef0123456789abcdef"
_prefixes = itertools.count()


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


Make = Callable[..., HistoryStore]


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest) -> Make:
    """Makes stores of one kind; Redis stores made by one test share a fresh key prefix."""
    if request.param == "memory":
        return lambda **kw: MemoryHistoryStore(**kw)
    url = request.getfixturevalue("redis_server")
    prefix = f"t{next(_prefixes)}:"
    return lambda **kw: RedisHistoryStore(url, prefix=prefix, **kw)


def run(body: Callable[..., Any], *stores: Callable[[], HistoryStore]) -> Any:
    """Run ``body(*stores)`` in a fresh event loop and close the stores afterwards."""
    async def main() -> Any:
        made = [make_one() for make_one in stores]
        try:
            return await body(*made)
        finally:
            for store in made:
                await store.close()

    return asyncio.run(main())


def test_counts_and_order(make: Make) -> None:
    clock = Clock()

    async def body(store: HistoryStore) -> None:
        assert await store.record(ALICE, "weather") == 1
        clock.now += 1
        assert await store.record(ALICE, "news") == 2
        clock.now += 1
        assert await store.record(ALICE, "weather") == 2
        assert await store.record(BOB, "news", now=T0 + 0.5) == 1
        assert await store.entries(ALICE) == [
            HistoryEntry("weather", 2, T0 + 2), HistoryEntry("news", 1, T0 + 1)
        ]
        assert await store.entries(BOB) == [HistoryEntry("news", 1, T0 + 0.5)]
        assert await store.entries("s:nobody") == []

    run(body, lambda: make(clock=clock))


def test_the_1001st_distinct_query_evicts_the_least_recently_used(make: Make) -> None:
    clock = Clock()

    async def body(store: HistoryStore) -> None:
        for i in range(1000):
            clock.now += 1
            assert await store.record(ALICE, f"q{i}") == i + 1
        clock.now += 1
        await store.record(ALICE, "q0")  # now q1 is the least recently used
        clock.now += 1
        assert await store.record(ALICE, "new") == 1000
        entries = await store.entries(ALICE)
        queries = [e.query for e in entries]
        assert len(entries) == 1000 and "q1" not in queries
        assert queries[:3] == ["new", "q0", "q999"] and queries[-1] == "q2"
        assert entries[1] == HistoryEntry("q0", 2, T0 + 1001)

    run(body, lambda: make(clock=clock))


def test_ties_evict_the_smallest_query_but_never_the_one_just_recorded(make: Make) -> None:
    async def body(store: HistoryStore) -> None:
        for query in ["b", "c", "a"]:
            await store.record(ALICE, query, now=T0)
        assert [e.query for e in await store.entries(ALICE)] == ["c", "a"]
        await store.record(ALICE, "0", now=T0)
        assert [e.query for e in await store.entries(ALICE)] == ["c", "0"]

    run(body, lambda: make(max_entries=2, clock=Clock(T0)))


def test_entries_expire_after_the_ttl(make: Make) -> None:
    clock = Clock()

    async def body(store: HistoryStore) -> None:
        await store.record(ALICE, "old")
        clock.now = T0 + 50
        await store.record(ALICE, "newer")
        await store.record(ALICE, "newer")
        clock.now = T0 + 99.5
        assert [e.query for e in await store.entries(ALICE)] == ["newer", "old"]
        clock.now = T0 + 100
        assert await store.entries(ALICE) == [HistoryEntry("newer", 2, T0 + 50)]
        assert not await store.remove(ALICE, "old")
        clock.now = T0 + 120
        assert await store.record(ALICE, "old") == 2  # counted afresh
        assert (await store.entries(ALICE))[0] == HistoryEntry("old", 1, T0 + 120)
        clock.now = T0 + 150
        assert await store.entries(ALICE) == [HistoryEntry("old", 1, T0 + 120)]
        clock.now = T0 + 1000
        assert await store.entries(ALICE) == []
        assert await store.record(ALICE, "again") == 1

    run(body, lambda: make(ttl=100, clock=clock))


def test_entries_expire_even_when_recorded_out_of_order(make: Make) -> None:
    clock = Clock(T0 + 120)

    async def body(store: HistoryStore) -> None:  # replicas' clocks differ
        await store.record(ALICE, "later", now=T0 + 50)
        await store.record(ALICE, "earlier", now=T0)
        await store.record(ALICE, "between", now=T0 + 30)
        clock.now = T0 + 125
        assert [e.query for e in await store.entries(ALICE)] == ["later", "between"]
        assert not await store.remove(ALICE, "earlier")
        assert await store.record(ALICE, "earlier", now=T0 + 60) == 3  # counted afresh
        clock.now = T0 + 140
        assert await store.entries(ALICE) == [HistoryEntry("earlier", 1, T0 + 60), HistoryEntry("later", 1, T0 + 50)]
        assert await store.remove(ALICE, "later")

    run(body, lambda: make(ttl=100, clock=clock))


def test_forget_and_remove(make: Make) -> None:
    async def body(store: HistoryStore) -> None:
        for query in ["a", "b", "c"]:
            await store.record(ALICE, query)
            await store.record(BOB, query)
        assert await store.remove(ALICE, "b")
        assert not await store.remove(ALICE, "b")
        assert not await store.remove("s:nobody", "b")
        assert [e.query for e in await store.entries(ALICE)] == ["c", "a"]
        await store.forget(ALICE)
        assert await store.entries(ALICE) == []
        assert len(await store.entries(BOB)) == 3
        await store.forget("s:nobody")
        assert await store.record(ALICE, "a") == 1
        assert (await store.entries(ALICE))[0].count == 1

    run(body, lambda: make(clock=Clock()))


def test_a_forget_may_revoke_the_user_for_a_while_on_every_store(make: Make) -> None:
    clock = Clock()
    shared: list[HistoryStore] = []

    def one() -> HistoryStore:  # two store objects on one Redis; a memory store is one object
        if not shared or isinstance(shared[0], RedisHistoryStore):
            shared.append(make(clock=clock))
        return shared[-1]

    async def body(writer: HistoryStore, reader: HistoryStore) -> None:
        await writer.record(BOB, "weather")
        await writer.forget(ALICE)  # without revoke_for: the user stays
        assert not await reader.revoked(ALICE)
        await writer.forget(BOB, revoke_for=100)
        assert await reader.revoked(BOB) and await writer.revoked(BOB)
        assert await reader.entries(BOB) == []
        assert not await reader.revoked(ALICE)
        if isinstance(reader, RedisHistoryStore):  # Redis expires the record on its own clock
            assert 90 <= await reader._redis.ttl(reader._revocation(BOB)) <= 100
        else:
            clock.now += 101
            assert not await reader.revoked(BOB)

    run(body, one, one)


def test_bad_keys_and_queries_are_refused(make: Make) -> None:
    async def body(store: HistoryStore) -> None:
        for key, query in [("", "a"), (ALL_USERS, "a"), (ALICE, "")]:
            with pytest.raises(ValueError):
                await store.record(key, query)
        await store.ping()

    run(body, lambda: make())


async def next_change(changes: AsyncIterator[str], within: float = 1.0) -> str:
    return await asyncio.wait_for(changes.__anext__(), within)


def test_two_stores_see_each_others_changes_and_are_notified_within_a_second(make: Make) -> None:
    shared: list[HistoryStore] = []

    def one() -> HistoryStore:  # two store objects on one Redis; a memory store is one object
        if not shared or isinstance(shared[0], RedisHistoryStore):
            shared.append(make(clock=Clock()))
        return shared[-1]

    async def body(writer: HistoryStore, reader: HistoryStore) -> None:
        changes = reader.changes()
        assert await next_change(changes) == ALL_USERS  # subscribed from here on
        await writer.record(ALICE, "weather")
        assert await next_change(changes) == ALICE
        assert await reader.entries(ALICE) == [HistoryEntry("weather", 1, T0)]
        await writer.record(BOB, "news")
        assert await next_change(changes) == BOB
        assert await writer.remove(BOB, "news")
        assert await next_change(changes) == BOB
        await writer.forget(ALICE)
        assert await next_change(changes) == FORGOTTEN + ALICE  # sessions go too, not just the copy
        assert await reader.entries(ALICE) == []
        await reader.close()
        with pytest.raises(StopAsyncIteration):
            await next_change(changes, 3.0)

    run(body, one, one)


def test_a_slow_subscriber_of_a_memory_store_is_told_to_drop_everything() -> None:
    async def body(store: HistoryStore) -> None:
        changes = store.changes()
        assert await next_change(changes) == ALL_USERS
        for i in range(5000):
            await store.record(f"s:{i}", "q")
        assert await next_change(changes) == ALL_USERS  # what it missed, in one word
        await store.record(ALICE, "q")
        later = []
        while (key := await next_change(changes)) != ALICE:
            later.append(key)
        assert 0 < len(later) < 1024 and later == [f"s:{i}" for i in range(5000 - len(later), 5000)]

    run(body, lambda: MemoryHistoryStore())


def test_a_memory_store_keeps_the_most_recently_used_users() -> None:
    async def body(store: HistoryStore) -> None:
        for user in ["s:1", "s:2", "s:3"]:
            await store.record(user, "q")
        await store.entries("s:2")
        await store.record("s:4", "q")
        assert [bool(await store.entries(f"s:{i}")) for i in range(1, 5)] == [False, True, False, True]

    run(body, lambda: MemoryHistoryStore(max_users=2))


def test_redis_keys_expire_with_the_history(redis_server: str) -> None:
    async def body(store: RedisHistoryStore) -> None:
        await store.record(ALICE, "weather")
        ttls = [await store._redis.ttl(key) for key in store._keys(ALICE)]
        assert all(3500 < ttl <= 3600 for ttl in ttls)
        assert sorted(await store._redis.keys(prefix + "*")) == [prefix + "u:{s:alice}:c", prefix + "u:{s:alice}:t"]

    prefix = f"k{next(_prefixes)}:"
    run(body, lambda: RedisHistoryStore(redis_server, ttl=3600, prefix=prefix))


def test_a_redis_subscriber_resubscribes_after_losing_its_connection(redis_server: str) -> None:
    prefix = f"t{next(_prefixes)}:"

    async def body(store: HistoryStore, admin: RedisHistoryStore) -> None:
        changes = store.changes()
        assert await next_change(changes) == ALL_USERS
        assert await admin._redis.client_kill_filter(_type="pubsub") >= 1
        assert await next_change(changes, 5.0) == ALL_USERS  # it may have missed changes
        await admin.record(ALICE, "q")
        assert await next_change(changes) == ALICE

    run(body, lambda: RedisHistoryStore(redis_server, prefix=prefix),
        lambda: RedisHistoryStore(redis_server, prefix=prefix))


def test_redis_errors_never_show_the_url() -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"

    async def body(store: HistoryStore) -> None:
        calls = [store.record(ALICE, "q"), store.entries(ALICE), store.forget(ALICE),
                 store.remove(ALICE, "q"), store.ping()]
        for call in calls:
            with pytest.raises(HistoryError) as info:
                await call
            assert isinstance(info.value, QacError)
            message = str(info.value)
            # The store at its URL (for the operator who reads the log), never the password.
            assert message.startswith("history store redis://") and "ConnectionError in " in message
            assert "hunter2secret" not in message

    run(body, lambda: RedisHistoryStore(url))
    with pytest.raises(HistoryError) as info:
        open_history("redus://:hunter2secret@somewhere")
    assert "hunter2secret" not in str(info.value)
    with pytest.raises(HistoryError) as info:
        RedisHistoryStore("redis://:hunter2secret@127.0.0.1:notaport/0")
    assert "hunter2secret" not in str(info.value)


def test_open_history() -> None:
    assert isinstance(open_history("memory"), MemoryHistoryStore)
    store = open_history("redis://127.0.0.1:1/0", max_entries=5, ttl=60)
    assert isinstance(store, RedisHistoryStore) and (store.max_entries, store.ttl) == (5, 60)
    asyncio.run(store.close())


OPS = st.lists(st.tuples(
    st.sampled_from(["record", "record", "record", "remove", "forget", "wait"]),
    st.sampled_from([ALICE, BOB]), st.sampled_from("abcde"), st.sampled_from([0, 0, 1, 3, 6]),
), max_size=40)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_memory_and_redis_stores_agree(redis_server: str, ops: list[tuple[str, str, str, int]]) -> None:
    clock = Clock()
    prefix = f"h{next(_prefixes)}:"

    async def body(memory: HistoryStore, redis: HistoryStore) -> None:
        for op, user, query, step in ops:
            clock.now += step
            results: list[Any] = []
            for store in (memory, redis):
                if op == "record":
                    results.append(await store.record(user, query))
                elif op == "remove":
                    results.append(await store.remove(user, query))
                elif op == "forget":
                    await store.forget(user)
                results.append([await store.entries(u) for u in (ALICE, BOB)])
            assert results[: len(results) // 2] == results[len(results) // 2:], (op, user, query)

    run(body, lambda: MemoryHistoryStore(max_entries=3, ttl=10, clock=clock),
        lambda: RedisHistoryStore(redis_server, max_entries=3, ttl=10, clock=clock, prefix=prefix))


ANON = [f"a:{i:032x}" for i in range(6)]


def test_the_anonymous_bound_evicts_the_least_recently_active_anonymous_users_first(make: Make) -> None:
    clock = Clock()

    async def body(store: HistoryStore) -> None:
        changes = store.changes()
        assert await next_change(changes) == ALL_USERS
        await store.record(ALICE, "signed in, active long ago")
        for user in ANON[:3]:  # two entries each: the bound of 6 is reached
            clock.now += 1
            await store.record(user, "one")
            await store.record(user, "two")
        clock.now += 1
        await store.record(ANON[0], "one")  # ANON[0] active again: ANON[1] is now the least recent
        clock.now += 1
        assert await store.record(ANON[3], "junk") == 1  # 7 entries: ANON[1] goes, whole
        assert [len(await store.entries(u)) for u in ANON[:4]] == [2, 0, 2, 1]
        seen = [await next_change(changes) for _ in range(10)]  # 9 records, 1 eviction: announced
        assert seen.count(ANON[1]) == 3 and seen.count(ANON[3]) == 1
        for i in range(5):  # one address's junk under one user: other anonymous users go, never ALICE
            clock.now += 1
            await store.record(ANON[4], f"junk {i}")
        assert await store.entries(ALICE) == [HistoryEntry("signed in, active long ago", 1, T0)]
        assert [len(await store.entries(u)) for u in ANON[:5]] == [0, 0, 0, 1, 5]  # bound: 6
        await store.forget(ANON[4])  # what is forgotten no longer counts
        for i in range(6):
            clock.now += 1
            await store.record(ANON[5], f"q {i}")
        assert len(await store.entries(ANON[5])) == 6

    run(body, lambda: make(clock=clock, anonymous_max=6))


def test_a_memory_store_full_of_anonymous_users_never_evicts_a_signed_in_one() -> None:
    async def body(store: HistoryStore) -> None:
        await store.record(ALICE, "mine")
        for user in ANON:  # junk users, each more recent than ALICE
            await store.record(user, "junk")
        assert await store.entries(ALICE) != []
        assert [bool(await store.entries(u)) for u in ANON] == [False] * 4 + [True] * 2

    run(body, lambda: MemoryHistoryStore(max_users=3))


def test_a_seed_fills_a_user_without_history_within_the_bound_and_the_ttl(make: Make) -> None:
    clock = Clock(T0)
    seed = [HistoryEntry("expired", 5, T0 - 11), HistoryEntry("oldest", 1, T0 - 9), HistoryEntry("b", 2, T0 - 5),
            HistoryEntry("a", 3, T0 - 5), HistoryEntry("newest", 4, T0)]

    async def body(store: HistoryStore) -> None:
        assert await store.seed(ALICE, seed)
        # 3 kept of the 4 live: "oldest" goes; the tie at T0 - 5 keeps both
        assert await store.entries(ALICE) == [HistoryEntry("newest", 4, T0), HistoryEntry("b", 2, T0 - 5),
                                              HistoryEntry("a", 3, T0 - 5)]
        clock.now += 1  # then it ages as if recorded live
        assert await store.record(ALICE, "a") == 3
        assert [(e.query, e.count) for e in await store.entries(ALICE)] == [("a", 4), ("newest", 4), ("b", 2)]
        clock.now = T0 + 6
        assert [e.query for e in await store.entries(ALICE)] == ["a", "newest"]
        assert not await store.seed("s:carol", [HistoryEntry("gone", 1, T0 - 20)])  # nothing alive to seed
        with pytest.raises(ValueError):
            await store.seed(BOB, seed)  # anonymous users are never seeded

    run(body, lambda: make(clock=clock, max_entries=3, ttl=10.0))


def test_a_seed_never_overwrites_a_history_the_store_has(make: Make, request: pytest.FixtureRequest) -> None:
    clock = Clock(T0)

    async def body(store: HistoryStore, other: HistoryStore) -> None:
        await store.record(ALICE, "mine")
        assert not await other.seed(ALICE, [HistoryEntry("logged", 9, T0)])  # another replica, the same store
        assert await store.entries(ALICE) == [HistoryEntry("mine", 1, T0)]

    if request.node.callspec.params["make"] == "memory":
        store = MemoryHistoryStore(clock=clock)
        run(body, lambda: store, lambda: store)
    else:
        run(body, lambda: make(clock=clock), lambda: make(clock=clock))


def test_redis_seeds_a_user_once_so_a_forgotten_user_stays_forgotten(redis_server: str) -> None:
    import redis

    prefix = f"t{next(_prefixes)}:"

    async def body(store: HistoryStore) -> None:
        assert await store.seed(ALICE, [HistoryEntry("logged", 2, T0 - 100)])
        await store.forget(ALICE)
        assert not await store.seed(ALICE, [HistoryEntry("logged", 2, T0 - 100)])  # a restart seeding again
        assert await store.entries(ALICE) == []
        assert await store.seed("s:carol", [HistoryEntry("logged", 1, T0 - 100)])

    run(body, lambda: RedisHistoryStore(redis_server, prefix=prefix, ttl=1000.0, clock=Clock(T0)))
    with redis.Redis.from_url(redis_server) as client:
        ttl = client.ttl(f"{prefix}u:{{s:carol}}:t")
    assert 0 < ttl <= 900  # the key expires with its newest entry, as a recorded one would
