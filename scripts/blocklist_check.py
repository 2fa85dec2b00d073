"""Does any one- or two-letter prefix show a default blocked or sensitive term, from any source?

    python -m scripts.blocklist_check --index DIR [--log TRAIN.tsv.gz]

Ranks every prefix a..z and aa..zz three ways: alone; after previous queries holding a
blocked and a sensitive term; and with a personal history of every blocked query of the log
(or, without --log, of every default-list term), every sensitive term, "free TERM" for each
term, and look-alike spellings of them (Cyrillic and Greek letters, accents, an invisible
Hangul filler, f_u_c_k, f.u.c.k). Prints what was shown and how many suggestions held a
default term (the goal is 0): judged on plain words, and on the look-alikes put in.
"""

from __future__ import annotations

import argparse
import json
import string
import sys

import indexer
from indexer.blocklist import Blocklist
from indexer.normalize import normalize
from indexer.personal import PersonalEntry, PersonalHistory

_LOOKS = str.maketrans({"a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "u": "υ", "i": "і"})


def look_alikes(term: str) -> list[str]:
    """Spellings of ``term`` that must match it: other scripts, an accent, a filler, separators."""
    out = [term.translate(_LOOKS), term[:1] + "\u3164" + term[1:]]
    out += [term.replace(v, w, 1) for v, w in (("a", "á"), ("e", "é"), ("o", "ó"), ("u", "ú")) if v in term][:1]
    if " " not in term:
        out += ["_".join(term), ".".join(term)]
    return [normalize(q) for q in out if normalize(q) != term]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--log", help="a log whose blocked queries make the personal history")
    args = ap.parse_args()
    model = indexer.load(args.index)
    default = Blocklist.default()
    terms = (*default.terms, *default.sensitive)
    looks = {q for term in terms for q in look_alikes(term)}
    own = {t for term in terms for t in (term, f"free {term}")} | looks
    if args.log:
        from indexer.train.logs import read_logs

        rows, _ = read_logs([args.log])
        own |= {r.query for r in rows if default.blocks(r.query)}
    mine = PersonalHistory([PersonalEntry(q, 5, 0.0) for q in own], now=3600.0)

    def bad(query: str) -> bool:
        padded = f" {query} "
        return default.blocks(query) or query in looks or any(f" {t} " in padded for t in terms)

    letters = string.ascii_lowercase
    prefixes = [*letters, *(a + b for a in letters for b in letters)]
    shown = held = 0
    for prefix in prefixes:
        for items in (model.complete(prefix), model.complete(prefix, ["free porn", "naked news"]),
                      model.complete(prefix, personal=mine)):
            shown += len(items)
            held += sum(bad(c.query) for c in items)
    print(json.dumps({"prefixes": len(prefixes), "personal_entries": len(mine), "shown": shown,
                      "default_term_shown": held}))
    return 0 if held == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
