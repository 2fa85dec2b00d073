"""``qac serve --seed-history LOG``: logged users' histories, times moved to the start, in
either store, seen by the signed-in user of that id, never over a history the store has."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from indexer.train.logs import parse_columns
from qac.args import CommandError
from qac.main import main as qac_main
from qac.serve import read_seed
from server import main
from server.app import create_app
from server.config import ConfigError, ServerConfig
from server.history import HistoryEntry, RedisHistoryStore
from server.users import SIGNED_IN, Signer
from tests.support import recv_json, running

pytestmark = pytest.mark.anyio

SECRET = "a test secret of enough characters"
NOW = 1_800_000_000.0
DAY = 86400.0
HEADER = "AnonID\tQuery\tQueryTime\tItemRank\tClickURL\n"


def write_log(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text(HEADER + "".join(f"{u}\t{q}\t{t}\t1\thttp://x\n" for u, q, t in rows), encoding="utf-8")
    return path


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "log.tsv", [
        ("u1", "zqxj plugh", "2006-05-01 10:00:00"),
        ("u1", "ZQXJ  Plugh!", "2006-05-02 10:00:00"),  # normalized as a submit is
        ("u1", "zqxj xyzzy", "2006-05-03 10:00:00"),
        ("u2", "zqxj other", "2006-05-10 10:00:00"),  # the latest row: the moment of start
    ])


def test_times_move_so_that_the_latest_row_of_all_the_logs_is_now(log: Path, tmp_path: Path) -> None:
    later = write_log(tmp_path / "later.tsv", [("u3", "zqxj later", "2006-05-11 10:00:00")])
    seed = read_seed([log], NOW, 1000, 90 * DAY)
    assert seed.histories == {
        "s:u1": [HistoryEntry("zqxj plugh", 2, NOW - 8 * DAY), HistoryEntry("zqxj xyzzy", 1, NOW - 7 * DAY)],
        "s:u2": [HistoryEntry("zqxj other", 1, NOW)],
    }
    assert seed.rows == 4
    both = read_seed([log, later], NOW, 1000, 90 * DAY)  # one shift for both: their times keep their order
    assert both.histories["s:u2"] == [HistoryEntry("zqxj other", 1, NOW - DAY)]
    assert both.histories["s:u3"] == [HistoryEntry("zqxj later", 1, NOW)]


def test_the_bound_and_the_expiry_apply_to_the_shifted_times(log: Path) -> None:
    seed = read_seed([log], NOW, 1, 7.5 * DAY)
    # u1's plugh was last used 8 days before the latest row: expired; xyzzy (7 days) stays
    assert seed.histories["s:u1"] == [HistoryEntry("zqxj xyzzy", 1, NOW - 7 * DAY)]
    assert read_seed([log], NOW, 1, 3 * DAY).histories == {"s:u2": [HistoryEntry("zqxj other", 1, NOW)]}


def test_a_log_without_a_header_seeds_by_its_columns(tmp_path: Path, small_model_dir: Path, capsys) -> None:
    """``qac serve --columns`` says where a headerless --seed-history log has its fields."""
    headerless = tmp_path / "headerless.tsv"
    rows = ("2006-05-01 10:00:00\tzqxj plugh\tu1", "2006-05-02 10:00:00\tzqxj xyzzy\tu1")
    headerless.write_text("\n".join(rows) + "\n", encoding="utf-8")
    seed = read_seed([headerless], NOW, 1000, 90 * DAY, parse_columns("time=1,query=2,user=3"))
    assert seed.histories == {"s:u1": [HistoryEntry("zqxj plugh", 1, NOW - DAY), HistoryEntry("zqxj xyzzy", 1, NOW)]}
    assert qac_main(["serve", "--index", str(small_model_dir), "--port", "0", "--columns", "query=1"]) == 2
    assert "--columns says where the fields of a --seed-history log are" in capsys.readouterr().err


def test_a_log_without_users_and_times_cannot_seed(tmp_path: Path) -> None:
    plain = tmp_path / "queries.txt"
    plain.write_text("Query\nweather\nnews\n", encoding="utf-8")
    with pytest.raises(CommandError, match="--seed-history: no row with a user and a time"):
        read_seed([plain], NOW, 1000, 90 * DAY)


def token(user: str) -> str:
    """What the embedding site gives a signed-in user."""
    return Signer(SECRET.encode()).sign(SIGNED_IN, user, int(time.time()) + 3600)


async def as_user(address: str, user: str, prefix: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The answer to a signed-in ``user`` frame, and the personal suggestions for ``prefix``."""
    async with connect(f"ws://{address}/ws") as ws:
        assert (await recv_json(ws))["type"] == "hello"
        await ws.send(json.dumps({"type": "user", "token": token(user)}))
        answer = await recv_json(ws)
        await ws.send(json.dumps({"type": "query", "id": 1, "prefix": prefix}))
        items = (await recv_json(ws))["items"]
    return answer, [item for item in items if item.get("personal")]


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    return "memory" if request.param == "memory" else str(request.getfixturevalue("redis_url"))


async def test_a_signed_in_user_sees_their_seeded_queries_from_the_start(
    small_model_dir: Path, log: Path, store_url: str
) -> None:
    config = ServerConfig(index=str(small_model_dir), secret=SECRET, sessions=store_url, seed_history=(str(log),))
    seed = read_seed([log], time.time(), config.history_max, config.history_days * DAY)
    with running(create_app(config, seed=seed), config) as address:
        answer, mine = await as_user(address, "u1", "zqxj")
        assert answer["history"] == 2
        assert sorted(item["query"] for item in mine) == ["zqxj plugh", "zqxj xyzzy"]
        answer, mine = await as_user(address, "u2", "zqxj")  # another user: only theirs
        assert (answer["history"], [item["query"] for item in mine]) == (1, ["zqxj other"])
        answer, mine = await as_user(address, "u9", "zqxj")  # not in the log
        assert (answer["history"], mine) == (0, [])


async def test_a_history_redis_already_has_is_kept(small_model_dir: Path, log: Path, redis_url: str) -> None:
    store = RedisHistoryStore(redis_url)
    await store.record("s:u1", "zqxj mine")
    await store.close()
    config = ServerConfig(index=str(small_model_dir), secret=SECRET, sessions=redis_url, seed_history=(str(log),))
    seed = read_seed([log], time.time(), config.history_max, config.history_days * DAY)
    with running(create_app(config, seed=seed), config) as address:
        answer, mine = await as_user(address, "u1", "zqxj")
        assert (answer["history"], [item["query"] for item in mine]) == (1, ["zqxj mine"])
        assert (await as_user(address, "u2", "zqxj"))[0]["history"] == 1


def test_several_workers_are_seeded_once_before_they_start(
    small_model_dir: Path, log: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[dict[str, str]] = []

    class Workers:  # instead of uvicorn's Multiprocess: what the workers would be given
        def __init__(self, config: Any, sockets: Any) -> None:
            pass

        def run(self) -> None:
            started.append(dict(os.environ))

    monkeypatch.setattr(main, "Multiprocess", Workers)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    config = ServerConfig(index=str(small_model_dir), secret=SECRET, sessions=redis_url, workers=2, port=0,
                          seed_history=(str(log),))
    main.run(config, say=lambda line: None, seed=read_seed([log], time.time(), 1000, 90 * DAY))

    async def entries() -> list[HistoryEntry]:
        store = RedisHistoryStore(redis_url)
        try:
            return await store.entries("s:u1")
        finally:
            await store.close()

    assert [e.query for e in asyncio.run(entries())] == ["zqxj xyzzy", "zqxj plugh"]
    assert len(started) == 1 and not started[0].get("QAC_SEED_HISTORY")  # the workers seed nothing


def test_an_unusable_seed_log_stops_qac_serve_with_one_line(
    small_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.tsv"
    assert qac_main(["serve", "--index", str(small_model_dir), "--port", "0", "--seed-history", str(missing)]) == 2
    assert "--seed-history: log file not found" in capsys.readouterr().err


def test_an_app_told_to_seed_without_the_histories_refuses_to_start(small_model_dir: Path, log: Path) -> None:
    with pytest.raises(ConfigError, match="seed_history"):
        create_app(ServerConfig(index=str(small_model_dir), seed_history=(str(log),)))
