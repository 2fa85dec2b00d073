"""Two ``qac serve`` processes sharing sessions through a real redis-server, with no proxy.

The topology of ``docker-compose.yml`` without Docker: clients alternate between the replicas
and keep their history, a reload rolls across them while a client types, and when one is
killed with SIGKILL its clients resume their sessions on the other without losing a query the
server acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import indexer
from indexer.model import Model
from server.config import ServerConfig
from server.sessions import RedisSessionStore
from tests.support import TOKEN, raw_session, recv_json, resume

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 30.0


@dataclass
class Replica:
    """One ``qac serve`` process; ``address`` is ``host:port``."""

    proc: subprocess.Popen[bytes]
    log: Path
    address: str = ""

    def said(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start(index: Path, sessions: str, log: Path) -> Replica:
    """``qac serve`` on a free port, its output in ``log``; not yet ready (see :func:`wait_ready`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "QAC_ADMIN_TOKEN": TOKEN,
           # The clients here type faster than people: no rate limit in the way.
           "QAC_RATE": "100000", "QAC_BURST": "100000", "QAC_ADDRESS_RATE": "100000", "QAC_ADDRESS_BURST": "100000",
           "QAC_ADDRESS_SUBMIT_RATE": "100000", "QAC_ADDRESS_SUBMIT_BURST": "100000",
           "QAC_ADDRESS_CPU_RATE": "1000000", "QAC_ADDRESS_CPU_BURST": "1000000",
           "QAC_MAX_CONNECTIONS_PER_ADDRESS": "10000", "QAC_MODELS_ROOT": str(index.parent.parent)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qac", "serve", "--index", str(index), "--sessions", sessions,
             "--port", "0"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    return Replica(proc, log)


def wait_ready(replica: Replica) -> None:
    """Wait until the replica printed its port and its ``/healthz`` says ok."""
    deadline = time.monotonic() + START_SECONDS
    while (url := re.search(r"demo page at http://127\.0\.0\.1:(\d+)/", replica.said())) is None:
        assert replica.proc.poll() is None, f"qac serve exited:\n{replica.said()}"
        assert time.monotonic() < deadline, f"qac serve printed no port:\n{replica.said()}"
        time.sleep(0.05)
    replica.address = f"127.0.0.1:{url.group(1)}"
    while True:
        with contextlib.suppress(httpx.TransportError):
            health = httpx.get(f"http://{replica.address}/healthz", timeout=2)
            if health.status_code == 200 and health.json()["status"] == "ok":
                return
        assert replica.proc.poll() is None, f"qac serve exited:\n{replica.said()}"
        assert time.monotonic() < deadline, f"qac serve is not healthy:\n{replica.said()}"
        time.sleep(0.05)


def stop(replica: Replica) -> None:
    if replica.proc.poll() is None:
        replica.proc.send_signal(signal.SIGINT)
        try:
            replica.proc.wait(15)
        except subprocess.TimeoutExpired:
            replica.proc.kill()
            replica.proc.wait()


@pytest.fixture
def replicas(small_model_dir: Path, redis_url: str, tmp_path: Path) -> Iterator[list[Replica]]:
    """Two replicas of the small model sharing the test Redis, started side by side."""
    started = [start(small_model_dir, redis_url, tmp_path / f"serve-{i}.log") for i in range(2)]
    try:
        for replica in started:
            wait_ready(replica)
        yield started
    finally:
        for replica in started:
            stop(replica)
    for replica in started:
        assert "Traceback" not in replica.said(), replica.said()


async def get_json(http: httpx.AsyncClient, replica: Replica, path: str, **params: Any) -> dict[str, Any]:
    response = await http.get(f"http://{replica.address}{path}", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, dict)
    return body


async def expected_items(http: httpx.AsyncClient, replica: Replica, prefix: str,
                         history: Sequence[str]) -> list[dict[str, Any]]:
    """The suggestions of ``GET /complete`` for ``prefix`` after ``history``."""
    items: list[dict[str, Any]] = (await get_json(http, replica, "/complete", prefix=prefix,
                                                  prev=list(history)))["items"]
    return items


async def reload(http: httpx.AsyncClient, replica: Replica, index: Path) -> dict[str, Any]:
    response = await http.post(f"http://{replica.address}/admin/reload", json={"index": str(index)},
                               headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, dict)
    return body


class Typist:
    """A client typing queries into one session, keystroke by keystroke, then submitting each.

    It connects to ``replicas[0]``; when its connection drops (or cannot be opened) it goes on
    to the next replica with its session id and types the query it was on again.
    ``alternate`` makes it move to the next replica after every acknowledged submit.
    """

    def __init__(self, replicas: Sequence[Replica], queries: Sequence[str], *, pause: float = 0.0,
                 alternate: bool = False):
        self.replicas = list(replicas)
        self.queries = list(queries)
        self.pause = pause
        self.alternate = alternate
        self.at = 0  # index of the replica in use
        self.session: str | None = None
        self.qid = 0
        self.acked: list[str] = []  # submits the server acknowledged, in order
        self.acked_on: list[str] = []  # the replica that acknowledged each
        self.hellos: list[tuple[str, dict[str, Any]]] = []  # (replica address, hello)
        self.errors: list[dict[str, Any]] = []
        self.drops = 0  # connections lost or refused
        self.keystrokes = 0  # keystrokes answered
        self._acks = asyncio.Condition()

    async def acks(self, n: int) -> None:
        """Wait until ``n`` submits have been acknowledged."""
        async with self._acks:
            await self._acks.wait_for(lambda: len(self.acked) >= n)

    async def open(self) -> tuple[ClientConnection, dict[str, Any]]:
        replica = self.replicas[self.at]
        ws = await connect(f"ws://{replica.address}/ws", open_timeout=5)
        hello = await (resume(ws, self.session) if self.session else recv_json(ws))
        assert hello["type"] == "hello", hello
        if self.session is not None:
            assert hello["session"] == self.session, "the session was not resumed"
        self.session = hello["session"]
        self.hellos.append((replica.address, hello))
        return ws, hello

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Type every query (over and over until ``stop`` is set, if given)."""
        pending = list(self.queries)
        while pending:
            try:
                ws, _ = await self.open()
            except (TimeoutError, OSError, ConnectionClosed):
                self._next_replica(dropped=True)
                continue
            try:
                async with ws:
                    while pending:
                        await self._type(ws, pending[0])
                        async with self._acks:
                            self.acked.append(pending.pop(0))
                            self.acked_on.append(self.replicas[self.at].address)
                            self._acks.notify_all()
                        if stop is not None and not pending and not stop.is_set():
                            pending = list(self.queries)
                        if self.alternate:
                            self._next_replica(dropped=False)
                            break
            except (ConnectionClosed, OSError):
                self._next_replica(dropped=True)

    def _next_replica(self, *, dropped: bool) -> None:
        if dropped:
            self.drops += 1
            assert self.drops <= 10, "reconnected too often"
        self.at = (self.at + 1) % len(self.replicas)

    async def _type(self, ws: ClientConnection, query: str) -> None:
        for end in range(1, len(query) + 1):
            self.qid += 1
            await ws.send(json.dumps({"type": "query", "id": self.qid, "prefix": query[:end]}))
            if self.pause:
                await asyncio.sleep(self.pause)
        while (answer := await self._receive(ws))["type"] != "suggestions" or answer["id"] != self.qid:
            pass
        self.keystrokes += 1
        await ws.send(json.dumps({"type": "submit", "query": query}))
        while (await self._receive(ws))["type"] != "ack":
            pass

    async def _receive(self, ws: ClientConnection) -> dict[str, Any]:
        message = await recv_json(ws)
        if message["type"] == "error":
            self.errors.append(message)
        return message


def queries_of(model: Model, n: int) -> list[str]:
    """``n`` distinct logged queries of 8 to 16 characters (already normalized)."""
    out = [q for q in model.labels.keys if 8 <= len(q) <= 16 and q.isascii()]
    assert len(out) >= n
    return out[:: max(1, len(out) // n)][:n]


def is_subsequence(items: Sequence[str], of: Sequence[str]) -> bool:
    rest = iter(of)
    return all(item in rest for item in items)


async def test_a_client_alternating_between_replicas_keeps_its_history(
    replicas: list[Replica], small_model: Model, history_pair: tuple[str, str]
) -> None:
    prev, prefix = history_pair
    submits = [prev, *queries_of(small_model, 4)]
    session: str | None = None
    async with httpx.AsyncClient(timeout=10) as http:
        for visit, submit in enumerate(submits):
            here, there = replicas[visit % 2], replicas[(visit + 1) % 2]
            async with connect(f"ws://{here.address}/ws") as ws:
                hello = await (resume(ws, session) if session else recv_json(ws))
                assert len(hello["queries"]) == visit and (session is None or hello["session"] == session)
                session = hello["session"]
                # Ranked with what was submitted on the other replica: as /complete with that history.
                await ws.send(json.dumps({"type": "query", "id": 1, "prefix": prefix}))
                answer = await recv_json(ws)
                assert answer["items"] == await expected_items(http, there, prefix, submits[:visit])
                await ws.send(json.dumps({"type": "submit", "query": submit}))
                ack = await recv_json(ws)
                assert (ack["type"], len(ack["queries"])) == ("ack", visit + 1)
            if visit == 1:  # the first submit changed this ranking: the history really was used
                assert answer["items"] != await expected_items(http, here, prefix, [])
        for replica in replicas:
            health = await get_json(http, replica, "/healthz")
            assert (health["status"], health["sessions"]) == ("ok", "redis")


async def test_a_reload_rolls_across_the_replicas_while_a_client_types(
    replicas: list[Replica], small_model: Model, small_model_dir: Path, other_model_dir: Path
) -> None:
    old, new = small_model.version, indexer.load(other_model_dir).version
    assert old != new
    first, second = replicas
    typist = Typist(replicas, queries_of(small_model, 6), alternate=True)
    stop = asyncio.Event()
    typing = asyncio.create_task(typist.run(stop))
    async with httpx.AsyncClient(timeout=30) as http:
        versions = [[(await get_json(http, r, "/healthz"))["index"] for r in replicas]]
        await asyncio.wait_for(typist.acks(4), 20)
        assert (await reload(http, first, other_model_dir))["index"] == new
        versions.append([(await get_json(http, r, "/healthz"))["index"] for r in replicas])
        await asyncio.wait_for(typist.acks(len(typist.acked) + 4), 20)
        assert (await reload(http, second, other_model_dir))["index"] == new
        versions.append([(await get_json(http, r, "/healthz"))["index"] for r in replicas])
        await asyncio.wait_for(typist.acks(len(typist.acked) + 4), 20)
    stop.set()
    await asyncio.wait_for(typing, 20)
    assert versions == [[old, old], [new, old], [new, new]]
    assert (typist.errors, typist.drops) == ([], 0)
    # It met both models on both replicas, and its history followed it throughout.
    seen = {(address, hello["index"]) for address, hello in typist.hellos}
    assert seen == {(r.address, v) for r in replicas for v in (old, new)}
    cap = ServerConfig().session_queries
    assert [len(hello["queries"]) for _, hello in typist.hellos] == [min(i, cap) for i in range(len(typist.hellos))]


async def test_clients_of_a_killed_replica_resume_on_the_other_and_lose_no_acknowledged_query(
    replicas: list[Replica], small_model: Model, redis_url: str
) -> None:
    doomed, survivor = replicas
    queries = queries_of(small_model, 60)
    # Twelve queries each at about 200 keystrokes a second: the kill, once every client has had
    # a submit acknowledged, lands while they type.
    typists = [Typist(replicas, queries[i::5], pause=0.005) for i in range(5)]
    typing = [asyncio.create_task(t.run()) for t in typists]
    await asyncio.wait_for(asyncio.gather(*(t.acks(1) for t in typists)), 20)
    doomed.proc.send_signal(signal.SIGKILL)
    assert doomed.proc.wait(10) == -signal.SIGKILL
    await asyncio.wait_for(asyncio.gather(*typing), 30)

    config = ServerConfig()
    store = RedisSessionStore(redis_url, ttl=config.session_ttl, max_queries=config.session_queries)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            for typist in typists:
                on_doomed = typist.acked_on.count(doomed.address)
                assert 1 <= on_doomed < len(typist.queries), "the kill did not land mid-way"
                assert typist.acked == typist.queries and typist.errors == [] and typist.drops == 1
                # Resumed on the survivor with every acknowledged submit (perhaps one more: a submit
                # the killed server recorded but could not acknowledge, typed again).
                (resumed,) = [hello for address, hello in typist.hellos if address == survivor.address]
                assert on_doomed <= len(resumed["queries"]) <= on_doomed + 1
                # A last visit sees the whole history, and ranks with it.
                async with connect(f"ws://{survivor.address}/ws") as ws:
                    hello = await resume(ws, typist.session)
                    prefix = typist.acked[-1][:2]
                    await ws.send(json.dumps({"type": "query", "id": 1, "prefix": prefix}))
                    answer = await recv_json(ws)
                assert typist.session is not None
                history = await store.queries(raw_session(typist.session))
                assert is_subsequence(typist.acked, history), (typist.acked, history)
                assert len(history) <= len(typist.acked) + typist.drops
                assert len(hello["queries"]) == len(history)
                assert answer["items"] == await expected_items(http, survivor, prefix, history)
    finally:
        await store.close()
