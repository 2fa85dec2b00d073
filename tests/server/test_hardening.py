"""Hardening: garbage frames, floods, slow and idle clients, isolation, store and model faults."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import shutil
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as connect_sync

import indexer
from indexer.model import Model
from server.app import create_app
from server.config import ServerConfig
from server.protocol import CLIENT_TYPES
from server.sessions import new_session_id
from tests.support import (
    TOKEN,
    closed_code,
    free_port,
    items_of,
    query_frame,
    recv_json,
    resume,
    running,
    session_frame,
    start_redis,
)

pytestmark = pytest.mark.anyio


def metric(text: str, name: str) -> float:
    """The value of one sample line of a Prometheus exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no sample {name} in the metrics")


@pytest.fixture(scope="module")
def server(small_model_dir: Path) -> Iterator[str]:
    """One server for the tests that need nothing special; a high rate for the property test."""
    config = ServerConfig(index=str(small_model_dir), rate=100_000, burst=100_000)
    with running(create_app(config), config) as address:
        yield address


# -- bad frames ---------------------------------------------------------------------------


async def test_a_frame_over_the_size_limit_closes_the_connection_with_1009(server: str) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        await recv_json(ws)
        await ws.send(query_frame(1, "a" * 10_000))
        assert await closed_code(ws) == 1009


def test_the_app_itself_closes_with_1009_when_the_server_does_not(small_model_dir: Path,
                                                                  small_model: Model) -> None:
    config = ServerConfig(index=str(small_model_dir), max_message=1000)
    with TestClient(create_app(config, model=small_model)) as client, client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_text(query_frame(1, "é" * 600))  # 600 characters, 1,200 bytes
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1009


async def test_invalid_utf8_closes_the_connection_with_1007_and_one_log_line(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    async with connect(f"ws://{server}/ws") as ws:
        await recv_json(ws)
        await ws.send(b'{"type":"query","id":1,"prefix":"\xff\xfe"}', text=True)
        assert await closed_code(ws) == 1007
    # A client chooses how often this happens: an INFO line, not an ERROR with a traceback.
    ours = [r for r in caplog.records if r.name == "uvicorn.error"]
    assert [r.getMessage() for r in ours if "UTF-8" in r.getMessage()] == [
        "closing a connection: a text frame is not valid UTF-8"]
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in ours)
    # One line per connection accepted: uvicorn's, without websockets' "connection open".
    assert sum("[accepted]" in r.getMessage() for r in ours) == 1
    assert not any(r.getMessage() == "connection open" for r in ours)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_field = _json | st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
_message = st.one_of(
    st.text(max_size=300),
    _json.map(json.dumps),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["query", "submit", "hello", "", "QUERY"]) | _json},
        optional={"id": st.integers(min_value=-(2**64), max_value=2**64) | _json, "prefix": _field,
                  "query": _field},
    ).map(json.dumps),
    st.binary(max_size=300),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=_message)
def test_any_message_gets_one_answer_and_the_connection_still_works(server: str, message: str | bytes) -> None:
    with connect_sync(f"ws://{server}/ws") as ws:
        json.loads(ws.recv(5))
        ws.send(message)
        answer = json.loads(ws.recv(5))
        assert answer["type"] in {"error", "suggestions", "ack"}
        if answer["type"] == "error":
            assert answer["code"] in {"bad_json", "bad_message", "unknown_type", "too_long", "binary_frame"}
            assert answer["id"] is None or (isinstance(answer["id"], int) and answer["id"] >= 0)
            assert answer.get("for", "query") in CLIENT_TYPES
        ws.send(query_frame(2**53 - 1, "a"))
        good = json.loads(ws.recv(5))
        assert (good["type"], good["id"]) == ("suggestions", 2**53 - 1)


async def test_an_error_names_the_type_of_the_frame_it_refuses_when_it_is_known(server: str) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "submit", "query": "a" * 300}))
        too_long = await recv_json(ws)
        await ws.send('{"type": "submit", "query": ')
        not_json = await recv_json(ws)
    assert too_long == {"type": "error", "id": None, "code": "too_long",
                        "message": "query of 300 characters; the limit is 200", "for": "submit"}
    assert not_json["code"] == "bad_json" and "for" not in not_json


# -- floods, idle and slow clients --------------------------------------------------------


async def test_a_rate_limited_frame_is_refused_with_its_type_and_id(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), rate=0.1, burst=2)
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            for text in ["one", "two"]:
                await ws.send(json.dumps({"type": "submit", "query": text}))
                assert (await recv_json(ws))["type"] == "ack"
            await ws.send(query_frame(7, "a"))
            refused_query = await recv_json(ws)
            await ws.send(json.dumps({"type": "submit", "query": "three"}))
            refused_submit = await recv_json(ws)
    assert (refused_query["code"], refused_query["id"], refused_query["for"]) == ("rate_limited", 7, "query")
    assert (refused_submit["code"], refused_submit["id"], refused_submit["for"]) == ("rate_limited", None, "submit")


async def test_connections_over_the_cap_are_refused_with_1013(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), max_connections=2)
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as one, connect(f"ws://{server}/ws") as two:
            await recv_json(one)
            await recv_json(two)
            async with connect(f"ws://{server}/ws") as three:
                assert await closed_code(three) == 1013
        # Room again once they left: the server frees their places just after the closing
        # handshakes the clients waited for, so a connection made at once may still be refused.
        refused = 0
        deadline = time.monotonic() + 5
        while True:
            async with connect(f"ws://{server}/ws") as again:
                try:
                    first = await recv_json(again)
                    break
                except ConnectionClosed as exc:
                    assert exc.rcvd is not None and exc.rcvd.code == 1013
            refused += 1
            assert time.monotonic() < deadline, "no room after the two left"
            await asyncio.sleep(0.05)
        assert first["type"] == "hello"
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            text = (await http.get("/metrics")).text
    assert metric(text, 'qac_closed_connections_total{reason="full"}') == 1 + refused


async def test_an_idle_connection_is_closed_with_4000(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), idle_timeout=2)
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            for i in range(6):  # activity keeps it open: 1.2 s in all, beyond any 2 s without
                await asyncio.sleep(0.2)
                await ws.send(query_frame(i, "a"))
                assert (await recv_json(ws))["type"] == "suggestions"
            assert await closed_code(ws) == 4000


async def test_a_keystroke_arms_no_timeout_on_the_server(small_model_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The idle timeout is one timer per connection and a send the transport takes at once is
    not timed: a keystroke costs no timer set and cancelled (two per keystroke before)."""
    armed: list[str] = []
    timeout = asyncio.timeout

    def counting(delay: float | None) -> asyncio.Timeout:
        armed.append(sys._getframe(1).f_code.co_filename)
        return timeout(delay)

    monkeypatch.setattr(asyncio, "timeout", counting)
    config = ServerConfig(index=str(small_model_dir), rate=1e6, burst=1_000_000, address_rate=1e6,
                          address_burst=1_000_000)
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            armed.clear()
            for i in range(20):
                await ws.send(query_frame(i, "ab"[: 1 + i % 2]))
                assert (await recv_json(ws))["type"] == "suggestions"
            by_server = [f for f in armed if f.endswith(str(Path("server", "connection.py")))]
    assert by_server == []


def _raw_websocket(address: str, rcvbuf: int) -> socket.socket:
    """A WebSocket handshake on a plain socket with a tiny receive buffer, for a client that
    never reads."""
    host, port = address.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    key = base64.b64encode(b"0123456789abcdef").decode()
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def _masked_text_frame(payload: bytes) -> bytes:
    assert len(payload) < 126
    mask = b"\x01\x02\x03\x04"
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_a_client_that_never_reads_is_dropped(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), send_timeout=0.5, rate=1e6, burst=1_000_000,
                          address_rate=1e6, address_burst=1_000_000)
    with running(create_app(config), config) as server:
        sock = _raw_websocket(server, rcvbuf=4096)
        frame = _masked_text_frame(b'{"type":"ping","id":1}')  # answered at once with an error frame
        sock.settimeout(0.2)
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            deadline = time.monotonic() + 20
            dropped = 0.0
            while dropped < 1 and time.monotonic() < deadline:
                try:  # keep asking until the server stops reading (it is stuck sending), then wait
                    sock.sendall(frame * 200)
                except (TimeoutError, OSError):
                    await asyncio.sleep(0.1)
                text = (await http.get("/metrics")).text
                dropped = metric(text, 'qac_closed_connections_total{reason="slow_client"}')
            assert dropped == 1
            while metric((await http.get("/metrics")).text, "qac_open_connections") and \
                    time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert metric((await http.get("/metrics")).text, "qac_open_connections") == 0
            # The TCP connection is cut, not left waiting for the client to read.
            sock.settimeout(5)
            with pytest.raises(ConnectionResetError):
                while sock.recv(1 << 16):
                    pass
        sock.close()


# -- isolation ----------------------------------------------------------------------------


def test_session_ids_carry_128_random_bits() -> None:
    ids = [new_session_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


async def test_one_session_never_sees_another_ones_queries(
    server: str, small_model: Model, history_pair: tuple[str, str]
) -> None:
    prev, prefix = history_pair
    async with connect(f"ws://{server}/ws") as a, connect(f"ws://{server}/ws") as b:
        hello_a, hello_b = await recv_json(a), await recv_json(b)
        await a.send(json.dumps({"type": "submit", "query": prev}))
        assert (await recv_json(a))["queries"] == [prev]
        await b.send(query_frame(1, prefix))
        answer_b = await recv_json(b)
    assert hello_a["session"] != hello_b["session"]
    assert answer_b["items"] == items_of(small_model, prefix)
    # An id nobody was given does not open a session of that id (no fixation, no guessing).
    guess = new_session_id()
    async with connect(f"ws://{server}/ws") as c:
        refused = await resume(c, guess)
    assert (refused["type"], refused["code"]) == ("error", "bad_session")


# -- what a connection leaves behind -------------------------------------------------------


async def test_connections_leave_no_garbage_for_the_cycle_collector(server: str) -> None:
    """A connection's objects, whether its client closed it or the server dropped it, are freed
    as it ends; none waits for the cyclic collector, whose pauses stall every keystroke of the
    process and grow with the garbage there is to walk."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    from server.connection import Connection

    server_side = (HttpToolsProtocol, WebSocketsSansIOProtocol, Connection)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # the collector keeps what it finds, for us to look at
    try:
        async with httpx.AsyncClient(base_url=f"http://{server}", trust_env=False) as http:
            for _ in range(3):
                async with connect(f"ws://{server}/ws") as ws:  # closed by its client
                    await recv_json(ws)
                    await ws.send(query_frame(1, "a"))
                    await recv_json(ws)
                async with connect(f"ws://{server}/ws") as ws:  # dropped by the server
                    await recv_json(ws)
                    await ws.send(query_frame(1, "a" * 10_000))
                    assert await closed_code(ws) == 1009
            deadline = time.monotonic() + 10
            while metric((await http.get("/metrics")).text, "qac_open_connections") > 0:
                assert time.monotonic() < deadline, "the server did not end the connections"
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # the last connection's tasks, after it left the count
        gc.collect()
        left = sorted(type(o).__name__ for o in gc.garbage if issubclass(type(o), server_side))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


# -- faults: the session store goes away, a damaged model is offered ----------------------


def _start_redis(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    return start_redis(port, "--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "always")


async def _wait_for_health(http: httpx.AsyncClient, store: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        health = await http.get("/healthz")
        assert health.status_code == 200  # the server answers whatever the store does
        if health.json()["store"] == store or time.monotonic() > deadline:
            return dict(health.json())
        await asyncio.sleep(0.1)


async def test_the_server_keeps_answering_while_redis_is_down_and_catches_up_after(
    small_model_dir: Path, small_model: Model, history_pair: tuple[str, str], tmp_path: Path
) -> None:
    prev, prefix = history_pair
    port = free_port()
    redis_proc = _start_redis(port, tmp_path)
    config = ServerConfig(index=str(small_model_dir), sessions=f"redis://127.0.0.1:{port}/0")
    try:
        with running(create_app(config), config) as server:
            async with httpx.AsyncClient(base_url=f"http://{server}") as http, \
                    connect(f"ws://{server}/ws") as ws:
                session = (await recv_json(ws))["session"]
                await ws.send(json.dumps({"type": "submit", "query": "before the outage"}))
                assert session_frame(await recv_json(ws)) == {"type": "ack", "queries": ["before the outage"],
                                                              "added": True}

                redis_proc.terminate()
                redis_proc.wait(10)
                await ws.send(json.dumps({"type": "submit", "query": prev}))
                assert session_frame(await recv_json(ws)) == {"type": "ack", "queries": ["before the outage", prev],
                                                              "added": True, "stored": False}
                await ws.send(query_frame(1, prefix))
                answer = await recv_json(ws)
                assert answer["items"] == items_of(small_model, prefix, ["before the outage", prev])
                health = await _wait_for_health(http, "down")
                assert health["status"] == "degraded"
                assert metric((await http.get("/metrics")).text, "qac_session_store_up") == 0
                async with connect(f"ws://{server}/ws") as other:  # new connections are served too
                    assert (await recv_json(other))["type"] == "hello"
                    await other.send(query_frame(1, prefix))
                    assert (await recv_json(other))["items"] == items_of(small_model, prefix)

                redis_proc = _start_redis(port, tmp_path)  # back, with what it had saved
                assert (await _wait_for_health(http, "up"))["status"] == "ok"
                await ws.send(query_frame(2, prefix))  # the next keystroke writes back the held submit
                assert (await recv_json(ws))["type"] == "suggestions"
                assert metric((await http.get("/metrics")).text, "qac_session_store_up") == 1
            async with connect(f"ws://{server}/ws") as again:
                resumed = await resume(again, session)
            assert resumed["queries"] == ["before the outage", prev]
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)


def _damage(model_dir: Path, out: Path, how: str) -> Path:
    shutil.copytree(model_dir, out)
    if how == "half-written":  # a build killed before its manifest
        (out / "manifest.json").unlink()
    elif how == "truncated":
        data = (out / "weights.npz").read_bytes()
        (out / "weights.npz").write_bytes(data[: len(data) // 2])
    elif how == "flipped":
        data = bytearray((out / "labels.marisa").read_bytes())
        for i in range(len(data) // 3, len(data) // 3 + 32):
            data[i] ^= 0x5A
        (out / "labels.marisa").write_bytes(bytes(data))
    elif how == "missing file":
        (out / "words.marisa").unlink()
    elif how == "bad manifest":
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["params"] = {"beam": "wide"}
        (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize("how", ["half-written", "truncated", "flipped", "missing file", "bad manifest"])
async def test_a_damaged_model_is_refused_and_the_old_one_keeps_serving(
    small_model_dir: Path, small_model: Model, tmp_path: Path, how: str
) -> None:
    damaged = _damage(small_model_dir, tmp_path / "damaged", how)
    config = ServerConfig(index=str(small_model_dir), admin_token=TOKEN, models_root=str(tmp_path))
    with running(create_app(config), config) as server:
        async with httpx.AsyncClient(base_url=f"http://{server}") as http, connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            refused = await http.post("/admin/reload", json={"index": str(damaged)},
                                      headers={"Authorization": f"Bearer {TOKEN}"})
            await ws.send(query_frame(1, "a"))
            answer = await recv_json(ws)
            health = (await http.get("/healthz")).json()
    assert refused.status_code == 400
    assert refused.json()["code"] == "bad_index"
    assert "did not load" in refused.json()["message"]
    assert str(tmp_path) not in refused.json()["message"]  # errors name no path
    assert small_model.version in refused.json()["message"]
    assert health["index"] == small_model.version
    assert answer["items"] == items_of(small_model, "a")


async def test_a_reload_frees_the_model_it_replaces(small_model_dir: Path, other_model_dir: Path) -> None:
    first = indexer.load(small_model_dir)
    replaced = weakref.ref(first)
    config = ServerConfig(index=str(small_model_dir), admin_token=TOKEN,
                          models_root=str(small_model_dir.parent.parent))
    app = create_app(config, model=first)
    del first
    with running(app, config) as server:
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            answer = await http.post("/admin/reload", json={"index": str(other_model_dir)},
                                     headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 200
            gc.collect()
            assert replaced() is None, "something still holds the replaced model"
