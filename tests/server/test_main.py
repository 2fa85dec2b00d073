"""``run()`` and ``qac serve``: the sample model, start-up errors, worker processes."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

import indexer
from indexer.train.sample import ensure_sample_model
from server.config import ServerConfig
from server.main import ServeError, demo_url, run
from server.users import Signer
from tests.support import SMALL_PARAMS, TOKEN, free_port, qac_serve_process

SECRET = "the workers' shared secret"
ROOT = Path(__file__).resolve().parents[2]


def test_the_sample_model_is_built_once_then_reused_until_it_no_longer_loads(
    small_log: Path, tmp_path: Path
) -> None:
    said: list[str] = []
    first = ensure_sample_model(small_log, SMALL_PARAMS, tmp_path, say=said.append, quiet=True)
    version = indexer.load(first).version
    second = ensure_sample_model(small_log, SMALL_PARAMS, tmp_path, say=said.append, quiet=True)
    assert first == second and first.parent == tmp_path
    assert first.name.startswith("sample-") and len(first.name) == len("sample-") + 12
    assert indexer.load(second).version == version
    assert len(said) == 1 and "once" in said[0]
    (first / "scorer.npz").unlink()
    third = ensure_sample_model(small_log, SMALL_PARAMS, tmp_path, say=said.append, quiet=True)
    assert third == first and len(said) == 2
    assert indexer.load(third).version != version


def test_a_missing_sample_log_is_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="give --index"):
        ensure_sample_model(tmp_path / "missing.tsv.gz", cache=tmp_path)


def test_run_refuses_a_port_in_use(small_model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}"):
            run(ServerConfig(index=str(small_model_dir), port=port), say=lambda _: None)


def test_run_refuses_an_unreachable_session_store(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), sessions=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(ServeError, match="session store"):
        run(config, say=lambda _: None)


def test_run_refuses_several_workers_on_memory_stores(small_model_dir: Path) -> None:
    """A forget on one worker would leave the user's queries on the others (issue 26)."""
    config = ServerConfig(index=str(small_model_dir), workers=2, port=free_port())
    with pytest.raises(ServeError, match="--sessions redis://"):
        run(config, say=lambda _: None)


def test_run_refuses_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(indexer.ModelError):
        run(ServerConfig(index=str(tmp_path)), say=lambda _: None)


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:80/"), ("0.0.0.0", "http://127.0.0.1:80/"), ("::", "http://[::1]:80/"),
     ("example.com", "http://example.com:80/")],
)
def test_the_demo_url_is_one_a_browser_can_open(host: str, url: str) -> None:
    assert demo_url(host, 80) == url


@pytest.fixture
def qac_serve(small_model_dir: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """``qac serve`` in a subprocess with ``request.param`` workers (sharing a Redis); yields ``host:port``."""
    env = {"QAC_ADMIN_TOKEN": TOKEN, "QAC_WORKERS": str(request.param),
           "QAC_MODELS_ROOT": str(small_model_dir.parent.parent), "QAC_SECRET": SECRET}
    if request.param > 1:
        env["QAC_SESSIONS"] = request.getfixturevalue("redis_url")
    with qac_serve_process(small_model_dir, env) as (_, address):
        yield address


def hello_versions(server: str, connections: int) -> set[str]:
    versions = set()
    for _ in range(connections):
        with connect(f"ws://{server}/ws") as ws:
            versions.add(json.loads(ws.recv(5))["index"])
    return versions


@pytest.mark.parametrize("qac_serve", [2], indirect=True)
def test_every_worker_process_follows_a_reload(
    qac_serve: str, small_model_dir: Path, other_model_dir: Path
) -> None:
    new = indexer.load(other_model_dir).version
    assert hello_versions(qac_serve, 10) == {indexer.load(small_model_dir).version}
    response = httpx.post(f"http://{qac_serve}/admin/reload", json={"index": str(other_model_dir)},
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    # The other worker polls the announcement twice a second, then loads the model and ranks
    # its fresh answers ahead.
    deadline = time.monotonic() + 20
    while (versions := hello_versions(qac_serve, 20)) != {new} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert versions == {new}


@pytest.mark.parametrize("qac_serve", [2], indirect=True)
def test_a_forget_holds_on_every_worker(qac_serve: str) -> None:
    """Issue 26: with two workers, 3 of 8 new connections still got the forgotten query."""
    token = Signer(SECRET.encode()).sign("s", "erin", int(time.time()) + 3600)
    secret = "zqxj plugh"
    for i in range(4):  # on whichever workers they land: the history and a session of each
        with connect(f"ws://{qac_serve}/ws") as ws:
            ws.recv(5)
            ws.send(json.dumps({"type": "user", "token": token}))
            ws.recv(5)
            ws.send(json.dumps({"type": "submit", "query": f"{secret} {i}"}))
            assert json.loads(ws.recv(5))["type"] == "ack"
    answer = httpx.post(f"http://{qac_serve}/history/forget", headers={"Authorization": f"Bearer {token}"})
    assert answer.json() == {"history": 0}
    seen = []
    for _ in range(8):
        with connect(f"ws://{qac_serve}/ws") as ws:
            ws.recv(5)
            ws.send(json.dumps({"type": "user", "token": token}))
            assert json.loads(ws.recv(5))["history"] == 0
            ws.send(json.dumps({"type": "query", "id": 1, "prefix": "zqxj"}))
            seen.append([item["query"] for item in json.loads(ws.recv(5))["items"] if item["query"].startswith(secret)])
    assert seen == [[]] * 8


def _samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


@pytest.mark.parametrize("qac_serve", [2], indirect=True)
def test_metrics_add_up_every_worker(qac_serve: str) -> None:
    deadline = time.monotonic() + 30
    while len(_samples(httpx.get(f"http://{qac_serve}/metrics").text, "qac_model_info{")) < 2:
        assert time.monotonic() < deadline, "the second worker did not start"
        time.sleep(0.1)
    for i in range(12):  # connections land on either worker
        with connect(f"ws://{qac_serve}/ws") as ws:
            ws.recv(5)
            ws.send(json.dumps({"type": "query", "id": i, "prefix": "a"}))
            assert json.loads(ws.recv(5))["type"] == "suggestions"
    for _ in range(4):  # whichever worker answers the scrape, it counts all of them
        text = httpx.get(f"http://{qac_serve}/metrics").text
        assert _samples(text, 'qac_keystrokes_total{transport="ws"}') == ['qac_keystrokes_total{transport="ws"} 12.0']
        assert _samples(text, 'qac_completion_seconds_count{transport="ws"}')[0].endswith(" 12.0")
        assert _samples(text, "qac_open_connections") == ["qac_open_connections 0.0"]
        assert len(_samples(text, "qac_model_info{")) == 2  # one per worker, with its pid


def test_a_slow_starting_worker_is_given_the_configured_time() -> None:
    """uvicorn kills a worker that leaves its health check unanswered for 5 s, which a worker
    importing and loading on a busy machine did: the supervisor waits --worker-healthcheck."""
    from server.main import uvicorn_config

    assert uvicorn_config(ServerConfig(), "server.app:app_from_env").timeout_worker_healthcheck == 60
    assert uvicorn_config(ServerConfig(worker_healthcheck=7), "x:y").timeout_worker_healthcheck == 7


def _rollup(pid: int) -> dict[str, int]:
    """``/proc/PID/smaps_rollup`` in kB."""
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    return {key: int(value.split()[0]) for key, _, value in (line.partition(":") for line in lines)}


def test_the_workers_share_the_model_the_supervisor_loaded(small_model_dir: Path, redis_url: str) -> None:
    """Forked after the supervisor loaded the model, the workers start with its heap: pages
    written before the fork that both still map (shared dirty). Spawned, they had none."""
    env = {"QAC_WORKERS": "2", "QAC_SESSIONS": redis_url, "QAC_SECRET": SECRET}
    with qac_serve_process(small_model_dir, env) as (proc, address):
        deadline = time.monotonic() + 30
        while len(_samples(httpx.get(f"http://{address}/metrics").text, "qac_model_info{")) < 2:
            assert time.monotonic() < deadline, "the second worker did not start"
            time.sleep(0.1)
        workers = [int(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(workers) == 2  # no resource tracker: nothing was spawned
        for worker in workers:
            assert Path(f"/proc/{worker}/cmdline").read_bytes() == Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert _rollup(worker)["Shared_Dirty"] > 10_000  # kB: the libraries' and the model's objects


def test_a_renamed_variable_is_still_read_under_its_old_name() -> None:
    """QAC_MAX_HISTORY is QAC_SESSION_QUERIES now (the session's queries, not the user's
    history): the old name still works for a release, and the new one wins."""
    assert ServerConfig.from_env({"QAC_MAX_HISTORY": "7"}).session_queries == 7
    assert ServerConfig.from_env({"QAC_MAX_HISTORY": "7", "QAC_SESSION_QUERIES": "9"}).session_queries == 9
    assert ServerConfig.from_env({}).session_queries == 20
