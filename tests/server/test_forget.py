"""Forget means forget (issue 26): the personal history, every session opened under the user
and, for an anonymous user, the token; a session belongs to the user who opened it. Tried as an
attacker would, on one process with the memory stores (replicas: tests/e2e/test_history_replicas.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from server import app as app_module
from server.app import create_app
from server.config import ServerConfig
from server.sessions import MemorySessionStore
from server.users import Signer
from tests.support import recv_json, running

pytestmark = pytest.mark.anyio

SECRET = "a test secret of enough characters"
SECRETS = ("zqxj plugh", "zqxj xyzzy")  # in no log: only this user's session or history can suggest them


@pytest.fixture(scope="module")
def server(small_model_dir: Path) -> Iterator[str]:
    config = ServerConfig(index=str(small_model_dir), secret=SECRET, rate=100_000, burst=100_000)
    with running(create_app(config), config) as address:
        yield address


class Client:
    """One connection: its hello, its user and rising query ids."""

    def __init__(self, ws: ClientConnection, hello: dict[str, Any]):
        self.ws = ws
        self.hello = hello
        self.id = 0

    async def send(self, **frame: Any) -> dict[str, Any]:
        await self.ws.send(json.dumps(frame))
        return await recv_json(self.ws)

    async def resume(self, session: str) -> dict[str, Any]:
        self.hello = await self.send(type="resume", session=session)
        assert self.hello["type"] == "hello", self.hello
        return self.hello

    async def user(self, token: str | None) -> dict[str, Any]:
        return await self.send(type="user", **({"token": token} if token else {}))

    async def submit(self, query: str) -> dict[str, Any]:
        answer = await self.send(type="submit", query=query)
        assert answer["type"] == "ack", answer
        return answer

    async def seen(self, prefix: str = "zqxj") -> set[str]:
        """Every suggestion for ``prefix`` (from any source)."""
        self.id += 1
        frame = await self.send(type="query", id=self.id, prefix=prefix)
        assert frame["type"] == "suggestions", frame
        return {item["query"] for item in frame["items"]}


async def open_client(server: str) -> Client:
    ws = await connect(f"ws://{server}/ws")
    return Client(ws, await recv_json(ws))


async def test_forget_clears_history_sessions_and_the_anonymous_token_everywhere(server: str) -> None:
    one = await open_client(server)
    token = (await one.user(None))["token"]
    two = await open_client(server)
    assert (await two.user(token))["history"] == 0
    await one.submit(SECRETS[0])
    await two.submit(SECRETS[1])
    assert set(SECRETS) <= await one.seen() and set(SECRETS) <= await two.seen()
    old_session = one.hello["session"]

    answer = await two.send(type="forget")
    assert answer["type"] == "user" and answer["token"] != token
    assert (answer["history"], answer["queries"]) == (0, []) and answer["session"] != two.hello["session"]
    new_token = answer["token"]
    # the other connection of that user drops the session it held, at once
    assert not set(SECRETS) & await one.seen()
    assert not set(SECRETS) & await two.seen()
    assert (await one.submit("zqxj after"))["queries"] == ["zqxj after"]

    # the old token is refused, over the socket and over HTTP
    three = await open_client(server)
    refused = await three.user(token)
    assert (refused["type"], refused["code"]) == ("error", "bad_user") and "revoked" in refused["message"]
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        answer = await http.post("/history/forget", headers={"Authorization": f"Bearer {token}"})
        assert (answer.status_code, answer.json()["code"]) == (401, "bad_user")
    assert (await three.user(new_token))["history"] == 0

    # 8 new connections, resuming the old session or not, with the new token, the old or none
    for i in range(8):
        client = await open_client(server)
        if i % 4 == 1:
            await client.user(new_token)
        if i % 4 == 2:
            await client.user(token)  # refused
        if i % 2:
            assert (await client.resume(old_session))["queries"] == []
        if i % 4 == 3:
            await client.user(new_token)
        assert not set(SECRETS) & await client.seen(), i
        await client.ws.close()
    for client in (one, two, three):
        await client.ws.close()


async def test_a_signed_in_user_keeps_their_identity_and_starts_empty(server: str) -> None:
    token = Signer(SECRET.encode()).sign("s", "carol", int(time.time()) + 3600)
    one = await open_client(server)
    await one.user(token)
    await one.submit(SECRETS[0])
    old_session = one.hello["session"]
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        answer = await http.post("/history/forget", headers={"Authorization": f"Bearer {token}"})
        assert answer.json() == {"history": 0}  # no new token: the site names its users
    assert SECRETS[0] not in await one.seen()
    again = await open_client(server)
    assert (await again.user(token))["history"] == 0
    assert (await again.resume(old_session))["queries"] == []
    assert SECRETS[0] not in await again.seen()
    forgot = await again.send(type="forget")
    assert (forgot["token"], forgot["history"], forgot["queries"]) == (token, 0, [])
    for client in (one, again):
        await client.ws.close()


async def test_a_session_belongs_to_the_user_who_opened_it(server: str) -> None:
    alice = Signer(SECRET.encode()).sign("s", "alice", int(time.time()) + 3600)
    bob = Signer(SECRET.encode()).sign("s", "bob", int(time.time()) + 3600)
    one = await open_client(server)
    assert "session" not in await one.user(alice)  # an unused session becomes the user's
    await one.submit(SECRETS[0])
    session = one.hello["session"]

    changed = await one.user(bob)  # a token change to another user starts a new session
    assert changed["session"] != session and changed["queries"] == []
    assert SECRETS[0] not in await one.seen()
    assert (await one.submit("zqxj bob"))["queries"] == ["zqxj bob"]

    for first_user in (bob, None):  # a resume by someone else, or by no one, starts a new session
        other = await open_client(server)
        if first_user:
            await other.user(first_user)
        assert (await other.resume(session))["queries"] == []
        assert SECRETS[0] not in await other.seen()
        await other.ws.close()

    mine = await open_client(server)  # the owner, user first, gets it back
    await mine.user(alice)
    await mine.resume(session)
    assert (mine.hello["session"], mine.hello["queries"]) == (session, [SECRETS[0]])
    fast = await open_client(server)  # as qac-client.js does: the resume right after the user frame
    await fast.ws.send(json.dumps({"type": "user", "token": alice}))
    await fast.ws.send(json.dumps({"type": "resume", "session": session}))
    answers = [await recv_json(fast.ws), await recv_json(fast.ws)]
    assert [a["type"] for a in answers] == ["user", "hello"] and answers[1]["queries"] == [SECRETS[0]]
    for client in (one, mine, fast):
        await client.ws.close()


class GatedStore(MemorySessionStore):
    """A memory session store whose writes wait until the test opens ``gate``: a submit on its
    way to the store while the user is forgotten."""

    writing = threading.Event()
    gate = threading.Event()

    def __init__(self, url: str, ttl: float, max_queries: int, max_sessions: int, *_: Any) -> None:
        super().__init__(ttl, max_queries, max_sessions)

    async def extend(self, sid: str, queries: list[str], owner: str | None = None) -> int:
        GatedStore.writing.set()
        await asyncio.to_thread(GatedStore.gate.wait, 10)
        return await super().extend(sid, queries, owner)


async def test_a_submit_on_its_way_while_the_user_is_forgotten_is_forgotten_too(
    small_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "open_store", GatedStore)
    GatedStore.writing.clear()
    GatedStore.gate.clear()
    config = ServerConfig(index=str(small_model_dir), secret=SECRET, rate=100_000, burst=100_000)
    token = Signer(SECRET.encode()).sign("s", "dave", int(time.time()) + 3600)
    with running(create_app(config), config) as server:
        one = await open_client(server)
        await one.user(token)
        await one.ws.send(json.dumps({"type": "submit", "query": SECRETS[0]}))
        assert await asyncio.to_thread(GatedStore.writing.wait, 10)
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            answer = await http.post("/history/forget", headers={"Authorization": f"Bearer {token}"})
            assert answer.json() == {"history": 0}
        assert SECRETS[0] not in await one.seen()
        GatedStore.gate.set()
        ack = await recv_json(one.ws)
        assert ack["type"] == "ack" and ack["queries"] == []
        again = await open_client(server)
        assert (await again.user(token))["history"] == 0  # not recorded in the history either
        assert (await again.resume(one.hello["session"]))["queries"] == []
        for client in (one, again):
            await client.ws.close()
