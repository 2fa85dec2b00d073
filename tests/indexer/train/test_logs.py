"""Reading hostile logs: every kind of junk is skipped or repaired and counted by reason, and
the good rows around it are kept exactly."""

from __future__ import annotations

import gzip
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.train import logs
from indexer.train.logs import LogError, read_logs
from qac.main import main

T = b"\t2006-03-01 10:00:00"
HEADER = b"AnonID\tQuery\tQueryTime\tItemRank\tClickURL"

# (line without its newline, the query it is kept as or None, why it is skipped or repaired)
HOSTILE: list[tuple[bytes, str | None, str | None]] = [
    (b"u1\tWeather New York" + T, "weather new york", None),
    (b"u1\tNY Times" + T + b"\t1\thttp://www.nytimes.com", "ny times", None),
    ("u2\tcafé crème".encode() + T, "café crème", None),
    ("u2\tcafé au lait".encode("cp1252") + T, "café au lait", logs.DECODED_CP1252),
    (b"u2\t\x93smart quotes\x94 \x80 5" + T, "smart quotes 5", logs.DECODED_CP1252),
    (b"u2\tfa\xe7ade\x8d" + T, "façade", logs.DECODED_CP1252),  # \x8d: a hole in cp1252
    (b"u3\tnul\x00query" + T, None, logs.BINARY),
    (b"\x89PNG\x1a\x00\x00\x00\rIHDR\xff\xd8\xff\xe0", None, logs.BINARY),
    (b"\xff\xfe\xfd\xfc\xfb", None, logs.TOO_FEW_COLUMNS),
    (b"u4\tonly two", None, logs.TOO_FEW_COLUMNS),
    (b"u4\tsix columns" + T + b"\t1\twww.example.com\textra", None, logs.TOO_MANY_COLUMNS),
    (b"u5\t" + b"a" * 200 + T, "a" * 200, None),
    (b"u5\t" + b"b" * 201 + T, None, logs.QUERY_TOO_LONG),
    (b"u5\t" + b"x" * 1_000_000 + T, None, logs.QUERY_TOO_LONG),
    (b"u6\t" + b"y" * logs.MAX_LINE_BYTES + T, None, logs.LINE_TOO_LONG),
    (b"u6\tyesterday\tyesterday", None, logs.BAD_TIME),
    (b"u6\t!!! ???" + T, None, logs.EMPTY_QUERY),
    (b"", None, logs.EMPTY_LINE),
    (b" \t ", None, logs.EMPTY_LINE),
    (b"u7\tcrlf line" + T + b"\r", "crlf line", None),
    (b"u7\tlast line, no newline" + T, "last line no newline", None),
]


def hostile_bytes(cases: list[tuple[bytes, str | None, str | None]]) -> bytes:
    return HEADER + b"\n" + b"\n".join(line for line, _, _ in cases)


def expected(cases: list[tuple[bytes, str | None, str | None]]) -> tuple[list[str], Counter[str]]:
    return [q for _, q, _ in cases if q is not None], Counter(why for _, _, why in cases if why)


def write(path: Path, data: bytes, gzipped: bool) -> Path:
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_hostile_tsv_keeps_exactly_the_good_rows_and_counts_the_rest(tmp_path, gzipped):
    path = write(tmp_path / "hostile.tsv", hostile_bytes(HOSTILE), gzipped)
    rows, stats = read_logs([path])
    queries, skipped = expected(HOSTILE)
    assert [r.query for r in rows] == queries
    assert stats.skipped == skipped
    assert stats.rows_read == len(queries)
    assert rows[0].user == "u1" and rows[0].time is not None


def test_hostile_query_list_keeps_exactly_the_good_queries(tmp_path):
    cases: list[tuple[bytes, str | None, str | None]] = [
        (b"Weather", "weather", None),
        (b"nul\x00query", None, logs.BINARY),
        ("caf\xe9".encode("latin-1"), "café", logs.DECODED_CP1252),
        (b"q" * 201, None, logs.QUERY_TOO_LONG),
        (b"z" * (logs.MAX_LINE_BYTES + 1), None, logs.LINE_TOO_LONG),
        (b"   ", None, logs.EMPTY_LINE),
        (b"tab\tinside", "tab inside", None),
    ]
    path = write(tmp_path / "queries.txt", b"Query\n" + b"\n".join(c[0] for c in cases) + b"\n", False)
    rows, stats = read_logs([path])
    queries, skipped = expected(cases)
    assert [r.query for r in rows] == queries and all(r.user is None and r.time is None for r in rows)
    assert stats.skipped == skipped


def test_junk_before_the_header_does_not_decide_the_format(tmp_path):
    path = write(tmp_path / "log.tsv", b"\x00\x01junk\n\n" + hostile_bytes(HOSTILE[:2]), False)
    rows, stats = read_logs([path])
    assert [r.query for r in rows] == ["weather new york", "ny times"]
    assert stats.skipped == {logs.BINARY: 1, logs.EMPTY_LINE: 1}


def test_a_huge_line_without_newline_is_skipped_in_bounded_memory(tmp_path):
    path = tmp_path / "log.tsv"
    with path.open("wb") as f:
        f.write(hostile_bytes(HOSTILE[:1]) + b"\nu9\t")
        for _ in range(32):
            f.write(b"z" * (1 << 20))
    tracemalloc.start()
    try:
        rows, stats = read_logs([path])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [r.query for r in rows] == ["weather new york"]
    assert stats.skipped == {logs.LINE_TOO_LONG: 1}
    assert peak < 4 * logs.MAX_LINE_BYTES


def _gzip_cut_after(tmp_path: Path, head: bytes, tail: bytes) -> Path:
    """A gzip file of ``head`` + ``tail``, cut off right after the compressed ``head``."""
    path = tmp_path / "log.tsv.gz"
    with path.open("wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb") as f:
            f.write(head)
            f.flush()
            cut = raw.tell()
            f.write(tail)
    with path.open("r+b") as raw:
        raw.truncate(cut)
    return path


def test_truncated_gzip_keeps_the_rows_before_the_cut_and_says_so(tmp_path):
    head = hostile_bytes(HOSTILE[:3]) + b"\n"
    path = _gzip_cut_after(tmp_path, head, b"u8\tlost query" + T + b"\n")
    rows, stats = read_logs([path])
    assert [r.query for r in rows] == ["weather new york", "ny times", "café crème"]
    assert stats.skipped == {logs.TRUNCATED_GZIP: 1}


def test_truncated_gzip_without_a_usable_row_is_an_error(tmp_path):
    path = _gzip_cut_after(tmp_path, HEADER + b"\n", b"u8\tlost query" + T + b"\n")
    with pytest.raises(LogError, match="no usable row.*truncated gzip"):
        read_logs([path])


def test_gzip_with_a_bad_checksum_keeps_its_rows_and_says_so(tmp_path):
    data = bytearray(gzip.compress(hostile_bytes(HOSTILE[:2]) + b"\n"))
    data[-8] ^= 0xFF  # the CRC-32 of the trailer
    path = tmp_path / "log.tsv.gz"
    path.write_bytes(bytes(data))
    rows, stats = read_logs([path])
    assert [r.query for r in rows] == ["weather new york", "ny times"]
    assert stats.skipped == {logs.DAMAGED_GZIP: 1}


GOOD = [(f"u{i % 3}\tgood query {i}\t2006-03-0{1 + i % 9} 1{i % 10}:00:00".encode(), f"good query {i}")
        for i in range(40)]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.binary(max_size=80), st.sampled_from(GOOD)), min_size=1, max_size=12),
    st.booleans(),
)
def test_random_bytes_between_good_rows_never_break_the_reader(tmp_path, pairs, gzipped):
    data = HEADER + b"\n" + b"".join(junk + b"\n" + good + b"\n" for junk, (good, _) in pairs)
    rows, stats = read_logs([write(tmp_path / "random.tsv", data, gzipped)])
    assert [r.query for r in rows] == [query for _, (_, query) in pairs]
    assert stats.rows_read == len(pairs)


def test_qac_build_on_a_hostile_log_exits_0_and_ends_with_the_skip_summary(tmp_path, capsys):
    good = b"\n".join(f"u{i % 5}\tquery {i % 23}\t2006-03-0{1 + i % 9} 10:00:00".encode() for i in range(300))
    path = write(tmp_path / "hostile.tsv", hostile_bytes(HOSTILE) + b"\n" + good + b"\n", False)
    out = tmp_path / "model"
    assert main(["build", "--log", str(path), "--out", str(out), "--workers", "1", "--max-leaf", "50",
                 "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    _, skipped = expected(HOSTILE)
    repaired = skipped.pop(logs.DECODED_CP1252)
    assert lines[-2].split(None, 1) == [
        "skipped", ", ".join(f"{n} {why}" for why, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    ]
    assert lines[-1].split(None, 1) == ["repaired", f"{repaired} {logs.DECODED_CP1252}"]
    assert f"({sum(skipped.values())} skipped)" in lines[1]
