"""Helpers of the tests (not fixtures: those live in conftest.py files): log slices, a real
uvicorn in a thread, free ports, frames."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from indexer.model import Model
from indexer.params import BuildParams
from indexer.train.sample import SAMPLE_LOG, first_users
from server.config import ServerConfig
from server.main import uvicorn_config

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = SAMPLE_LOG
# min_users=1: 25 users share too few queries for the mechanics these tests exercise; the
# privacy tests build with the default.
SMALL_PARAMS = BuildParams(workers=1, max_leaf=50, min_users=1)


def slice_log(path: Path, users: int) -> list[str]:
    """The header and the rows of the first ``users`` users of a gzipped AOL log."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return list(first_users(f, users))

TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

@contextlib.contextmanager
def running(app: Starlette, config: ServerConfig | None = None, port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on ``port`` (0: a free one); yields ``host:port``."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart on the same port
    sock.bind(("127.0.0.1", port))
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

@contextlib.contextmanager
def qac_serve_process(index: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``qac serve --index index --port 0`` in a subprocess, with ``env`` on top of this process's
    environment, once its ``/healthz`` answers 200: (the process, ``host:port``); stopped with
    SIGINT after."""
    import os
    import re
    import signal
    import sys

    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "qac", "serve", "--index", str(index), "--port", "0"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        said = ""
        while (url := re.search(r"demo page at http://127\.0\.0\.1:(\d+)/", said)) is None:
            line = proc.stdout.readline()
            assert line, f"qac serve exited before printing the demo URL:\n{said}"
            said += line
        address = f"127.0.0.1:{url.group(1)}"
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe from filling
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://{address}/healthz").status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "qac serve did not start"
            time.sleep(0.1)
        yield proc, address
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame, parsed."""
    message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    assert isinstance(message, dict)
    return message

def items_of(model: Model, prefix: str, history: Sequence[str] = ()) -> list[dict[str, Any]]:
    """What the server must answer: ``Model.complete`` as JSON items."""
    from server.protocol import items

    return items(model.complete(prefix, history))


def queries_of(model: Model, prefix: str, history: Sequence[str] = ()) -> list[str]:
    """The queries of :func:`items_of`, in order."""
    return [item["query"] for item in items_of(model, prefix, history)]


def query_frame(qid: int, prefix: str, context: bool = False) -> str:
    """A ``query`` frame (``context`` only when asked)."""
    frame: dict[str, Any] = {"type": "query", "id": qid, "prefix": prefix}
    if context:
        frame["context"] = True
    return json.dumps(frame)


def submit_frame(text: str) -> str:
    """A ``submit`` frame."""
    return json.dumps({"type": "submit", "query": text})


async def closed_code(ws: ClientConnection, timeout: float = 5.0) -> int:
    """Read until the server closes the connection: its close code."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    assert closed.value.rcvd is not None, "the server did not send a close frame"
    return int(closed.value.rcvd.code)


async def ask(ws: ClientConnection, qid: int, prefix: str, context: bool = False) -> dict[str, Any]:
    """Send a keystroke; the next frame, parsed."""
    await ws.send(query_frame(qid, prefix, context))
    return await recv_json(ws)


def session_frame(frame: dict[str, Any]) -> dict[str, Any]:
    """A ``hello`` or ``ack`` as our clients read it: without ``history``, the deprecated alias of
    the length of ``queries`` (checked here while it is sent)."""
    assert frame["history"] == len(frame["queries"])
    return {key: value for key, value in frame.items() if key != "history"}


SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po"]


def make_data(n_labels: int = 150, seed: int = 0) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """Labels of two or three syllable words, examples = several prefixes of each label."""
    rng = np.random.default_rng(seed)
    labels: set[str] = set()
    while len(labels) < n_labels:
        words = ["".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))) for _ in range(2)]
        labels.add(" ".join(words))
    ordered = sorted(labels)
    prefixes, prevs, y = [], [], []
    for i, label in enumerate(ordered):
        for cut in range(3, len(label) + 1, 2):
            prefixes.append(label[:cut])
            prevs.append(ordered[(i * 7) % len(ordered)] if cut % 4 == 1 else "")
            y.append(i)
    return ordered, prefixes, prevs, np.array(y)


@contextlib.contextmanager
def private_state(directory: Path) -> Iterator[Path]:
    """``XDG_STATE_HOME`` set to ``directory`` (where a server generates its secret) for a while;
    child processes inherit it, so replicas started meanwhile share one secret."""
    import os

    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(directory)
    try:
        yield directory
    finally:
        if old is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = old


async def resume(ws: ClientConnection, session: str, timeout: float = 5.0) -> dict[str, Any]:
    """Read the fresh session's hello, resume ``session`` with a resume frame: the second hello
    (or the error that refused the id)."""
    first = await recv_json(ws, timeout)
    assert first["type"] == "hello"
    await ws.send(json.dumps({"type": "resume", "session": session}))
    return await recv_json(ws, timeout)


def raw_session(signed: str) -> str:
    """The store's id of a signed session id (``v1.p.<b64 "id.issued">.<mac>``)."""
    import base64

    value = signed.split(".")[2]
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode().partition(".")[0]


def start_redis(port: int, *args: str, password: str | None = None) -> subprocess.Popen[bytes]:
    """A ``redis-server`` on ``port`` (more of its flags in ``args``), once it answers PING.
    Skips the test if there is no binary."""
    import shutil

    import pytest
    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *args,
         *(("--requirepass", password) if password else ())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    with redis.Redis(port=port, password=password) as client:
        while True:
            try:
                client.ping()
                return proc
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
