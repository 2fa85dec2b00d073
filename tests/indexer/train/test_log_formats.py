"""Logs read by their header, in TSV, CSV or JSON lines, with every time format; and the logs
that are refused, with why."""

from __future__ import annotations

import csv
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from indexer.train import logs
from indexer.train.logs import LogError, LogRow, parse_columns, read_logs

# (user, raw query, local time) of a small log; the same rows in every layout below.
ROWS = [
    ("1490552", "Weather Channel", "2006-03-01 10:00:00"),
    ("1490552", "ny times", "2006-03-01 10:05:30"),
    ("1117506", "St. Louis Cardinals!", "2006-03-02 23:59:59"),
    ("1117506", "www.Google.com", "2006-03-03 00:00:01"),
]
EXPECTED = [LogRow(u, logs.normalize(q), datetime.fromisoformat(t).timestamp()) for u, q, t in ROWS]


def epoch(local: str) -> float:
    return datetime.fromisoformat(local).timestamp()


def iso_utc(local: str) -> str:
    return datetime.fromtimestamp(epoch(local), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write(path: Path, text: str | bytes, gzipped: bool = False) -> Path:
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_a_reordered_header_is_read_by_its_names(tmp_path, gzipped):
    text = "Query\tQueryTime\tItemRank\tAnonID\n" + "".join(f"{q}\t{t}\t1\t{u}\n" for u, q, t in ROWS)
    rows, _ = read_logs([write(tmp_path / "log.tsv", text, gzipped)])
    assert rows == EXPECTED


@pytest.mark.parametrize("names", [("query", "time", "user"), ("Q", "TimeStamp", "USER_ID"), ("q", "ts", "uid")])
def test_header_names_are_matched_case_insensitively(tmp_path, names):
    text = "\t".join(names) + "\n" + "".join(f"{q}\t{t}\t{u}\n" for u, q, t in ROWS)
    assert read_logs([write(tmp_path / "log.tsv", text)])[0] == EXPECTED


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_a_csv_with_iso_times_and_quoted_commas(tmp_path, gzipped):
    path = tmp_path / "log.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "user_id", "q"])
        w.writerow(["2006-03-01T09:00:00+00:00", "7", "pizza, cheap"])
        for u, q, t in ROWS:
            w.writerow([iso_utc(t), u, q])
    if gzipped:
        path = write(tmp_path / "log.csv.gz", path.read_text(), True)
    rows, stats = read_logs([path])
    assert rows[0] == LogRow("7", "pizza cheap", datetime(2006, 3, 1, 9, tzinfo=UTC).timestamp())
    assert rows[1:] == EXPECTED
    assert stats.zoned_times


def test_json_lines_with_epoch_milliseconds_and_any_key_case(tmp_path):
    lines = [{"User": int(u), "QUERY": q, "ts": int(epoch(t) * 1000), "clicks": [1]} for u, q, t in ROWS]
    text = "".join(json.dumps(line) + "\n" for line in lines) + "[1, 2]\n" + '{"user": "9"}\n'
    rows, stats = read_logs([write(tmp_path / "log.jsonl", text, True)])
    assert rows == EXPECTED
    assert stats.skipped == {logs.NOT_JSON: 1, logs.NO_QUERY: 1}


@pytest.mark.parametrize("stamp", [
    lambda t: str(int(epoch(t))),
    lambda t: str(int(epoch(t) * 1000)),
    lambda t: f"{epoch(t):.3f}",
    iso_utc,
    lambda t: t.replace(" ", "T"),
    lambda t: datetime.fromtimestamp(epoch(t), UTC).astimezone().isoformat(),
], ids=["epoch-s", "epoch-ms", "epoch-fraction", "iso-z", "iso-naive", "iso-offset"])
def test_every_time_format_reads_to_the_same_instant(tmp_path, stamp):
    text = "AnonID\tQuery\tQueryTime\n" + "".join(f"{u}\t{q}\t{stamp(t)}\n" for u, q, t in ROWS)
    assert read_logs([write(tmp_path / "log.tsv", text)])[0] == EXPECTED


def test_a_rank_is_not_an_epoch_time(tmp_path):
    # ItemRank (1..10) read as the time column: not the year 1970, a bad time.
    text = "".join(f"{u}\t{q}\t{t}\t3\n" for u, q, t in ROWS)
    with pytest.raises(LogError, match="no usable row.*4 bad time"):
        read_logs([write(tmp_path / "log.tsv", text)], columns=parse_columns("user=1,query=2,time=4"))


def test_columns_place_the_fields_of_a_headerless_file(tmp_path):
    text = "".join(f"x\t{t}\t{q}\t{u}\n" for u, q, t in ROWS)
    path = write(tmp_path / "log.tsv", text)
    assert read_logs([path], columns=parse_columns("query=3, user=4, time=2"))[0] == EXPECTED
    rows, _ = read_logs([path], columns=parse_columns("query=3"))
    assert [r.query for r in rows] == [r.query for r in EXPECTED] and {r.user for r in rows} == {None}


def test_a_first_row_whose_query_is_a_column_name_is_a_row(tmp_path):
    text = "".join(f"{u}\t{q}\t{t}\n" for u, q, t in [("1490552", "Query", "2006-03-01 09:00:00"), *ROWS])
    rows, _ = read_logs([write(tmp_path / "log.tsv", text)])
    assert rows[0] == LogRow("1490552", "query", epoch("2006-03-01 09:00:00")) and rows[1:] == EXPECTED


def test_columns_by_name_for_a_header_with_other_names(tmp_path):
    text = "who\tsearch_terms\twhen\n" + "".join(f"{u}\t{q}\t{t}\n" for u, q, t in ROWS)
    columns = parse_columns("user=who,query=search_terms,time=WHEN")
    assert read_logs([write(tmp_path / "log.tsv", text)], columns=columns)[0] == EXPECTED


@pytest.mark.parametrize("text", ["user=1", "query=0", "query=2,query=3", "query=2,user=2", "query", "page=3,query=1"])
def test_bad_columns_are_refused(text):
    with pytest.raises(ValueError):
        parse_columns(text)


def test_a_header_without_a_query_column_is_refused(tmp_path):
    text = "AnonID\tSearch\tQueryTime\n" + "".join(f"{u}\t{q}\t{t}\n" for u, q, t in ROWS)
    with pytest.raises(LogError, match="names no query column"):
        read_logs([write(tmp_path / "log.tsv", text)])


def test_a_query_column_of_ids_is_refused_with_counts_and_the_first_line(tmp_path):
    # The case: a header-less log in the order Query, AnonID, QueryTime, read by position.
    text = "".join(f"{q}\t{u}\t{t}\n" for u, q, t in ROWS)
    with pytest.raises(LogError, match=r"look like ids or times \(column 2\): 4 of 4 are numbers or times, "
                                       r"first line 1: 'Weather Channel\\t1490552"):
        read_logs([write(tmp_path / "log.tsv", text)])


@pytest.mark.parametrize("stamp", [str, iso_utc, lambda t: str(int(epoch(t)))], ids=["naive", "iso", "epoch"])
def test_a_query_column_of_times_is_refused(tmp_path, stamp):
    text = "user\tquery\ttime\n" + "".join(f"{u}\t{stamp(t)}\t{t}\n" for u, _, t in ROWS)
    with pytest.raises(LogError, match="look like ids or times"):
        read_logs([write(tmp_path / "log.tsv", text)])


def test_a_few_numeric_queries_are_kept(tmp_path):
    text = "AnonID\tQuery\tQueryTime\n" + "".join(f"{u}\t{q}\t{t}\n" for u, q, t in ROWS)
    text += "1\t90210\t2006-03-04 10:00:00\n"
    assert read_logs([write(tmp_path / "log.tsv", text)])[0][-1].query == "90210"


def test_times_that_mostly_fail_are_refused_with_counts_and_the_first_bad_line(tmp_path):
    body = [f"{u}\t{q}\t{t if i == 0 else 'yesterday'}\n" for i, (u, q, t) in enumerate(ROWS)]
    text = "AnonID\tQuery\tQueryTime\n" + "".join(body) + "u\tonly two\n"
    with pytest.raises(LogError) as refused:
        read_logs([write(tmp_path / "log.tsv", text)])
    message = str(refused.value)
    assert "mostly fail to parse (column 3 ('QueryTime')): 3 bad time, 1 too few columns, 1 rows usable" in message
    assert "first bad line 3: '1490552\\tny times\\tyesterday'" in message


def test_a_user_and_query_file_with_iso_times_is_not_a_bare_no_usable_row(tmp_path):
    text = "".join(f"{u}\t{q}\n" for u, q, _ in ROWS)
    with pytest.raises(LogError) as refused:
        read_logs([write(tmp_path / "log.tsv", text)])
    assert "4 too few columns" in str(refused.value) and "--columns" in str(refused.value)
    # With a header saying so, it is a log of users and queries without times.
    rows, _ = read_logs([write(tmp_path / "log.tsv", "AnonID\tQuery\n" + text)])
    assert [(r.user, r.query, r.time) for r in rows] == [(r.user, r.query, None) for r in EXPECTED]


def test_a_directory_is_refused_as_a_directory(tmp_path):
    with pytest.raises(LogError, match="is a directory"):
        read_logs([tmp_path])


def test_a_binary_file_is_refused_although_a_few_lines_look_like_queries(tmp_path):
    blob = bytes(range(256)) * 40
    data = b"".join(blob[i:i + 300] + b"\nsome readable string\n" for i in range(0, len(blob), 300))
    with pytest.raises(LogError, match="is a binary file, not a text log"):
        read_logs([write(tmp_path / "data.bin", data)])


@pytest.mark.parametrize("first", ["Query", "pizza, q"])
def test_a_plain_query_list_still_reads(tmp_path, first):
    rows, _ = read_logs([write(tmp_path / "q.txt", f"{first}\nweather\nny times, today\n", True)])
    queries = [(r.user, r.query, r.time) for r in rows]
    assert queries[-2:] == [(None, "weather", None), (None, "ny times today", None)]
    assert len(queries) == (2 if first == "Query" else 3)
