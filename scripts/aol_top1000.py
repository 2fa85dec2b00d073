"""Cut the "aol-top1000" log from the AOL query log (2006): the users with the most clicked queries.

    python -m scripts.aol_top1000 user-ct-test-collection-01.txt ... -10.txt --out top1000.tsv.gz

Input: the collection's files (plain or gzipped), tab-separated with a header line,
``AnonID Query QueryTime ItemRank ClickURL``. A query with several clicks is listed once per
click; a query without a click has empty ``ItemRank`` and ``ClickURL``.

Output: a gzipped TSV with the header ``AnonID Query QueryTime ClickURLs`` holding every clicked
query of the ``--users`` users (1,000) with the most clicked queries: one row per (user, query,
time), its clicked domains (``http://host/``) space-separated in the order first clicked. Rows
without a click are dropped. Users are in the order of their ids as text, each user's rows in
time order. Ties in the count go to the smaller id (as text).

Two passes over the files: the first counts each user's clicked queries (a query's clicks are
consecutive lines in the collection, so a repeat of the line before is not counted again), the
second gathers the chosen users' rows. BENCHMARKS.md, "Data", says what comes next.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

HEADER = ("AnonID", "Query", "QueryTime", "ItemRank", "ClickURL")


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="\n")
    return path.open("r", encoding="utf-8", errors="replace", newline="\n")


def clicked_rows(paths: list[Path]) -> Iterator[tuple[str, str, str, str]]:
    """(user, query, time, clicked URL) of every line with a click, in file order."""
    for path in paths:
        with _open(path) as f:
            for number, line in enumerate(f):
                fields = line.rstrip("\r\n").split("\t")
                if number == 0 and tuple(fields) == HEADER:
                    continue
                if len(fields) != 5 or not fields[4]:
                    continue
                user, query, time, _rank, url = fields
                yield user, query, time, url


def domain(url: str) -> str:
    """The clicked URL's site as ``scheme://host/`` (the collection gives hosts, often without a slash)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return f"{parts.scheme or 'http'}://{parts.netloc.lower()}/"


def top_users(paths: list[Path], n: int) -> set[str]:
    """The ``n`` users with the most clicked (query, time) rows; ties to the smaller id as text."""
    counts: Counter[str] = Counter()
    previous = None
    for user, query, time, _url in clicked_rows(paths):
        key = (user, query, time)
        if key != previous:
            counts[user] += 1
            previous = key
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {user for user, _ in ranked[:n]}


def gather(paths: list[Path], users: set[str]) -> list[tuple[str, str, str, str]]:
    """The chosen users' clicked queries, one row per (user, query, time) with its domains."""
    domains: dict[tuple[str, str, str], list[str]] = {}
    for user, query, time, url in clicked_rows(paths):
        if user in users:
            seen = domains.setdefault((user, query, time), [])
            site = domain(url)
            if site not in seen:
                seen.append(site)
    rows = [(user, query, time, " ".join(sites)) for (user, query, time), sites in domains.items()]
    rows.sort(key=lambda row: (row[0], row[2]))  # stable: same-time rows keep their file order
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path, help="user-ct-test-collection-NN.txt files (plain or .gz)")
    ap.add_argument("--out", required=True, type=Path, help="the TSV to write (gzipped if it ends in .gz)")
    ap.add_argument("--users", type=int, default=1000, help="how many users to keep (default 1000)")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"not a file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.users < 1:
        print("--users must be at least 1", file=sys.stderr)
        return 2
    rows = gather(args.files, top_users(args.files, args.users))
    opener = gzip.open if args.out.suffix == ".gz" else open
    with opener(args.out, "wt", encoding="utf-8", newline="\n") as out:
        out.write("AnonID\tQuery\tQueryTime\tClickURLs\n")
        out.writelines("\t".join(row) + "\n" for row in rows)
    print(f"{len(rows)} rows of {len({row[0] for row in rows})} users -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
