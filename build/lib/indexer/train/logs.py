"""Reading query logs: AOL-format TSV (user, query, time, ...) or one query per line.

Logs are read as they come: broken lines, binary junk, absurdly long lines, other encodings
and truncated gzip files are skipped or repaired line by line and counted by reason in
:class:`LogStats`, never fatal unless a file yields no usable row at all.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..errors import QacError
from ..normalize import MAX_QUERY_CHARS, normalize
from ..storage import sha256_file

# A longer line is skipped without being held whole (real AOL rows are under 1 kB).
MAX_LINE_BYTES = 1 << 20
_CHUNK = 1 << 16  # bytes read at once
# AnonID, Query, QueryTime, ItemRank, ClickURL; rows without a click stop after QueryTime.
MAX_COLUMNS = 5

# Why a row was skipped, as counted in LogStats.skipped.
EMPTY_LINE = "empty line"
BINARY = "binary or control characters"
LINE_TOO_LONG = f"line over {MAX_LINE_BYTES:,} bytes"
TOO_FEW_COLUMNS = "too few columns"
TOO_MANY_COLUMNS = "too many columns"
QUERY_TOO_LONG = f"query over {MAX_QUERY_CHARS} characters"
BAD_TIME = "bad time"
EMPTY_QUERY = "empty after normalization"
TRUNCATED_GZIP = "truncated gzip file (rest unread)"
DAMAGED_GZIP = "damaged gzip file (rest unread)"
# Rows kept after a repair, counted in LogStats.skipped too (a build summary has one table).
DECODED_CP1252 = "not utf-8, decoded as cp1252 (kept)"
REPAIRS = frozenset({DECODED_CP1252})

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# C0 controls but tab, and DEL: never typed into a search box, and all over binary junk.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class LogError(QacError):
    """A log file that cannot be used at all (missing, unreadable, no usable row)."""


@dataclass(frozen=True, slots=True)
class LogRow:
    """One logged query. ``user`` and ``time`` are ``None`` in a plain query list."""

    user: str | None
    query: str
    time: float | None


@dataclass
class LogStats:
    """What reading the logs found: rows used and rows skipped, by reason.

    ``skipped`` also counts, under the reasons in :data:`REPAIRS`, rows that were kept after
    a repair; a truncated or damaged gzip file counts once, for the unknown rest of the file.
    """

    rows_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    checksums: dict[str, str] = field(default_factory=dict)


def _open_binary(path: Path) -> io.BufferedIOBase:
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.GzipFile(path, "rb") if gzipped else path.open("rb")



def _parse_time(text: str) -> float | None:
    # fromisoformat reads exactly this layout, twenty times faster than strptime.
    if len(text) == 19 and text[10] == " " and text[4] == text[7] == "-" and text[13] == text[16] == ":":
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    try:
        return datetime.strptime(text.strip(), _TIME_FORMAT).timestamp()
    except ValueError:
        return None


def _lines(stream: io.BufferedIOBase, skipped: Counter[str]) -> Iterator[bytes]:
    """The lines of ``stream``, without their b"\\n". A line over :data:`MAX_LINE_BYTES` is
    counted and dropped as it streams by, never held whole; a line is handed on as soon as it
    is read, so a stream that breaks off (a truncated gzip) loses only the line it cuts."""
    limit = MAX_LINE_BYTES
    read = stream.read1  # what one read of the file or gzip stream gives, no waiting for more
    size = min(_CHUNK, limit)  # so a line inside one chunk is never over the limit
    rest = b""  # the start of a line, read so far
    dropping = False  # inside a line over the limit
    while chunk := read(size):
        lines = chunk.split(b"\n")
        if len(lines) > 1:
            if dropping:
                dropping = False
                skipped[LINE_TOO_LONG] += 1
            elif len(rest) + len(lines[0]) > limit:
                skipped[LINE_TOO_LONG] += 1
            else:
                yield rest + lines[0]
            rest = b""
            yield from lines[1:-1]
        if not dropping:
            rest += lines[-1]
            if len(rest) > limit:
                dropping, rest = True, b""
    if dropping:
        skipped[LINE_TOO_LONG] += 1
    elif rest:
        yield rest


def _decode(raw: bytes) -> str:
    """A line that is not UTF-8, as cp1252 (Windows' Latin-1), or Latin-1 where cp1252 has holes."""
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _rows_of(path: Path, stats: LogStats) -> Iterator[LogRow]:
    skipped = stats.skipped
    with _open_binary(path) as stream:
        tsv: bool | None = None  # decided by the first line that is text
        max_columns = MAX_COLUMNS
        max_chars, control, norm = MAX_QUERY_CHARS, _CONTROL.search, normalize  # locals: 1M+ lines
        for raw in _lines(stream, skipped):
            raw = raw.rstrip(b"\r")
            if not raw or raw.isspace():
                skipped[EMPTY_LINE] += 1
                continue
            try:
                line = raw.decode("utf-8")
                repaired = False
            except UnicodeDecodeError:
                line = _decode(raw)
                repaired = True
            if not line.isprintable() and control(raw):  # isprintable: the fast common case
                skipped[BINARY] += 1
                continue
            if tsv is None:
                tsv = "\t" in line
                head = line.split("\t")
                if tsv and head[:2] == ["AnonID", "Query"]:
                    max_columns = max(MAX_COLUMNS, len(head))
                    continue
                if not tsv and line == "Query":
                    continue
            if tsv:
                cols = line.split("\t")
                if len(cols) < 3:
                    skipped[TOO_FEW_COLUMNS] += 1
                    continue
                if len(cols) > max_columns:
                    skipped[TOO_MANY_COLUMNS] += 1
                    continue
                user: str | None = cols[0]
                query = cols[1]
                when = _parse_time(cols[2])
                if when is None:
                    skipped[BAD_TIME] += 1
                    continue
            else:
                user = when = None
                query = line
            if len(query) > max_chars and len(query.strip()) > max_chars:
                skipped[QUERY_TOO_LONG] += 1
                continue
            query = norm(query)
            if not query:
                skipped[EMPTY_QUERY] += 1
                continue
            if repaired:
                skipped[DECODED_CP1252] += 1
            stats.rows_read += 1
            yield LogRow(user, query, when)


def read_logs(
    paths: list[Path], stats: LogStats | None = None, progress: Callable[[int], None] | None = None
) -> tuple[list[LogRow], LogStats]:
    """Read every row of the given logs, skipping (and counting) malformed ones.

    A file is AOL-format when its first line of text has a tab, a plain query list otherwise.
    A truncated or damaged gzip file keeps the rows read before the damage. Raises
    :class:`LogError` for a missing or unreadable file, or one without a usable row.
    """
    stats = stats or LogStats()
    rows: list[LogRow] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise LogError(f"log file not found: {path}")
        before = len(rows)
        damage: Exception | None = None
        reason = ""
        try:
            stats.checksums[str(path)] = sha256_file(path)
            for row in _rows_of(path, stats):
                rows.append(row)
                if progress is not None and len(rows) % 10_000 == 0:
                    progress(10_000)
        except EOFError as exc:
            damage, reason = exc, TRUNCATED_GZIP
        except (zlib.error, gzip.BadGzipFile) as exc:
            damage, reason = exc, DAMAGED_GZIP
        except OSError as exc:
            raise LogError(f"cannot read {path}: {exc}") from exc
        if len(rows) == before:
            why = f" ({reason}: {damage})" if damage else ""
            raise LogError(f"no usable row in {path}{why}")
        if damage:
            stats.skipped[reason] += 1
    return rows, stats
