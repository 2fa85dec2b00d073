"""``qac pairs``: evaluation pairs by the standard protocol, from a log split by date; and
``qac eval`` reading the pair times in every format a log may have."""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from indexer.evaluate import read_pairs
from indexer.train.logs import read_logs
from qac.main import main

DATA = Path(__file__).parent / "data"
# The rows of the first five users of the AOL dev log (2006-05-16 .. 23) and the first 90 lines
# of the pairs the protocol makes of the whole log: theirs, as the users come first.
DEV_LOG = DATA / "dev-5-users.tsv"
DEV_PAIRS = DATA / "dev-5-users.pairs.jsonl"


def test_pairs_of_a_log_reproduce_the_published_pairs_line_for_line(tmp_path, capsys):
    assert main(["pairs", str(DEV_LOG), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "pairs.jsonl").read_bytes() == DEV_PAIRS.read_bytes()
    assert capsys.readouterr().out.splitlines() == [
        f"read {DEV_LOG}  146 rows", f"wrote {tmp_path / 'out' / 'pairs.jsonl'}  90 pairs from 47 sessions"]
    assert os.listdir(tmp_path / "out") == ["pairs.jsonl"]


def test_pairs_of_a_gzipped_csv_with_epoch_times_are_the_same_pairs(tmp_path):
    lines = DEV_LOG.read_text().splitlines()[1:]
    cells = [line.split("\t") for line in lines]
    csv_text = "ts,query,user\n" + "".join(
        f"{int(datetime.fromisoformat(t).timestamp())},\"{q}\",{u}\n" for u, q, t, *_ in cells)
    log = tmp_path / "log.csv.gz"
    log.write_bytes(gzip.compress(csv_text.encode()))
    assert main(["pairs", str(log), "--out", str(tmp_path)]) == 0
    mine = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    published = [json.loads(line) for line in DEV_PAIRS.read_text().splitlines()]
    # Epoch times have a zone: the pairs say them in UTC, the same instants.
    assert [{**p, "time": datetime.fromisoformat(p["time"]).timestamp()} for p in mine] == \
        [{**p, "time": datetime.fromisoformat(p["time"]).timestamp()} for p in published]
    assert mine[0]["time"].endswith("Z")


def test_dates_split_the_log_and_each_evaluation_log_makes_its_own_pairs(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["pairs", str(DEV_LOG), "--out", str(out), "--dev-from", "2006-05-18",
                 "--test-from", "2006-05-20 12:00:00", "--seed", "3"]) == 0
    assert sorted(os.listdir(out)) == ["dev.pairs.jsonl", "dev.tsv.gz", "test.pairs.jsonl", "test.tsv.gz",
                                       "train.tsv.gz"]
    printed = capsys.readouterr().out
    rows, _ = read_logs([DEV_LOG])
    bounds = {"train": (0, datetime(2006, 5, 18).timestamp()),
              "dev": (datetime(2006, 5, 18).timestamp(), datetime(2006, 5, 20, 12).timestamp()),
              "test": (datetime(2006, 5, 20, 12).timestamp(), float("inf"))}
    for name, (start, end) in bounds.items():
        part, _ = read_logs([out / f"{name}.tsv.gz"])
        assert part == [r for r in rows if start <= r.time < end] and part
        assert f"{len(part):,} rows" in printed
        if name == "train":
            continue
        # The pairs of the part alone, as `qac pairs` makes them of that log.
        assert main(["pairs", str(out / f"{name}.tsv.gz"), "--out", str(tmp_path / name), "--seed", "3"]) == 0
        assert (out / f"{name}.pairs.jsonl").read_bytes() == (tmp_path / name / "pairs.jsonl").read_bytes()
        times = [p.time for p in read_pairs(out / f"{name}.pairs.jsonl")]
        assert all(start <= t < end for t in times)


@pytest.mark.parametrize("flags", [
    ["--dev-from", "2007-01-01"],  # an empty dev log
    ["--dev-from", "2006-05-20", "--test-from", "2006-05-18"],  # out of order
    ["--test-from", "2006-01-01"],  # an empty train log
])
def test_a_refused_split_writes_nothing(tmp_path, capsys, flags):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dev.pairs.jsonl").write_text("old\n")
    assert main(["pairs", str(DEV_LOG), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("qac pairs: error: ")
    assert os.listdir(out) == ["dev.pairs.jsonl"] and (out / "dev.pairs.jsonl").read_text() == "old\n"


def test_pairs_need_users_and_times(tmp_path, capsys):
    log = tmp_path / "queries.txt"
    log.write_text("Query\nweather\nweather channel\n")
    assert main(["pairs", str(log), "--out", str(tmp_path / "out")]) == 2
    assert "need a user and a time" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _epoch_pairs(tmp_path: Path, stamp) -> Path:
    lines = []
    for line in DEV_PAIRS.read_text().splitlines():
        pair = json.loads(line)
        pair["time"] = stamp(datetime.fromisoformat(pair["time"]).timestamp())
        lines.append(json.dumps(pair) + "\n")
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("stamp", [
    int, lambda t: int(t * 1000), lambda t: str(int(t)),
    lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
], ids=["epoch-s", "epoch-ms", "epoch-s-text", "iso-z"])
def test_pair_times_are_read_in_every_format_a_log_has(tmp_path, stamp):
    expected = [p.time for p in read_pairs(DEV_PAIRS)]
    assert [p.time for p in read_pairs(_epoch_pairs(tmp_path, stamp))] == expected
    assert None not in expected


def test_eval_with_a_personal_log_takes_pairs_with_epoch_times(tmp_path, small_model_dir, capsys):
    pairs = _epoch_pairs(tmp_path, int)
    assert main(["eval", "--index", str(small_model_dir), "--pairs", str(pairs), "--personal-log", str(DEV_LOG),
                 "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 90 and "model_no_history" in result
