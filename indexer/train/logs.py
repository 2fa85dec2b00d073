"""Reading query logs: TSV, CSV or JSON lines (plain or gzipped) with a user, a query and a
time per row, or one query per line.

A file's columns are found by its header line (names matched case-insensitively, see
:data:`COLUMN_NAMES`), by ``columns`` for a file without one, or else in AOL order (user, query,
time). Logs are read as they come: broken lines, binary junk, absurdly long lines, other
encodings and truncated gzip files are skipped or repaired line by line and counted by reason
in :class:`LogStats`. A file is refused (:class:`LogError`, with the counts and the first bad
line) when it yields no usable row, is binary, has times that mostly fail to parse, or has a
query column of numbers (ids or times read as queries).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import QacError
from ..normalize import MAX_QUERY_CHARS, normalize
from ..storage import sha256_file
from ..times import is_local_time, parse_time

# A longer line is skipped without being held whole (real AOL rows are under 1 kB).
MAX_LINE_BYTES = 1 << 20
_CHUNK = 1 << 16  # bytes read at once
# AnonID, Query, QueryTime, ItemRank, ClickURL; rows without a click stop after QueryTime.
MAX_COLUMNS = 5

USER, QUERY, TIME = "user", "query", "time"
# The header names of each field, lowercase; a header is matched case-insensitively.
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    USER: ("anonid", "user", "user_id", "uid"),
    QUERY: ("query", "q"),
    TIME: ("querytime", "time", "timestamp", "ts"),
}
# Where a file without a header has its fields (0-based): the AOL log's order.
AOL_COLUMNS: dict[str, int | str] = {USER: 0, QUERY: 1, TIME: 2}
# More bytes in binary lines than this many times those in lines of text: a binary file, not a
# log with junk lines (whose junk is each at most a line's worth next to a good row).
BINARY_RATIO = 4

# Why a row was skipped, as counted in LogStats.skipped.
EMPTY_LINE = "empty line"
BINARY = "binary or control characters"
LINE_TOO_LONG = f"line over {MAX_LINE_BYTES:,} bytes"
TOO_FEW_COLUMNS = "too few columns"
TOO_MANY_COLUMNS = "too many columns"
NOT_JSON = "not a JSON object"
NO_QUERY = "no query field"
QUERY_TOO_LONG = f"query over {MAX_QUERY_CHARS} characters"
BAD_TIME = "bad time"
EMPTY_QUERY = "empty after normalization"
TRUNCATED_GZIP = "truncated gzip file (rest unread)"
DAMAGED_GZIP = "damaged gzip file (rest unread)"
# Rows kept after a repair, counted in LogStats.skipped too (a build summary has one table).
DECODED_CP1252 = "not utf-8, decoded as cp1252 (kept)"
REPAIRS = frozenset({DECODED_CP1252})
# Rows kept whose query is a number or a time: an id or a time read as a query when most are.
_NUMERIC = "query of a number or a time"

# C0 controls but tab, and DEL: never typed into a search box, and all over binary junk.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A normalized query that is a number, or a time: 2006-03-01 10:00:00 and 2006-03-01T10:00:00Z
# normalize to "20060301 100000" and "20060301t100000z".
_NUMBER_OR_TIME = re.compile(r"[\d ]+|\d{8}t\d{4,6}[\dz ]*")
_FORMATS_HELP = "times as YYYY-MM-DD hh:mm:ss, ISO 8601 or epoch seconds or milliseconds"
_COLUMNS_HELP = "name the columns in a header line (AnonID, Query, QueryTime) or give --columns user=N,query=N,time=N"


class LogError(QacError):
    """A log file that cannot be used (missing, unreadable, binary, no usable row, wrong columns)."""


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
    ``zoned_times`` says a file's times were epoch numbers or had a zone (else they are local).
    """

    rows_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    checksums: dict[str, str] = field(default_factory=dict)
    zoned_times: bool = False


def parse_columns(text: str) -> dict[str, int | str]:
    """``user=N,query=N,time=N`` (positions from 1, as ``cut -f`` counts; or header or JSON names)
    as {field: 0-based position or lowercase name}. ``query`` is required; raises ValueError."""
    columns: dict[str, int | str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = (s.strip() for s in part.partition("="))
        key = key.lower()
        if not sep or not value or key not in COLUMN_NAMES:
            raise ValueError(f"expected user=N,query=N,time=N, got {part.strip()!r}")
        if key in columns:
            raise ValueError(f"{key} given twice")
        if value.isdigit():
            if int(value) < 1:
                raise ValueError(f"{key}={value}: columns are counted from 1")
            columns[key] = int(value) - 1
        else:
            columns[key] = value.lower()
    if QUERY not in columns:
        raise ValueError("the query column is required (query=N)")
    places = list(columns.values())
    if len(set(places)) < len(places):
        raise ValueError(f"two fields in one column: {text}")
    return columns


def _open_binary(path: Path) -> io.BufferedIOBase:
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.GzipFile(path, "rb") if gzipped else path.open("rb")


def _lines(stream: io.BufferedIOBase) -> Iterator[bytes | None]:
    """The lines of ``stream``, without their b"\\n"; None for a line over :data:`MAX_LINE_BYTES`,
    dropped as it streams by, never held whole. A line is handed on as soon as it is read, so a
    stream that breaks off (a truncated gzip) loses only the line it cuts."""
    limit = MAX_LINE_BYTES
    read = stream.read1  # what one read of the file or gzip stream gives, no waiting for more
    size = min(_CHUNK, limit)  # so a line inside one chunk is never over the limit
    rest = b""  # the start of a line, read so far
    dropping = False  # inside a line over the limit
    while chunk := read(size):
        lines = chunk.split(b"\n")
        if len(lines) > 1:
            if dropping or len(rest) + len(lines[0]) > limit:
                dropping = False
                yield None
            else:
                yield rest + lines[0]
            rest = b""
            yield from lines[1:-1]
        if not dropping:
            rest += lines[-1]
            if len(rest) > limit:
                dropping, rest = True, b""
    if dropping:
        yield None
    elif rest:
        yield rest


def _decode(raw: bytes) -> str:
    """A line that is not UTF-8, as cp1252 (Windows' Latin-1), or Latin-1 where cp1252 has holes."""
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@dataclass
class _Layout:
    """How a file's lines are read, decided by its first line of text."""

    kind: str  # "tsv", "csv", "json" or "list"
    places: dict[str, int | str]  # field -> 0-based position (tsv, csv) or lowercase key (json)
    header: tuple[str, ...] | None = None  # the header line's cells, if it had one
    max_columns: int = MAX_COLUMNS

    def describe(self, key: str) -> str:
        """Where field ``key`` is read from, for a message: ``column 2 ('Query')``."""
        place = self.places[key]
        if isinstance(place, str):
            return f"field {place!r}"
        name = f" ({self.header[place]!r})" if self.header and place < len(self.header) else ""
        return f"column {place + 1}{name}"


def _layout(path: Path, line: str, columns: Mapping[str, int | str] | None) -> _Layout:
    """The layout of ``path`` from its first line of text; raises LogError if the header or
    ``columns`` name no query column the file has."""
    stripped = line.strip()
    if stripped.startswith("{"):
        if columns and any(isinstance(p, int) for p in columns.values()):
            raise LogError(f"{path} is JSON lines: --columns names its keys (query=KEY), not positions")
        return _Layout("json", dict(columns) if columns else {})
    names = path.name.lower()
    if "\t" in line:
        kind, cells = "tsv", line.split("\t")
    else:
        cells = next(csv.reader([line]), [])
        known = {n for names_ in COLUMN_NAMES.values() for n in names_}
        # Two known names: a query list whose first query is "pizza, q" stays a query list.
        looks_csv = sum(c.strip().lower() in known for c in cells) >= 2
        if columns or looks_csv or names.endswith((".csv", ".csv.gz")):
            kind = "csv"
        elif stripped.lower() in COLUMN_NAMES[QUERY]:
            return _Layout("list", {}, header=(stripped,))
        else:
            return _Layout("list", {})
    lowered = [c.strip().lower() for c in cells]
    wanted = {p for p in (columns or {}).values() if isinstance(p, str)}
    # A header names a column and holds no time: a first row whose query is "q" is a row.
    is_header = any(c in wanted or any(c in n for n in COLUMN_NAMES.values()) for c in lowered) and \
        not any(parse_time(c) is not None for c in cells)
    if not is_header:
        if wanted:
            raise LogError(f"{path} has no header line to find {', '.join(sorted(wanted))} in; "
                           "give --columns positions (user=N,query=N,time=N, counted from 1)")
        places = dict(columns or AOL_COLUMNS)
        limit = MAX_COLUMNS if columns is None else 1 << 30
        return _Layout(kind, places, max_columns=max(limit, *(p + 1 for p in places.values())))  # type: ignore[operator]
    places = {}
    for key, names_ in COLUMN_NAMES.items():
        given = (columns or {}).get(key)
        if isinstance(given, int):
            places[key] = given
        elif isinstance(given, str):
            if given not in lowered:
                raise LogError(f"the header of {path} has no column {given!r}: {', '.join(cells)}")
            places[key] = lowered.index(given)
        elif columns is None:
            found = next((i for i, c in enumerate(lowered) if c in names_), None)
            if found is not None:
                places[key] = found
    if QUERY not in places:
        raise LogError(f"the header of {path} names no query column ({', '.join(c.strip() for c in cells)}): "
                       "name it Query (or q), or give --columns user=N,query=N,time=N")
    width = max(MAX_COLUMNS, len(cells), *(p + 1 for p in places.values()))  # type: ignore[operator]
    return _Layout(kind, places, header=tuple(c.strip() for c in cells), max_columns=width)


@dataclass
class _FileReport:
    """One file's counts by reason and the first line of each, for a refusal's message."""

    skipped: Counter[str] = field(default_factory=Counter)
    first: dict[str, tuple[int, str]] = field(default_factory=dict)
    rows: int = 0
    binary_bytes: int = 0
    text_bytes: int = 0
    layout: _Layout | None = None

    def note(self, why: str, lineno: int, raw: bytes | str) -> None:
        self.skipped[why] += 1
        if why not in self.first:
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")
            self.first[why] = (lineno, text[:120])

    def line(self, why: str) -> str:
        lineno, text = self.first[why]
        return f"line {lineno}: {text!r}"


def _rows_of(path: Path, report: _FileReport, stats: LogStats, columns: Mapping[str, int | str] | None
             ) -> Iterator[LogRow]:
    note = report.note
    skipped = report.skipped
    layout: _Layout | None = None
    kind = ""
    u = q = t = None
    first_time = True
    max_columns = MAX_COLUMNS
    max_chars, control, norm, when_of = MAX_QUERY_CHARS, _CONTROL.search, normalize, parse_time  # locals: 1M+ lines
    number_or_time = _NUMBER_OR_TIME.fullmatch
    text_bytes = 0
    with _open_binary(path) as stream:
        try:
            for lineno, raw in enumerate(_lines(stream), 1):
                if raw is None:
                    note(LINE_TOO_LONG, lineno, "")
                    continue
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
                    note(BINARY, lineno, raw)
                    report.binary_bytes += len(raw)
                    continue
                text_bytes += len(raw)
                if layout is None:
                    layout = report.layout = _layout(path, line.lstrip("\ufeff"), columns)
                    kind, max_columns = layout.kind, layout.max_columns
                    u, q, t = (layout.places.get(k) for k in (USER, QUERY, TIME))
                    need = 1 + max((p for p in (u, q, t) if isinstance(p, int)), default=0)
                    if layout.header is not None:
                        continue
                user: str | None = None
                when: float | None = None
                if kind == "tsv" or kind == "csv":
                    cols = line.split("\t") if kind == "tsv" else next(csv.reader([line]), [])
                    if len(cols) < need:
                        note(TOO_FEW_COLUMNS, lineno, line)
                        continue
                    if len(cols) > max_columns:
                        note(TOO_MANY_COLUMNS, lineno, line)
                        continue
                    query = cols[q]  # type: ignore[index]
                    if u is not None:
                        user = cols[u]  # type: ignore[index]
                    if t is not None:
                        stamp: object = cols[t]  # type: ignore[index]
                        when = when_of(stamp)
                        if when is None:
                            note(BAD_TIME, lineno, line)
                            continue
                elif kind == "json":
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        obj = None
                    if not isinstance(obj, dict):
                        note(NOT_JSON, lineno, line)
                        continue
                    fields = {str(k).lower(): v for k, v in obj.items()}
                    values = {key: _field(fields, layout.places.get(key), names)  # type: ignore[union-attr]
                              for key, names in COLUMN_NAMES.items()}
                    given = values[QUERY]
                    if not isinstance(given, str):
                        note(NO_QUERY, lineno, line)
                        continue
                    query = given
                    if values[USER] is not None:
                        user = str(values[USER])
                    if values[TIME] is not None:
                        stamp = values[TIME]
                        when = when_of(stamp)
                        if when is None:
                            note(BAD_TIME, lineno, line)
                            continue
                else:
                    query = line
                if len(query) > max_chars and len(query.strip()) > max_chars:
                    note(QUERY_TOO_LONG, lineno, line)
                    continue
                query = norm(query)
                if not query:
                    note(EMPTY_QUERY, lineno, line)
                    continue
                if query[0].isdigit() and number_or_time(query):
                    note(_NUMERIC, lineno, line)
                if repaired:
                    skipped[DECODED_CP1252] += 1
                if when is not None and first_time:
                    first_time = False
                    stats.zoned_times |= not is_local_time(stamp)
                report.rows += 1
                yield LogRow(user, query, when)
        finally:
            report.text_bytes = text_bytes


def _field(fields: dict[str, object], place: int | str | None, names: tuple[str, ...]) -> object:
    """A JSON object's value of one field: under the key ``place`` if given, else any of ``names``."""
    if isinstance(place, str):
        return fields.get(place)
    return next((fields[n] for n in names if n in fields), None)


def _refusal(path: Path, report: _FileReport, damage: str) -> str | None:
    """Why ``path`` cannot be used, in one line; None if it can."""
    counts = report.skipped
    rows, layout = report.rows, report.layout
    if report.binary_bytes > BINARY_RATIO * report.text_bytes:
        return (f"{path} is a binary file, not a text log: {counts[BINARY]:,} of its lines have control "
                f"characters ({report.binary_bytes:,} bytes, against {report.text_bytes:,} in lines of text)")
    reasons = ", ".join(f"{n:,} {why}" for why, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                        if why not in (_NUMERIC, EMPTY_LINE, *REPAIRS))
    first = min((report.first[why] for why in counts if why in report.first and why != _NUMERIC), default=None)
    first_bad = f"; first bad line {first[0]}: {first[1]!r}" if first else ""
    if rows == 0:
        hint = ""
        if layout is not None and layout.kind in ("tsv", "csv") and (counts[TOO_FEW_COLUMNS] or counts[BAD_TIME]):
            found = "read by its header" if layout.header else "read as AnonID, Query, QueryTime (no header)"
            hint = f"; its columns were {found}: {_COLUMNS_HELP}, with {_FORMATS_HELP}"
        why = f": {damage}" if damage else ""
        return f"no usable row in {path}{why} ({reasons or 'empty file'}){first_bad}{hint}"
    if counts[BAD_TIME] > rows:
        where = layout.describe(TIME) if layout else "time"
        return (f"the times of {path} mostly fail to parse ({where}): {reasons}, {rows:,} rows usable; "
                f"first bad line {report.line(BAD_TIME)[5:]}; expected {_FORMATS_HELP}")
    if counts[_NUMERIC] * 2 > rows:
        where = layout.describe(QUERY) if layout and layout.kind != "list" else "the query column"
        return (f"the queries of {path} look like ids or times ({where}): {counts[_NUMERIC]:,} of {rows:,} "
                f"are numbers or times, first {report.line(_NUMERIC)}; {_COLUMNS_HELP}")
    return None


def read_logs(
    paths: list[Path], stats: LogStats | None = None, progress: Callable[[int], None] | None = None,
    *, columns: Mapping[str, int | str] | None = None,
) -> tuple[list[LogRow], LogStats]:
    """Read every row of the given logs, skipping (and counting) malformed ones.

    Each file's layout comes from its first line of text: JSON lines if it starts with ``{``,
    TSV if it has a tab, CSV if it names columns between commas (or the file is ``.csv``), a plain
    query list otherwise. ``columns`` (from :func:`parse_columns`) says where the fields of a file
    without a header are, or which header names to use. A truncated or damaged gzip file keeps
    the rows read before the damage. Raises :class:`LogError` for a missing, unreadable or
    binary file, one without a usable row, one whose times mostly fail to parse, and one whose
    queries are mostly numbers; its message gives the counts by reason and the first bad line.
    """
    stats = stats or LogStats()
    rows: list[LogRow] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            raise LogError(f"{path} is a directory, not a log file")
        if not path.is_file():
            raise LogError(f"log file not found: {path}")
        report = _FileReport()
        damage = ""
        try:
            stats.checksums[str(path)] = sha256_file(path)
            for row in _rows_of(path, report, stats, columns):
                rows.append(row)
                if progress is not None and len(rows) % 10_000 == 0:
                    progress(10_000)
        except EOFError as exc:
            damage = f"{TRUNCATED_GZIP}: {exc}"
            report.skipped[TRUNCATED_GZIP] += 1
        except (zlib.error, gzip.BadGzipFile) as exc:
            damage = f"{DAMAGED_GZIP}: {exc}"
            report.skipped[DAMAGED_GZIP] += 1
        except OSError as exc:
            raise LogError(f"cannot read {path}: {exc}") from exc
        refusal = _refusal(path, report, damage)
        if refusal:
            raise LogError(refusal)
        report.skipped.pop(_NUMERIC, None)
        stats.skipped.update(report.skipped)
        stats.rows_read += report.rows
    return rows, stats
