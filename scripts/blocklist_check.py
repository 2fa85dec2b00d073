"""Does any one- or two-letter prefix show a default-list term, from any source?

    python scripts/blocklist_check.py --index DIR [--log TRAIN.tsv.gz]

Ranks every prefix a..z and aa..zz three ways: alone; after a previous query holding a
blocked term; and with a personal history of every blocked query of the log (or, without
--log, of every default-list term) plus "free TERM" for each term. Prints what was shown and
how many suggestions held a default-list term (the goal is 0).
"""

from __future__ import annotations

import argparse
import json
import string
import sys

import indexer
from indexer.blocklist import Blocklist
from indexer.personal import PersonalEntry, PersonalHistory


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--log", help="a log whose blocked queries make the personal history")
    args = ap.parse_args()
    model = indexer.load(args.index)
    default = Blocklist.default()
    own = {t for term in default.terms for t in (term, f"free {term}")}
    if args.log:
        from indexer.train.logs import read_logs

        rows, _ = read_logs([args.log])
        own |= {r.query for r in rows if default.blocks(r.query)}
    mine = PersonalHistory([PersonalEntry(q, 5, 0.0) for q in own], now=3600.0)
    letters = string.ascii_lowercase
    prefixes = [*letters, *(a + b for a in letters for b in letters)]
    shown = bad = 0
    for prefix in prefixes:
        for items in (model.complete(prefix), model.complete(prefix, ["free porn"]),
                      model.complete(prefix, personal=mine)):
            shown += len(items)
            bad += sum(default.blocks(c.query) for c in items)
    print(json.dumps({"prefixes": len(prefixes), "personal_entries": len(mine), "shown": shown, "blocked_shown": bad}))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
