"""What the suggestions' "context" flag costs a keystroke: dev keystrokes typed character by
character after the pair's previous query, ranked as the server ranks them (``rank_keystroke``: the
answer, and the fresh session's answer, ranked ahead for the most typed prefixes or ranked
on the spot), against
``Model.complete`` alone on the same keystrokes, interleaved.

    python -m scripts.context_cost --index DIR --pairs DEV.pairs.jsonl [--limit N] [--cache N]

Prints how many keystrokes' fresh answers were ranked ahead, how often the flag is true, and p50/p99.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import indexer
from indexer.evaluate import read_pairs
from indexer.normalize import normalize_prefix
from server.completer import FRESH_ANSWERS, FreshAnswers, rank_keystroke


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="model directory")
    ap.add_argument("--pairs", required=True, help="evaluation pairs (JSON lines)")
    ap.add_argument("--limit", type=int, default=2000, help="pairs to replay, in file order")
    ap.add_argument("--cache", type=int, default=FRESH_ANSWERS,
                    help="most typed prefixes whose fresh answer is ranked ahead")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    model = indexer.load(args.index)
    pairs = read_pairs(args.pairs, args.limit)
    keystrokes = [(p.next_query[:n], (p.prev_query,)) for p in pairs for n in range(1, len(p.next_query) + 1)]
    for prefix, history in keystrokes[:300]:  # page the model in
        model.complete(prefix, history, args.k)
    fresh = FreshAnswers.ranked(model, None, args.k, args.cache)
    plain, flagged, hits, changed = [], [], 0, 0
    for prefix, history in keystrokes:
        started = time.perf_counter()
        model.complete(normalize_prefix(prefix), history, args.k)
        plain.append(time.perf_counter() - started)
        hits += fresh.get(normalize_prefix(prefix)) is not None
        started = time.perf_counter()
        changed += bool(rank_keystroke(model, prefix, history, None, args.k, None, fresh, True)[2])
        flagged.append(time.perf_counter() - started)

    def ms(xs: list[float]) -> dict[str, float]:
        a = np.asarray(xs) * 1000
        return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3)}

    print(json.dumps({"model": model.version, "pairs": len(pairs), "keystrokes": len(keystrokes),
                      "cache": args.cache, "hit_rate": round(hits / len(keystrokes), 4),
                      "context_true": round(changed / len(keystrokes), 4),
                      "complete_ms": ms(plain), "with_context_ms": ms(flagged)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
