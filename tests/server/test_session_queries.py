"""A connection's session alone (server/session_queries.py): its copy of the session queries,
their sync to the store, forgets heard from elsewhere, and whose session it is."""

from __future__ import annotations

import time

import pytest

from server import session_queries
from server.metrics import Metrics
from server.session_queries import SessionQueries
from server.sessions import MemorySessionStore, SessionError
from server.store_health import StoreHealth

pytestmark = pytest.mark.anyio


class Store(MemorySessionStore):
    """A memory store that notes its calls, and can fail or run a hook inside a write."""

    def __init__(self) -> None:
        super().__init__(ttl=600, max_queries=5, max_sessions=100)
        self.calls: list[tuple[str, list[str]]] = []
        self.down = False
        self.during_extend = lambda: None

    async def extend(self, sid: str, queries: list[str], owner: str | None = None) -> int:
        self.calls.append(("extend", list(queries)))
        if self.down:
            raise SessionError("down")
        length = await super().extend(sid, queries, owner)
        self.during_extend()
        return length

    async def queries(self, sid: str, owner: str | None = None) -> list[str]:
        self.calls.append(("queries", []))
        return await super().queries(sid, owner)


class Fixture:
    """A session on a :class:`Store`, with a clock and forget news the test moves."""

    def __init__(self) -> None:
        self.store = Store()
        self.health = StoreHealth(self.store, Metrics(), failures=1)
        self.now = 100.0
        self.news: bool | None = None
        self.session = SessionQueries(self.store, self.health, 5, self.take_news, clock=lambda: self.now)
        self.session.renew()

    def take_news(self) -> bool | None:
        news, self.news = self.news, None
        return news

    async def stored(self, owner: str | None = None) -> list[str]:
        return await MemorySessionStore.queries(self.store, self.session.id, owner)


@pytest.fixture
def f() -> Fixture:
    return Fixture()


async def test_a_submit_joins_the_copy_at_once_and_the_store_with_the_next_sync(f: Fixture) -> None:
    number = f.session.add("weather")
    assert (number, f.session.queries, await f.stored()) == (1, ["weather"], [])
    assert not f.session.synced()
    assert await f.session.sync() is True
    assert await f.stored() == ["weather"]
    assert f.store.calls == [("extend", ["weather"])]  # the length agreed: no read back
    assert f.session.synced()


async def test_an_empty_submit_adds_nothing_and_is_numbered_zero(f: Fixture) -> None:
    assert f.session.add("") == 0
    assert f.session.queries == [] and not f.session.claimed


async def test_submits_held_while_the_store_is_down_go_in_one_write_when_it_is_back(f: Fixture) -> None:
    f.store.down = True
    f.session.add("one")
    assert await f.session.sync() is False
    assert not f.health.up
    f.session.add("two")
    assert await f.session.sync() is False  # down: not even tried
    f.store.down = False
    f.health.answered()
    assert await f.session.sync() is True
    assert await f.stored() == ["one", "two"]
    assert [call for call in f.store.calls if call[0] == "extend"] == [("extend", ["one"]), ("extend", ["one", "two"])]


async def test_the_copy_keeps_the_newest_queries_the_session_keeps(f: Fixture) -> None:
    for q in ["a", "b", "c", "d", "e", "f", "g"]:
        f.session.add(q)
    assert f.session.queries == ["c", "d", "e", "f", "g"]
    await f.session.sync()
    assert await f.stored() == ["c", "d", "e", "f", "g"]


async def test_another_tabs_submit_is_read_back_only_once_the_refresh_is_due(f: Fixture) -> None:
    f.session.add("mine")
    await f.session.sync()
    await f.store.extend(f.session.id, ["other tab"])
    assert await f.session.sync() is True
    assert f.session.queries == ["mine"]  # read less than REFRESH_SECONDS ago
    f.now += session_queries.REFRESH_SECONDS
    assert await f.session.sync() is True
    assert f.session.queries == ["mine", "other tab"]


async def test_removing_a_query_drops_it_from_the_copy_and_from_the_submits_not_written(f: Fixture) -> None:
    f.session.add("secret")
    f.session.add("weather")
    f.session.drop("secret")
    assert f.session.queries == ["weather"]
    await f.session.sync()
    assert await f.stored() == ["weather"]
    await f.session.discard("weather")
    assert await f.stored() == []


async def test_a_forget_heard_from_elsewhere_drops_the_copy_and_what_waits_for_the_store(f: Fixture) -> None:
    number = f.session.add("secret")
    f.news = True
    f.session.hear()
    assert f.session.queries == [] and f.session.forgotten(number)
    await f.session.sync()
    assert f.store.calls == [("queries", [])]  # never written, then read back
    assert await f.stored() == []
    assert not f.session.forgotten(f.session.add("after"))


async def test_a_forget_heard_while_the_write_is_on_its_way_is_undone_in_the_store(f: Fixture) -> None:
    number = f.session.add("secret")

    def forgotten_meanwhile() -> None:
        f.news = True

    f.store.during_extend = forgotten_meanwhile
    await f.session.sync()
    assert await f.stored() == []
    assert f.session.queries == [] and f.session.forgotten(number)


async def test_a_forget_that_may_have_been_missed_keeps_the_copy_but_reads_the_store_again(f: Fixture) -> None:
    f.session.add("weather")
    await f.session.sync()
    f.news = False
    f.session.hear()
    assert f.session.queries == ["weather"] and not f.session.synced()


async def test_an_unused_session_becomes_the_first_users(f: Fixture) -> None:
    sid = f.session.id
    assert f.session.follow("alice", forgot=False) is False
    assert (f.session.id, f.session.owner) == (sid, "alice")
    f.session.add("weather")
    await f.session.sync()
    assert await f.stored("alice") == ["weather"] and await f.stored(None) == []


async def test_a_used_session_stays_its_owners_and_another_user_gets_a_new_one(f: Fixture) -> None:
    f.session.follow("alice", forgot=False)
    f.session.add("alice's query")
    sid = f.session.id
    assert f.session.follow("alice", forgot=False) is False
    assert f.session.follow(None, forgot=False) is False  # a token refused: the session stays
    assert f.session.id == sid
    assert f.session.follow("bob", forgot=False) is True
    assert (f.session.owner, f.session.queries, f.session.claimed) == ("bob", [], False)
    assert f.session.id != sid
    await f.session.sync()  # alice's query, not written yet, is not bob's to write
    assert [call for call in f.store.calls if call[0] == "extend"] == []
    assert await f.stored("bob") == [] and await f.stored("alice") == []


async def test_a_forget_always_starts_a_new_session(f: Fixture) -> None:
    f.session.follow("alice", forgot=False)
    sid = f.session.id
    assert f.session.follow("alice", forgot=True) is True
    assert f.session.id != sid and f.session.owner == "alice"


async def test_a_resumed_session_is_claimed_and_keeps_its_owner(f: Fixture) -> None:
    await f.store.extend("resumed-session-0000", ["weather"], None)
    assert await f.session.resume("resumed-session-0000", issued=0.0) is True
    assert (f.session.id, f.session.queries, f.session.claimed) == ("resumed-session-0000", ["weather"], True)
    assert f.session.follow("alice", forgot=False) is True


async def test_a_resume_while_the_store_is_down_says_nothing_of_what_was_restored(f: Fixture) -> None:
    f.health.up = False
    assert await f.session.resume("young-session-00000000", issued=time.time()) is None
    assert (f.session.id, f.session.queries) == ("young-session-00000000", [])
    assert await f.session.resume("old-session-000000000", issued=0.0) is None
    assert f.session.id != "old-session-000000000"  # too old to be one nobody used yet
