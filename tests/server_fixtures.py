"""Helpers and fixtures of the server tests: a real uvicorn in a thread, a real redis-server.

Test modules import the fixtures they use by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection

import indexer
from indexer.build import build
from indexer.model import Model
from indexer.params import BuildParams
from server.config import ServerConfig
from server.main import uvicorn_config

TOKEN = "test-admin-token"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(app: Starlette, config: ServerConfig | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free port; yields ``host:port``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(config or ServerConfig(), app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame, parsed."""
    message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    assert isinstance(message, dict)
    return message


def items_of(model: Model, prefix: str, history: Sequence[str] = ()) -> list[dict[str, Any]]:
    """What the server must answer: ``Model.complete`` as JSON items."""
    from server.protocol import items

    return items(model.complete(prefix, history))


@pytest.fixture(scope="session")
def small_model(small_model_dir: Path) -> Model:
    return indexer.load(small_model_dir)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory, small_log: Path) -> Path:
    """A second model of the same log, with another version, to reload to."""
    out = tmp_path_factory.mktemp("models") / "other"
    build([small_log], out, BuildParams(workers=1, max_leaf=50, beam=5), quiet=True)
    return out


@pytest.fixture(scope="session")
def history_pair(small_model: Model) -> tuple[str, str]:
    """(previous query, prefix) whose top suggestions change with that previous query."""
    keys = small_model.labels.keys
    prefixes = ["a", "b", "c", "m", "s", "w", "ne", "th"]
    for prev in (keys[i] for i in range(0, len(keys), max(1, len(keys) // 300))):
        for prefix in prefixes:
            with_prev = small_model.complete(prefix, [prev])
            alone = small_model.complete(prefix)
            if with_prev and alone and with_prev[0].query != alone[0].query:
                return prev, prefix
    raise AssertionError("no (previous query, prefix) pair in the model where history matters")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A throwaway ``redis-server`` on a free port; its URL. Skips if there is no binary."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    try:
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The test Redis, emptied."""
    import redis

    with redis.Redis.from_url(redis_server) as client:
        client.flushall()
    return redis_server
