"""Reading query logs: AOL-format TSV (user, query, time, ...) or one query per line."""

from __future__ import annotations

import gzip
import hashlib
import io
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .normalize import normalize


class LogError(Exception):
    """A log file that cannot be used at all (missing, unreadable, no usable row)."""


@dataclass(frozen=True, slots=True)
class LogRow:
    """One logged query. ``user`` and ``time`` are ``None`` in a plain query list."""

    user: str | None
    query: str
    time: float | None


@dataclass
class LogStats:
    """What reading the logs found: rows used and rows skipped, by reason."""

    rows_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    checksums: dict[str, str] = field(default_factory=dict)


_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def _open_text(path: Path) -> io.TextIOBase:
    raw = path.open("rb")
    head = raw.read(2)
    raw.seek(0)
    stream = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_time(text: str) -> float | None:
    try:
        return datetime.strptime(text.strip(), _TIME_FORMAT).timestamp()
    except ValueError:
        return None


def _rows_of(path: Path, stats: LogStats) -> Iterator[LogRow]:
    with _open_text(path) as lines:
        first = True
        tsv: bool | None = None
        for line in lines:
            line = line.rstrip("\r\n")
            if first:
                first = False
                tsv = "\t" in line
                head = line.split("\t")
                if (tsv and head[:2] == ["AnonID", "Query"]) or (not tsv and line == "Query"):
                    continue
            if not line.strip():
                stats.skipped["empty line"] += 1
                continue
            if tsv:
                cols = line.split("\t")
                if len(cols) < 3:
                    stats.skipped["too few columns"] += 1
                    continue
                when = _parse_time(cols[2])
                if when is None:
                    stats.skipped["bad time"] += 1
                    continue
                query = normalize(cols[1])
                if not query:
                    stats.skipped["empty after normalization"] += 1
                    continue
                stats.rows_read += 1
                yield LogRow(cols[0], query, when)
            else:
                query = normalize(line)
                if not query:
                    stats.skipped["empty after normalization"] += 1
                    continue
                stats.rows_read += 1
                yield LogRow(None, query, None)


def read_logs(
    paths: list[Path], stats: LogStats | None = None, progress: Callable[[int], None] | None = None
) -> tuple[list[LogRow], LogStats]:
    """Read every row of the given logs, skipping (and counting) malformed ones.

    A file is AOL-format when its first line has a tab, a plain query list otherwise.
    Raises :class:`LogError` for a missing file or when no usable row is found.
    """
    stats = stats or LogStats()
    rows: list[LogRow] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise LogError(f"log file not found: {path}")
        try:
            stats.checksums[str(path)] = _sha256(path)
            before = len(rows)
            for row in _rows_of(path, stats):
                rows.append(row)
                if progress is not None and len(rows) % 10_000 == 0:
                    progress(10_000)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise LogError(f"cannot read {path}: {exc}") from exc
        if len(rows) == before:
            raise LogError(f"no usable row in {path}")
    return rows, stats
