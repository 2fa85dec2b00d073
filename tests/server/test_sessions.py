"""Session stores: history bounds, idle TTL, LRU bound; Redis against a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from server.sessions import (
    MemorySessionStore,
    RedisSessionStore,
    SessionError,
    SessionStore,
    new_session_id,
    valid_session_id,
)
from tests.support import free_port

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., SessionStore]]:
    """Build a store of either kind with a fake clock; closes what it built."""
    made: list[SessionStore] = []

    def make(ttl: float = 60, max_queries: int = 3, clock: Clock | None = None) -> SessionStore:
        clock = clock or Clock()
        if request.param == "memory":
            store: SessionStore = MemorySessionStore(ttl, max_queries, max_sessions=100, clock=clock)
        else:
            store = RedisSessionStore(request.getfixturevalue("redis_url"), ttl, max_queries, clock=clock)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


def test_session_ids_are_unguessable_and_recognized() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(valid_session_id(i) for i in ids)
    assert not any(valid_session_id(i) for i in [None, "", "short", "x" * 65, "a b" * 10, "é" * 20])


async def test_a_new_session_starts_empty(make_store: Callable[..., SessionStore]) -> None:
    store = make_store()
    sid, history = await store.open()
    assert history == [] and valid_session_id(sid)
    assert await store.queries(sid) == []
    assert await store.count() == 1


async def test_a_session_keeps_its_newest_queries_oldest_first(make_store: Callable[..., SessionStore]) -> None:
    store = make_store(max_queries=3)
    sid, _ = await store.open()
    lengths = [await store.append(sid, q) for q in ["a", "b", "c", "d", "e"]]
    assert lengths == [1, 2, 3, 3, 3]
    assert await store.queries(sid) == ["c", "d", "e"]


async def test_a_live_session_is_resumed_with_its_queries(make_store: Callable[..., SessionStore]) -> None:
    store = make_store()
    sid, _ = await store.open()
    await store.append(sid, "weather")
    assert await store.open(sid) == (sid, ["weather"])


async def test_an_idle_session_expires_after_the_ttl(make_store: Callable[..., SessionStore]) -> None:
    clock = Clock()
    store = make_store(ttl=60, clock=clock)
    sid, _ = await store.open()
    await store.append(sid, "weather")
    clock.now += 59
    assert await store.queries(sid) == ["weather"]  # and refreshes the TTL
    clock.now += 59
    assert await store.open(sid) == (sid, ["weather"])
    clock.now += 61
    other, history = await store.open(sid)
    assert other != sid and history == []
    assert await store.count() == 1


async def test_unknown_and_malformed_ids_get_a_new_session(make_store: Callable[..., SessionStore]) -> None:
    store = make_store()
    for requested in [new_session_id(), "bad", None]:
        sid, history = await store.open(requested)
        assert sid != requested and history == []


async def test_memory_store_drops_the_least_recently_used_session_first() -> None:
    store = MemorySessionStore(ttl=60, max_queries=3, max_sessions=2, clock=Clock())
    a, _ = await store.open()
    b, _ = await store.open()
    await store.append(a, "used lately")
    c, _ = await store.open()
    assert await store.count() == 2
    assert (await store.open(a))[0] == a
    assert (await store.open(c))[0] == c
    assert (await store.open(b))[0] != b


async def test_a_session_belongs_to_the_user_it_was_opened_under(make_store: Callable[..., SessionStore]) -> None:
    store = make_store(max_queries=5)
    sid, _ = await store.open(owner="a:alice")
    await store.append(sid, "alice's query", owner="a:alice")
    assert await store.open(sid, owner="a:alice") == (sid, ["alice's query"])
    for someone_else in ("a:mallory", None):
        other, history = await store.open(sid, owner=someone_else)
        assert (other, history) != (sid, ["alice's query"]) and history == []
        assert await store.queries(sid, someone_else) == []
        await store.append(sid, "not alice's", owner=someone_else)  # the same id under another owner
    assert await store.queries(sid, "a:alice") == ["alice's query"]


async def test_forget_deletes_every_session_of_the_user_and_no_other(
    make_store: Callable[..., SessionStore],
) -> None:
    store = make_store(max_queries=5)
    mine = [(await store.open(owner="s:bob"))[0] for _ in range(3)]
    for i, sid in enumerate(mine):
        await store.append(sid, f"bob {i}", owner="s:bob")
    theirs, _ = await store.open(owner="s:carol")
    await store.append(theirs, "carol", owner="s:carol")
    nobody, _ = await store.open()
    await store.append(nobody, "nobody's")
    before = await store.count()
    assert await store.forget("s:bob") == 3
    assert await store.count() == before - 3
    for sid in mine:
        resumed, history = await store.open(sid, owner="s:bob")
        assert resumed != sid and history == []
    assert await store.queries(theirs, "s:carol") == ["carol"]
    assert await store.queries(nobody) == ["nobody's"]
    assert await store.forget("s:bob") == len(mine)  # the new sessions opened just now


async def test_forget_leaves_no_redis_key_of_the_user(redis_url: str) -> None:
    import redis.asyncio

    store = RedisSessionStore(redis_url, ttl=120, max_queries=5, prefix="f:")
    client = redis.asyncio.from_url(redis_url, decode_responses=True)
    try:
        for _ in range(2):
            sid, _ = await store.open(owner="a:0123")
            await store.append(sid, "weather", owner="a:0123")
        assert await client.keys("f:*a:0123*")
        await store.forget("a:0123")
        assert await client.keys("f:*a:0123*") == []
        assert [m for m in await client.zrange("f:live", 0, -1) if "a:0123" in m] == []
    finally:
        await store.close()
        await client.aclose()


async def test_redis_store_shares_sessions_between_instances(redis_url: str) -> None:
    one = RedisSessionStore(redis_url, ttl=60, max_queries=5)
    two = RedisSessionStore(redis_url, ttl=60, max_queries=5)
    try:
        sid, _ = await one.open()
        await one.append(sid, "weather")
        assert await two.open(sid) == (sid, ["weather"])
        assert await two.append(sid, "news") == 2
        assert await one.queries(sid) == ["weather", "news"]
    finally:
        await one.close()
        await two.close()


async def test_redis_keys_expire_with_the_ttl(redis_url: str) -> None:
    import redis.asyncio

    store = RedisSessionStore(redis_url, ttl=120, max_queries=5, prefix="t:")
    client = redis.asyncio.from_url(redis_url)
    try:
        sid, _ = await store.open()
        await store.append(sid, "weather")
        assert 110 <= await client.ttl(f"t:h:{sid}") <= 120
    finally:
        await store.close()
        await client.aclose()


async def test_an_unreachable_redis_raises_session_error() -> None:
    store = RedisSessionStore(f"redis://127.0.0.1:{free_port()}/0", ttl=60, max_queries=5)
    try:
        with pytest.raises(SessionError, match="session store redis://"):
            await store.ping()
        with pytest.raises(SessionError):
            await store.open()
    finally:
        await store.close()
