"""``--sensitive`` files: applied at serve time over every source, re-read when they change."""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from indexer.model import Model
from server.app import create_app
from server.config import ServerConfig
from tests.server.test_personal import SECRET, eventually_absent, eventually_absent_not, hello, new_user, suggest, write
from tests.support import running

pytestmark = pytest.mark.anyio

MINE = "zqxj plugh"  # in no log: only a user's own history can suggest it


async def test_a_sensitive_term_is_completed_into_only_once_the_file_says_so(
    small_model_dir: Path, small_model: Model, tmp_path: Path
) -> None:
    sensitive = tmp_path / "sensitive.txt"
    sensitive.write_text("", encoding="utf-8")
    config = ServerConfig(index=str(small_model_dir), secret=SECRET, sensitive=(str(sensitive),),
                          blocklist_interval=0.05)
    logged = next(c.query for c in small_model.complete("weat") if " " in c.query)  # e.g. "weather channel"
    word = logged.split()[1]
    with running(create_app(config), config) as server:
        token = await new_user(server, MINE)
        async with connect(f"ws://{server}/ws") as ws:
            await hello(ws, token)
            assert logged in [item["query"] for item in await suggest(ws, 1, "weat")]
            assert MINE in [item["query"] for item in await suggest(ws, 2, "zqxj")]

            write(sensitive, f"# for this deployment\n{word}\nplugh\n")
            qid = await eventually_absent(ws, "weat", logged, 3)  # the shared fresh answers too
            qid = await eventually_absent(ws, "zqxj", MINE, qid)  # the user's own history too
            # Typed whole, the terms are shown.
            assert logged in [item["query"] for item in await suggest(ws, qid, f"{logged.split()[0]} {word}")]
            assert MINE in [item["query"] for item in await suggest(ws, qid + 1, "zqxj plugh")]
            async with httpx.AsyncClient(base_url=f"http://{server}") as http:
                metrics = (await http.get("/metrics")).text
                assert "qac_sensitive_terms 2.0" in metrics and "qac_blocklist_terms 0.0" in metrics

            write(sensitive, "")
            await eventually_absent_not(ws, "zqxj", MINE, qid + 2)


def test_a_bad_sensitive_file_stops_the_server_at_start(small_model_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from qac.main import main

    missing = tmp_path / "missing.txt"
    assert main(["serve", "--index", str(small_model_dir), "--sensitive", str(missing), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and len(err.strip().splitlines()) == 1


def test_the_sensitive_flag_and_variable() -> None:
    from qac.serve import add_parser, config_from_args

    parser = argparse.ArgumentParser(prog="qac")
    add_parser(parser.add_subparsers(dest="command"))
    config = config_from_args(parser.parse_args(["serve", "--sensitive", "a.txt", "--sensitive", "b.txt"]), {})
    assert config.sensitive == ("a.txt", "b.txt")
    assert ServerConfig.from_env(config.to_env()) == config
    assert config_from_args(parser.parse_args(["serve"]), {"QAC_SENSITIVE": "a.txt, b.txt"}).sensitive == (
        "a.txt", "b.txt")
