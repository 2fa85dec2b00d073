"""Every refusal says why in one line and exits 2, with nothing written; a bad flag shows the
usage of the subcommand it was given to."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from qac.main import main

DEV_LOG = Path(__file__).parent / "data" / "dev-5-users.tsv"
NOBODY = "ws://127.0.0.1:1/ws"  # a closed port: a replay that connects fails there
FAST = ["--workers", "1", "--max-leaf", "50", "--default-scorer", "--quiet"]


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and captured.out == ""
    return err


def test_a_directory_as_log_is_called_a_directory(tmp_path, capsys):
    err = refused(capsys, ["build", "--log", str(tmp_path), "--out", str(tmp_path / "model"), *FAST])
    assert err == f"qac build: error: {tmp_path} is a directory, not a log file"
    assert not (tmp_path / "model").exists()
    err = refused(capsys, ["pairs", str(tmp_path), "--out", str(tmp_path / "pairs")])
    assert err == f"qac pairs: error: {tmp_path} is a directory, not a log file"
    assert not (tmp_path / "pairs").exists()


def test_a_directory_as_pairs_is_called_a_directory(tmp_path, small_model_dir, capsys):
    err = refused(capsys, ["eval", "--index", str(small_model_dir), "--pairs", str(tmp_path)])
    assert err == f"qac eval: error: {tmp_path} is a directory, not a pairs file"


@pytest.mark.parametrize("min_users", ["3", "1"])
def test_a_binary_file_is_refused_as_binary_without_advice_to_lower_min_users(tmp_path, capsys, min_users):
    blob = bytes(range(256)) * 64
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"".join(blob[i:i + 500] + b"\nreadable text here\n" for i in range(0, len(blob), 500)))
    err = refused(capsys, ["build", "--log", str(path), "--out", str(tmp_path / "model"), "--min-users", min_users,
                           *FAST])
    assert "is a binary file, not a text log" in err and "--min-users" not in err
    assert not (tmp_path / "model").exists()


def test_a_query_column_of_ids_is_refused_and_the_old_model_stays(tmp_path, capsys):
    reordered = tmp_path / "log.tsv"
    cells = [line.split("\t") for line in DEV_LOG.read_text().splitlines()[1:]]
    reordered.write_text("".join(f"{q}\t{u}\t{t}\n" for u, q, t, *_ in cells))
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep").write_text("old")
    err = refused(capsys, ["build", "--log", str(reordered), "--out", str(out), "--min-users", "1", *FAST])
    assert "look like ids or times" in err and "146 of 146 are numbers or times" in err and "--columns" in err
    assert os.listdir(out) == ["keep"]
    # Told where the columns are, the same file builds.
    assert main(["build", "--log", str(reordered), "--columns", "query=1,user=2,time=3", "--out", str(out),
                 "--min-users", "1", *FAST]) == 0
    assert "rows read       146 (0 skipped)" in capsys.readouterr().out


@pytest.mark.parametrize("k", ["0", "-1"])
def test_complete_refuses_k_below_one(tmp_path, capsys, k):
    with pytest.raises(SystemExit) as exited:
        main(["complete", "--index", str(tmp_path), "-k", k, "ny t"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: qac complete") and f"argument -k: must be > 0, got {k}" in err


@pytest.mark.parametrize("argv", [
    ["serve", "--bogus"], ["build", "--out", "x", "--bogus"], ["pairs", "x", "--out", "y", "z"],
    ["replay", "--url", "ws://h/ws", "--log", "x", "--bogus"],
])
def test_a_bad_flag_shows_the_usage_of_its_subcommand(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: qac {argv[0]} ")
    assert err.strip().splitlines()[-1].startswith(f"qac {argv[0]}: error: unrecognized arguments: ")


@pytest.mark.parametrize("command", ["build", "replay"])
@pytest.mark.parametrize("columns", ["user=2", "query=0", "query=1,user=1"])
def test_bad_columns_are_refused_by_the_subcommand(tmp_path, capsys, columns, command):
    argv = {"build": ["build", "--out", str(tmp_path / "m")], "replay": ["replay", "--url", NOBODY]}[command]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--log", str(DEV_LOG), "--columns", columns])
    assert exited.value.code == 2
    assert f"qac {command}: error: argument --columns" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def _id_log(tmp_path: Path) -> Path:
    path = tmp_path / "ids.tsv"
    path.write_text("".join(f"{q}\t{u}\t{t}\n" for u, q, t, *_ in
                            (line.split("\t") for line in DEV_LOG.read_text().splitlines()[1:])))
    return path


@pytest.mark.parametrize("case", ["ids as queries", "binary", "directory", "names without a header",
                                  "columns with pairs"])
def test_replay_refuses_a_log_it_cannot_read_before_connecting(tmp_path, capsys, case):
    """Refused as `qac build` refuses the same log, in one line, without a connection: nobody
    listens at NOBODY, so a replay that got as far as connecting would say so instead."""
    binary = tmp_path / "photo.jpg"
    binary.write_bytes(bytes(range(256)) * 64)
    flags, said = {
        "ids as queries": (["--log", str(_id_log(tmp_path))], "look like ids or times"),
        "binary": (["--log", str(binary)], "is a binary file, not a text log"),
        "directory": (["--log", str(tmp_path)], f"{tmp_path} is a directory, not a log file"),
        "names without a header": (["--log", str(_id_log(tmp_path)), "--columns", "query=q"],
                                   "has no header line to find q in"),
        "columns with pairs": (["--pairs", str(DEV_LOG.with_suffix(".pairs.jsonl")), "--columns", "query=2"],
                               "--columns says where the fields of a --log are"),
    }[case]
    err = refused(capsys, ["replay", "--url", NOBODY, *flags, "--quiet"])
    assert err.startswith("qac replay: error: ") and said in err


def test_replay_as_users_of_pairs_without_users_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QAC_SECRET", "a test secret of enough characters")
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prev_query": "weather", "prefix": "ny", "next_query": "ny times"}\n')
    err = refused(capsys, ["replay", "--url", NOBODY, "--pairs", str(path), "--as-users", "--quiet"])
    assert err.startswith(f"qac replay: error: --as-users: no session of {path} has a user to replay it as")


@pytest.mark.parametrize("text", [
    "Query\tQueryTime\nweather\t2006-03-01 10:00:00\nny times\t2006-03-01 10:01:00\n",  # no users
    "AnonID\tQuery\n7\tweather\n7\tny times\n",  # no times: each query a session of its own
], ids=["no users", "no times"])
def test_replaying_a_log_without_sessions_is_refused_before_connecting(tmp_path, capsys, text):
    path = tmp_path / "log.tsv"
    path.write_text(text)
    err = refused(capsys, ["replay", "--url", NOBODY, "--log", str(path), "--quiet"])
    assert err.startswith(f"qac replay: error: nothing to replay: {path} has no session of two or more queries")


def test_bench_without_matplotlib_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    err = refused(capsys, ["bench", "--log", str(DEV_LOG), "--pairs", str(DEV_LOG.with_suffix(".pairs.jsonl")),
                           "--out", str(tmp_path / "bench"), "--quiet"])
    assert err == ("qac bench: error: qac bench draws its charts with matplotlib, which is not installed: "
                   "pip install -e '.[bench]'")
    assert not (tmp_path / "bench").exists()


def test_replay_reads_a_headerless_log_by_columns(tmp_path):
    """The log refused above for its id column, told where its fields are, makes the sessions of DEV_LOG."""
    from replay.scripts import user_scripts_from_log

    expected = user_scripts_from_log([DEV_LOG])
    assert len(expected) == 25
    assert user_scripts_from_log([_id_log(tmp_path)], columns={"query": 0, "user": 1, "time": 2}) == expected
