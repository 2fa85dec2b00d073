"""scripts/aol_top1000.py cuts the users with the most clicked queries from AOL-format files."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

HEADER = "AnonID\tQuery\tQueryTime\tItemRank\tClickURL\n"

FILE_1 = [
    # 142: three clicked queries, one of them clicked three times on two sites.
    "142\tny times\t2006-03-02 10:00:00\t1\thttp://www.nytimes.com\n",
    "142\tny times\t2006-03-02 10:00:00\t3\thttp://www.nytimes.com/\n",
    "142\tny times\t2006-03-02 10:00:00\t4\thttp://WWW.NYPOST.COM\n",
    "142\tweather\t2006-03-01 09:00:00\t1\thttp://www.weather.com\n",
    "142\tno click\t2006-03-01 09:30:00\t\t\n",
    # 7: one query clicked five times counts once, however many lines it has.
    *[f"7\tbanks\t2006-03-03 08:00:00\t{r}\thttp://bank{r}.com\n" for r in range(1, 6)],
    # 20 and 3: two clicked queries each; the tie goes to "20" (smaller as text).
    "20\tcars\t2006-04-01 12:00:00\t1\thttp://www.cars.com\n",
    "3\tdogs\t2006-04-01 12:00:00\t1\thttp://www.dogs.com\n",
    "3\tcats\t2006-04-02 12:00:00\t2\thttp://www.cats.com\n",
    # 99: many queries, none clicked.
    *[f"99\tq{i}\t2006-03-0{i} 01:00:00\t\t\n" for i in range(1, 8)],
    "a line with too few fields\n",
]
FILE_2 = [
    "142\tmail\t2006-05-30 23:59:59\t1\thttp://mail.aol.com\n",
    "20\tboats\t2006-05-20 12:00:00\t1\tboats.com\n",
]


def cut(tmp_path: Path, users: int) -> list[str]:
    first = tmp_path / "user-ct-test-collection-01.txt"
    first.write_text(HEADER + "".join(FILE_1), encoding="utf-8")
    second = tmp_path / "user-ct-test-collection-02.txt.gz"
    with gzip.open(second, "wt", encoding="utf-8") as f:
        f.write(HEADER + "".join(FILE_2))
    out = tmp_path / "top.tsv.gz"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "aol_top1000.py"), str(first), str(second),
                    "--out", str(out), "--users", str(users)], check=True, capture_output=True)
    with gzip.open(out, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def test_keeps_the_users_with_most_clicked_queries_one_row_per_query_with_its_domains(tmp_path: Path) -> None:
    assert cut(tmp_path, 2) == [
        "AnonID\tQuery\tQueryTime\tClickURLs",
        "142\tweather\t2006-03-01 09:00:00\thttp://www.weather.com/",
        "142\tny times\t2006-03-02 10:00:00\thttp://www.nytimes.com/ http://www.nypost.com/",
        "142\tmail\t2006-05-30 23:59:59\thttp://mail.aol.com/",
        "20\tcars\t2006-04-01 12:00:00\thttp://www.cars.com/",
        "20\tboats\t2006-05-20 12:00:00\thttp://boats.com/",
    ]


def test_users_without_clicks_are_never_kept_and_ids_order_as_text(tmp_path: Path) -> None:
    rows = cut(tmp_path, 10)
    assert [row.split("\t")[0] for row in rows[1:]] == ["142"] * 3 + ["20"] * 2 + ["3"] * 2 + ["7"]
    assert "7\tbanks\t2006-03-03 08:00:00\t" + " ".join(f"http://bank{r}.com/" for r in range(1, 6)) in rows
