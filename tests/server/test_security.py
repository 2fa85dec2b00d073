"""Issue 15: credentials never printed, signed session ids out of URLs, per-address limits,
binary frames, held-back submits, security headers, reload roots and the internal port,
store failure counting. Every test here failed on the code before."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import server.app as app_module
import server.completer as completer_module
from indexer.model import Model
from server.app import create_app
from server.config import ServerConfig, redact_url
from server.main import uvicorn_config
from server.metrics import Metrics
from server.sessions import MemorySessionStore, SessionError, new_session_id, open_store
from server.store_health import StoreHealth
from server.users import Signer
from tests.support import (
    TOKEN,
    closed_code,
    free_port,
    query_frame,
    recv_json,
    resume,
    running,
    session_frame,
    start_redis,
    submit_frame,
)

pytestmark = pytest.mark.anyio

PASSWORD = "hunter2-very-secret"


class FlakyStore(MemorySessionStore):
    """A memory store that can be switched off; counts the writes it takes."""

    instances: list[FlakyStore] = []

    def __init__(self, url: str, ttl: float, max_queries: int, max_sessions: int, *_: Any) -> None:
        super().__init__(ttl, max_queries, max_sessions)
        self.down = False
        self.writes: list[list[str]] = []
        FlakyStore.instances.append(self)

    def _check(self) -> None:
        if self.down:
            raise SessionError("session store (test): down")

    async def open(self, requested: str | None = None, create: bool = False,
                   owner: str | None = None) -> tuple[str, list[str]]:
        self._check()
        return await super().open(requested, create, owner)

    async def queries(self, sid: str, owner: str | None = None) -> list[str]:
        self._check()
        return await super().queries(sid, owner)

    async def extend(self, sid: str, queries: list[str], owner: str | None = None) -> int:
        self._check()
        self.writes.append(list(queries))
        return await super().extend(sid, queries, owner)

    async def ping(self) -> None:
        self._check()


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FlakyStore]]:
    FlakyStore.instances = []
    monkeypatch.setattr(app_module, "open_store", FlakyStore)
    yield FlakyStore.instances


# -- 1. credentials never printed ---------------------------------------------------------


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    return start_redis(port, "--appendonly", "no", password=PASSWORD)


def test_redact_url_hides_the_password_only() -> None:
    assert redact_url(f"redis://:{PASSWORD}@db:6379/0") == "redis://:***@db:6379/0"
    assert redact_url(f"redis://me:{PASSWORD}@db/0") == "redis://me:***@db/0"
    assert redact_url("redis://db:6379/0") == "redis://db:6379/0"
    assert PASSWORD not in repr(ServerConfig(sessions=f"redis://:{PASSWORD}@db:6379/0"))


async def test_a_redis_store_error_names_no_password(caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0", 60, 20, 10)
    with pytest.raises(SessionError) as error:
        await store.ping()
    await store.close()
    assert PASSWORD not in str(error.value) and "***" in str(error.value)


async def test_health_logs_and_metrics_never_show_the_redis_password_or_a_path(
    small_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    redis_proc = _start_redis(port)
    config = ServerConfig(index=str(small_model_dir), sessions=f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    caplog.set_level(logging.INFO)
    try:
        with running(create_app(config), config) as server:
            async with httpx.AsyncClient(base_url=f"http://{server}") as http:
                assert (await http.get("/healthz")).json()["status"] == "ok"
                redis_proc.terminate()
                redis_proc.wait(10)
                deadline = time.monotonic() + 20
                while (health := await http.get("/healthz")).json()["store"] != "down":
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
                metrics = (await http.get("/metrics")).text
    finally:
        redis_proc.kill()
        redis_proc.wait(10)
    body = health.json()
    assert body["status"] == "degraded" and "sessions" in body["degraded"]
    text = health.text
    assert PASSWORD not in text and "redis://" not in text and str(small_model_dir) not in text
    assert "error" not in body
    assert PASSWORD not in metrics and str(small_model_dir) not in metrics
    assert PASSWORD not in caplog.text


# -- 2. session ids: signed, in a resume frame, never in the URL --------------------------


@pytest.fixture
def server(small_model_dir: Path) -> Iterator[str]:
    config = ServerConfig(index=str(small_model_dir))
    with running(create_app(config), config) as address:
        yield address


async def test_the_session_in_the_url_is_ignored(server: str) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        session = (await recv_json(ws))["session"]
        await ws.send(submit_frame("weather"))
        await recv_json(ws)
    async with connect(f"ws://{server}/ws?session={session}") as ws:
        hello = await recv_json(ws)
    assert hello["session"] != session and hello["queries"] == []


async def test_a_resume_frame_resumes_and_is_answered_with_hello(server: str) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        session = (await recv_json(ws))["session"]
        await ws.send(submit_frame("weather"))
        await recv_json(ws)
    async with connect(f"ws://{server}/ws") as ws:
        hello = await resume(ws, session)
        await ws.send(submit_frame("news"))
        ack = await recv_json(ws)
    assert (hello["type"], hello["session"], hello["queries"], ack["queries"]) == ("hello", session, ["weather"],
                                                                                  ["weather", "news"])


async def test_resume_comes_before_any_query_or_submit(server: str) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        session = (await recv_json(ws))["session"]
        await ws.send(submit_frame("weather"))
        await recv_json(ws)
        await ws.send(json.dumps({"type": "resume", "session": session}))
        refused = await recv_json(ws)
    assert (refused["type"], refused["code"]) == ("error", "bad_message")


async def test_a_session_id_the_server_never_issued_is_refused_even_while_the_store_is_down(
    small_model_dir: Path, flaky: list[FlakyStore]
) -> None:
    config = ServerConfig(index=str(small_model_dir), store_failures=1)
    chosen = new_session_id()
    forged = Signer(b"another secret, not the server's").sign_value("session", f"{chosen}.{int(time.time())}")
    with running(create_app(config), config) as server:
        (store,) = flaky
        store.down = True
        async with connect(f"ws://{server}/ws") as ws:
            refused = [await resume(ws, chosen)]
            for bad in (forged, "v1.p.x.y"):
                await ws.send(json.dumps({"type": "resume", "session": bad}))
                refused.append(await recv_json(ws))
            await ws.send(submit_frame("my secret query"))
            assert (await recv_json(ws))["stored"] is False
            store.down = False
            async with httpx.AsyncClient() as http:  # a health check finds the store back
                assert (await http.get(f"http://{server}/healthz")).json()["status"] == "ok"
            await ws.send(submit_frame("another"))
            assert session_frame(await recv_json(ws)) == {"type": "ack", "queries": ["my secret query", "another"],
                                                          "added": True}
    assert [(r["type"], r["code"]) for r in refused] == [("error", "bad_session")] * 3
    assert await store.queries(chosen) == []  # the id the attacker chose never became a session


async def test_a_fresh_session_can_be_resumed_before_it_was_used(server: str) -> None:
    async with connect(f"ws://{server}/ws") as first:
        session = (await recv_json(first))["session"]
        async with connect(f"ws://{server}/ws") as second:
            hello = await resume(second, session)
    assert hello["session"] == session


# -- 3. per-address limits ----------------------------------------------------------------


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_connections_per_address_are_limited(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), max_connections_per_address=2)
    with running(create_app(config), config) as server:
        url = f"ws://{server}/ws"
        async with connect(url, additional_headers=_from("203.0.113.7")) as a, \
                connect(url, additional_headers=_from("203.0.113.7")) as b:
            assert (await recv_json(a))["type"] == (await recv_json(b))["type"] == "hello"
            async with connect(url, additional_headers=_from("203.0.113.7")) as c:
                assert await closed_code(c, 10.0) == 1013
            async with connect(url, additional_headers=_from("198.51.100.1")) as d:  # another address
                assert (await recv_json(d))["type"] == "hello"
            await b.close()
            for _ in range(100):  # once the server has seen b go, a new one is let in
                async with connect(url, additional_headers=_from("203.0.113.7")) as e:
                    try:
                        first = await recv_json(e)
                    except ConnectionClosed:
                        await asyncio.sleep(0.05)
                        continue
                    assert first["type"] == "hello"
                    break
            else:
                raise AssertionError("the address never got its connection back")


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), max_connections_per_address=2, forwarded_allow_ips="10.9.9.9")
    with running(create_app(config), config) as server:
        url = f"ws://{server}/ws"
        async with connect(url, additional_headers=_from("203.0.113.1")) as a, \
                connect(url, additional_headers=_from("203.0.113.2")) as b:
            await recv_json(a)
            await recv_json(b)
            # All are 127.0.0.1, whose third connection is refused as it opens (issue 27).
            with pytest.raises(InvalidStatus) as refused:
                await connect(url, additional_headers=_from("203.0.113.3"))
            assert refused.value.response.status_code == 503


async def test_messages_per_address_are_limited_across_its_connections(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), rate=1000, burst=1000, address_rate=0.01, address_burst=3)
    with running(create_app(config), config) as server:
        url = f"ws://{server}/ws"
        async with connect(url) as a, connect(url) as b:
            await recv_json(a)
            await recv_json(b)
            answers = []
            for ws, qid in ((a, 1), (b, 1), (a, 2), (b, 2)):
                await ws.send(submit_frame(f"q{qid}"))
                answers.append(await recv_json(ws))
    assert [x["type"] for x in answers] == ["ack", "ack", "ack", "error"]
    assert answers[-1]["code"] == "rate_limited"


async def test_complete_is_rate_limited_per_address(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), complete_rate=0.01, complete_burst=2)
    with running(create_app(config), config) as server:
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            codes = [(await http.get("/complete", params={"prefix": "a"})) for _ in range(3)]
            other = await http.get("/complete", params={"prefix": "a"}, headers=_from("198.51.100.9"))
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert int(codes[-1].headers["retry-after"]) >= 1
    assert codes[-1].json()["code"] == "rate_limited"
    assert other.status_code == 200


async def test_an_address_is_charged_the_cpu_time_of_its_rankings(
    small_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27: with a fake CPU meter that charges each ranking 100 ms, an address allowed 250 ms
    at once gets three keystrokes ranked, then rate_limited on the WebSocket and 429 on
    GET /complete; another address is served."""
    ticks = iter(range(1_000_000))
    monkeypatch.setattr(completer_module, "CPU_CLOCK", lambda: next(ticks) * 0.1)  # read twice a ranking
    config = ServerConfig(index=str(small_model_dir), address_cpu_rate=0.001, address_cpu_burst=250)
    app = create_app(config)
    with running(app, config) as server:
        prefixes = [f"xq{c}" for c in "abcdefgh"]  # nobody logged them: each is ranked
        assert not any(app.state.qac.completer.fresh.get(p) for p in prefixes)
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            answers = []
            for qid, prefix in enumerate(prefixes[:4], 1):
                await ws.send(query_frame(qid, prefix))
                answers.append(await recv_json(ws))
        async with connect(f"ws://{server}/ws", additional_headers=_from("198.51.100.3")) as other:
            await recv_json(other)
            await other.send(query_frame(1, prefixes[4]))
            served = await recv_json(other)
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            refused = await http.get("/complete", params={"prefix": prefixes[5]})
            elsewhere = await http.get("/complete", params={"prefix": prefixes[6]}, headers=_from("198.51.100.4"))
    assert [a["type"] for a in answers] == ["suggestions"] * 3 + ["error"]
    assert answers[-1]["code"] == "rate_limited" and "CPU" in answers[-1]["message"]
    assert served["type"] == "suggestions"
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert elsewhere.status_code == 200


async def test_complete_over_its_rate_waits_its_turn_up_to_a_second(
    small_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The buckets' clock stands still: all 8 are read at the same instant however loaded the
    # machine is (the waits themselves are real).
    monkeypatch.setattr(app_module, "AddressBuckets", functools.partial(app_module.AddressBuckets, clock=lambda: 0.0))
    config = ServerConfig(index=str(small_model_dir), complete_rate=4, complete_burst=1)
    with running(create_app(config), config) as server:
        async with httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as http:
            started = time.monotonic()
            answers = await asyncio.gather(*(http.get("/complete", params={"prefix": "a"}) for _ in range(8)))
            took = time.monotonic() - started
    codes = [r.status_code for r in answers]
    # One at once, then one every 1/4 s for as long as a second of waiting allows; the rest 429.
    assert codes.count(200) == 5 and codes.count(429) == 3
    assert took >= 0.7  # the last waited its full second: never less on any machine


async def test_complete_requests_ranked_on_the_event_loop_wait_their_turn_in_the_bounded_queue(
    small_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ServerConfig(index=str(small_model_dir), complete_queue=2)
    assert config.rank_threads == 0
    app = create_app(config)
    real = completer_module._fresh
    sent = threading.Event()

    def slow(*args: Any) -> Any:  # a ranking that holds the event loop (the first, until every request is sent)
        sent.wait(30)
        time.sleep(0.05)
        return real(*args)

    monkeypatch.setattr(completer_module, "_fresh", slow)
    with running(app, config) as server:
        async with httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as http:
            # Prefixes nobody logged: none is ranked ahead, each is ranked on the spot.
            prefixes = [f"xq{c}" for c in "abcdefghijkl"]
            assert not any(app.state.qac.completer.fresh.get(p) for p in prefixes)
            asked = [asyncio.create_task(http.get("/complete", params={"prefix": p})) for p in prefixes]
            await asyncio.sleep(1.0)  # the requests wait in the sockets while the first ranking holds the loop
            sent.set()
            answers = await asyncio.gather(*asked)
    codes = [r.status_code for r in answers]
    # Requests read while one is ranked queue up to the bound; the others are refused at once.
    assert set(codes) == {200, 503} and codes.count(200) >= 2


async def test_complete_answers_503_when_its_ranking_queue_is_full(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), complete_queue=1)
    app = create_app(config)
    release = threading.Event()
    with running(app, config) as server:
        completer = app.state.qac.completer
        real = completer.complete

        async def stuck(*args: Any, **kwargs: Any) -> Any:
            await asyncio.to_thread(release.wait, 30)
            return await real(*args, **kwargs)

        completer.complete = stuck
        async with httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as http:
            first = asyncio.create_task(http.get("/complete", params={"prefix": "a"}))
            for _ in range(500):
                if app.state.qac.complete_pending:
                    break
                await asyncio.sleep(0.01)
            refused = await http.get("/complete", params={"prefix": "b"})
            release.set()
            answered = await first
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["code"] == "overloaded"
    assert answered.status_code == 200


async def test_a_connection_over_its_rate_limit_for_too_long_is_closed_with_1008(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), rate=1, burst=1, rate_limit_close=0.3)
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            with pytest.raises(ConnectionClosed) as closed:
                for qid in range(1, 400):
                    await ws.send(query_frame(qid, "a"))
                    await asyncio.sleep(0.02)
                    with contextlib.suppress(TimeoutError):
                        while True:
                            await asyncio.wait_for(ws.recv(), 0.001)
                for _ in range(100):
                    await asyncio.wait_for(ws.recv(), 10)
            async with httpx.AsyncClient(base_url=f"http://{server}") as http:
                metrics = (await http.get("/metrics")).text
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert 'qac_closed_connections_total{reason="rate_limited"} 1.0' in metrics


# -- 4. binary frames ---------------------------------------------------------------------


async def test_binary_frames_count_against_the_size_and_the_rate(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), rate=0.01, burst=2)
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            answers = []
            for _ in range(2):
                await ws.send(b"\x00\x01")
                answers.append(await recv_json(ws))
            await ws.send(query_frame(1, "a"))  # the binary frames spent the tokens
            answers.append(await recv_json(ws))
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            await ws.send(b"x" * 5000)
            assert await closed_code(ws, 10.0) == 1009
    assert [a["code"] for a in answers] == ["binary_frame", "binary_frame", "rate_limited"]


# -- 5. held-back submits -----------------------------------------------------------------


async def test_held_back_submits_are_capped_and_written_back_in_one_round_trip(
    small_model_dir: Path, flaky: list[FlakyStore]
) -> None:
    config = ServerConfig(index=str(small_model_dir), session_queries=5, store_failures=1)
    with running(create_app(config), config) as server:
        (store,) = flaky
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            store.down = True
            for i in range(12):
                await ws.send(submit_frame(f"query {i}"))
                assert (await recv_json(ws))["stored"] is False
            store.down = False
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"http://{server}/healthz")).json()["status"] == "ok"
            await ws.send(submit_frame("back"))
            assert session_frame(await recv_json(ws)) == {
                "type": "ack", "added": True, "queries": ["query 8", "query 9", "query 10", "query 11", "back"]}
    assert store.writes == [["query 8", "query 9", "query 10", "query 11", "back"]]


# -- 6. security headers ------------------------------------------------------------------


async def test_every_http_response_has_the_security_headers(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), allowed_origins=("https://shop.example",))
    with running(create_app(config), config) as server:
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            responses = [await http.get(path) for path in
                         ("/", "/healthz", "/static/qac-client.js", "/complete?prefix=a", "/complete", "/nothing")]
    for response in responses:
        csp = response.headers["content-security-policy"]
        assert "connect-src 'self' https://shop.example;" in csp
        assert "frame-ancestors 'self' https://shop.example" in csp
        assert " ws:" not in csp and " wss:" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert "Content-Security-Policy" not in responses[0].text  # no <meta> policy left


# -- 7. reload root and internal port -----------------------------------------------------


async def test_reloads_stay_under_the_models_root_and_errors_name_no_path(
    small_model_dir: Path, other_model_dir: Path, small_model: Model, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(other_model_dir, root / "next")
    (root / "escape").symlink_to(small_model_dir.parent)
    config = ServerConfig(index=str(small_model_dir), admin_token=TOKEN, models_root=str(root))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with running(create_app(config), config) as server:
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            outside = await http.post("/admin/reload", json={"index": str(other_model_dir)}, headers=auth)
            via_link = await http.post("/admin/reload", json={"index": "escape/small"}, headers=auth)
            dotdot = await http.post("/admin/reload", json={"index": "../../etc"}, headers=auth)
            missing = await http.post("/admin/reload", json={"index": "nothing-here"}, headers=auth)
            empty = (root / "empty")
            empty.mkdir()
            damaged = await http.post("/admin/reload", json={"index": "empty"}, headers=auth)
            good = await http.post("/admin/reload", json={"index": "next"}, headers=auth)
    for refused in (outside, via_link, dotdot, missing, damaged):
        assert refused.status_code == 400 and refused.json()["code"] == "bad_index"
        assert "/" not in refused.json()["message"]
    assert missing.json()["message"] == damaged.json()["message"]  # nothing tells what exists
    assert good.status_code == 200, good.text
    assert str(root) not in good.text


@contextlib.contextmanager
def two_ports(config: ServerConfig, app: Any) -> Iterator[tuple[str, str]]:
    public, internal = socket.socket(), socket.socket()
    public.bind(("127.0.0.1", 0))
    internal.bind(("127.0.0.1", 0))
    config.__dict__["internal_port"] = internal.getsockname()[1]  # frozen: as main.run sets it
    server = uvicorn.Server(uvicorn_config(config, app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [public, internal]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield (f"127.0.0.1:{public.getsockname()[1]}", f"127.0.0.1:{internal.getsockname()[1]}")
    finally:
        server.should_exit = True
        thread.join(15)
        public.close()
        internal.close()


async def test_metrics_and_admin_are_served_on_the_internal_port_only(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), admin_token=TOKEN, internal_port=0)
    app = create_app(config)
    with two_ports(config, app) as (public, internal):
        async with httpx.AsyncClient() as http:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            public_metrics = await http.get(f"http://{public}/metrics")
            public_reload = await http.post(f"http://{public}/admin/reload", json={"index": "x"}, headers=auth)
            internal_metrics = await http.get(f"http://{internal}/metrics")
            internal_reload = await http.post(f"http://{internal}/admin/reload", json={"index": "x"}, headers=auth)
            health = await http.get(f"http://{public}/healthz")
    assert public_metrics.status_code == 404 and public_reload.status_code == 404
    assert internal_metrics.status_code == 200 and "qac_keystrokes_total" in internal_metrics.text
    assert internal_reload.status_code == 400  # reached: "x" is not a model
    assert health.status_code == 200


# -- 9. the store is marked down after several failures; a bounded pool ----------------------


def test_the_store_is_down_only_after_consecutive_failures() -> None:
    health = StoreHealth(MemorySessionStore(60, 20, 10), Metrics(), failures=3)
    error = SessionError("x")
    health.failed(error)
    health.failed(error)
    health.answered()  # not consecutive
    health.failed(error)
    health.failed(error)
    assert health.up
    health.failed(error)
    assert not health.up
    health.answered()
    assert health.up


async def test_the_redis_pool_is_bounded() -> None:
    store = open_store("redis://127.0.0.1:1/0", 60, 20, 10, 7)
    try:
        pool = store._redis.connection_pool  # type: ignore[attr-defined]
        assert pool.max_connections == 7
        assert type(pool).__name__ == "BlockingConnectionPool"
    finally:
        await store.close()


# -- 8. NFKC -------------------------------------------------------------------------------


def test_nfkc_comes_before_lowercasing() -> None:
    from indexer.normalize import normalize

    assert normalize("\uff2e\uff45\uff57 \uff39\uff4f\uff52\uff4b") == "new york"  # full-width
    assert normalize("\ufb01sh tacos") == "fish tacos"  # a ligature
    assert normalize("Cafe\u0301 de\u0301ja\u0300 vu") == normalize("Café déjà vu") == "café déjà vu"


def test_one_query_typed_in_several_unicode_forms_is_one_query_at_build_and_at_query_time(tmp_path: Path) -> None:
    """Two people per form: only NFKC at build time brings "fish tacos" to the three people a
    query needs, and only NFKC at query time finds it from every form."""
    import indexer
    from indexer.params import BuildParams
    from indexer.train.build import build

    forms = ["fish tacos", "\ufb01sh tacos", "\uff26\uff29\uff33\uff28 tacos"]  # plain, ligature, full-width
    cafe = ["caf\u00e9 menu", "cafe\u0301 menu", "\uff43\uff41\uff46\u00e9 menu"]  # composed, decomposed, wide
    rows = ["AnonID\tQuery\tQueryTime\n"]
    for user in range(6):
        for hour, query in enumerate([forms[user % 3], cafe[user % 3], "weather", "news"]):
            rows.append(f"{200 + user}\t{query}\t2006-03-0{1 + hour} 1{user}:00:00\n")
    (tmp_path / "log.tsv").write_text("".join(rows), encoding="utf-8")
    build([tmp_path / "log.tsv"], tmp_path / "model", BuildParams(workers=1, max_leaf=8, min_users=3), quiet=True)
    model = indexer.load(tmp_path / "model")
    assert model.labels.index("fish tacos") >= 0 and model.labels.index("caf\u00e9 menu") >= 0
    for typed in ["fis", "\ufb01s", "\uff26\uff29\uff33", "\uff46\uff49\uff53\uff48 t"]:
        assert "fish tacos" in [c.query for c in model.complete(typed)], typed
    for typed in ["caf\u00e9", "cafe\u0301", "\uff43\uff41\uff46\uff45\u0301 m"]:
        assert "caf\u00e9 menu" in [c.query for c in model.complete(typed)], typed


def test_models_record_the_normalization_and_older_ones_still_load(small_model_dir: Path, tmp_path: Path) -> None:
    import indexer
    from indexer.normalize import NORMALIZATION

    manifest = json.loads((small_model_dir / "manifest.json").read_text())
    assert manifest["normalization"] == NORMALIZATION == 2
    old = tmp_path / "old"
    shutil.copytree(small_model_dir, old)
    del manifest["normalization"]  # as every model built before it was recorded
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert indexer.load(old).complete("a")
