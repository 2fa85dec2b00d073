"""``qac replay --as-users``: sessions replayed as their logged users, in tokens the server takes,
whose submits build the history later sessions of the same user see, and only theirs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from qac.main import main
from replay.replay import ReplayError, run_replay, site_signer
from replay.scripts import user_scripts_from_log, user_scripts_from_pairs
from server.app import create_app
from server.config import ServerConfig
from server.users import Signer, User
from tests.support import recv_json, running

SECRET = "a test secret of enough characters"
MINE = "zqxj plugh"  # in no log: only a user's own history can suggest it


@pytest.fixture
def server(small_model_dir: Path) -> Iterator[str]:
    config = ServerConfig(index=str(small_model_dir), secret=SECRET)
    with running(create_app(config), config) as address:
        yield address


def write_pairs(path: Path, pairs: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return path


def pair(user: str, prev: str = "") -> dict[str, str]:
    return {"prev_query": prev, "prefix": "zq", "next_query": MINE, "user": user, "time": "2006-05-20 10:00:00"}


async def history_of(address: str, user: str) -> int:
    """How many queries the server holds for the signed-in ``user``."""
    async with connect(f"ws://{address}/ws") as ws:
        await recv_json(ws)
        token = Signer(SECRET.encode()).sign("s", user, int(time.time()) + 60)
        await ws.send(json.dumps({"type": "user", "token": token}))
        answer = await recv_json(ws)
    assert answer["type"] == "user", answer
    history: int = answer["history"]
    return history


def replay_pairs(address: str, path: Path, secret: str | None) -> dict[str, object]:
    sessions = user_scripts_from_pairs(path)
    return run_replay(f"ws://{address}/ws", [s for _, s in sessions], users=[u for u, _ in sessions],
                      sign=site_signer(secret) if secret else None)


def test_a_users_submits_reach_their_later_sessions_only(server: str, tmp_path: Path) -> None:
    # u1 types MINE twice (the second time it is theirs); u2 types it once, after u1 did.
    path = write_pairs(tmp_path / "pairs.jsonl", [pair("u1"), pair("u1", "weather"), pair("u2")])
    report = replay_pairs(server, path, SECRET)
    assert report["errors"] == 0
    assert report["sampled"]["n"] == 3  # type: ignore[index]
    assert report["sampled_mrr"] == pytest.approx(1 / 3, abs=1e-4)  # rank 1 for u1's second session only
    assert (asyncio.run(history_of(server, "u1")), asyncio.run(history_of(server, "u2"))) == (2, 1)


def test_without_users_nothing_is_personal(server: str, tmp_path: Path) -> None:
    path = write_pairs(tmp_path / "pairs.jsonl", [pair("u1"), pair("u1")])
    report = replay_pairs(server, path, None)
    assert (report["errors"], report["sampled_mrr"]) == (0, 0.0)
    assert asyncio.run(history_of(server, "u1")) == 0


def test_tokens_under_another_secret_are_refused_and_build_nothing(server: str, tmp_path: Path) -> None:
    path = write_pairs(tmp_path / "pairs.jsonl", [pair("u1"), pair("u1")])
    report = replay_pairs(server, path, "not the server's secret at all")
    assert report["errors_by_kind"] == {"user bad_user": 2}
    assert report["sampled"] is None  # nothing typed as a user the server refused
    assert asyncio.run(history_of(server, "u1")) == 0


def test_the_tokens_are_those_the_embedding_site_signs() -> None:
    sign = site_signer(SECRET, clock=lambda: 1_000_000.0)
    token = sign("1490552")
    assert Signer(SECRET.encode()).verify(token, now=1_000_000.0) == User("1490552", "s")
    assert token.split(".")[3] == str(1_000_000 + 3600)
    with pytest.raises(ReplayError, match="at least 16"):
        site_signer("short")


def test_a_logs_sessions_carry_their_user(tmp_path: Path) -> None:
    log = tmp_path / "log.tsv"
    log.write_text("AnonID\tQuery\tQueryTime\n"
                   "7\tweather\t2006-03-01 10:00:00\n7\tnews\t2006-03-01 10:01:00\n"
                   "8\tmaps\t2006-03-01 10:00:00\n8\tmail\t2006-03-01 10:02:00\n", encoding="utf-8")
    assert [user for user, _ in user_scripts_from_log([log])] == ["7", "8"]


def test_as_users_without_qac_secret_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QAC_SECRET", raising=False)
    path = write_pairs(tmp_path / "pairs.jsonl", [pair("u1")])
    assert main(["replay", "--url", "ws://127.0.0.1:1/ws", "--pairs", str(path), "--as-users", "--quiet"]) == 2
    assert "set QAC_SECRET" in capsys.readouterr().err


def test_replay_cli_as_users(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QAC_SECRET", SECRET)
    path = write_pairs(tmp_path / "pairs.jsonl", [pair("u1"), pair("u1")])
    assert main(["replay", "--url", f"ws://{server}/ws", "--pairs", str(path), "--as-users", "--json",
                 "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["errors"], report["sampled_mrr"]) == (0, 0.5)
