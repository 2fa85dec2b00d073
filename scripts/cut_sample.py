"""Cut the shipped sample log (indexer/data/sample.tsv.gz) from an AOL log: its header and every
row of its first N users (in the order they first appear), unchanged, gzipped with no
timestamp, so the same input gives the same bytes (indexer/data/SAMPLE-SOURCE.md).

    python -m scripts.cut_sample train.tsv.gz --users 600 --out indexer/data/sample.tsv.gz
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

from indexer.train.sample import first_users


def cut(log: Path, users: int, out: Path) -> tuple[int, int]:
    """Write the header and the rows of the first ``users`` users of ``log`` to ``out``:
    (users, rows) written."""
    seen: set[str] = set()
    rows = -1  # the header is not a row
    with gzip.open(log, "rt", encoding="utf-8", newline="") as src, open(out, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        for line in first_users(src, users):
            gz.write(line.encode("utf-8"))
            seen.add(line.split("\t", 1)[0])
            rows += 1
    return len(seen) - 1, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log", type=Path, help="an AOL log with a header line, gzipped (train.tsv.gz)")
    p.add_argument("--users", type=int, default=600, help="how many users (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="the sample to write")
    args = p.parse_args()
    users, rows = cut(args.log, args.users, args.out)
    print(f"{args.out}: {users} users, {rows} rows")


if __name__ == "__main__":
    main()
