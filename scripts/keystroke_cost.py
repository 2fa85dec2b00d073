"""What ranking one keystroke costs in process: ``Model.complete`` over the typists' keystrokes.

    python -m scripts.keystroke_cost --index models/head2 \\
        --pairs data/aol-top1000/dev.pairs.jsonl [--limit 1000] [--passes 3]

The keystrokes are those ``scripts/typists.py`` sends: the dev pairs chained into sessions,
each query typed character by character after the session's earlier queries. They are ranked
in order, ``--passes`` times. The first pass meets the model's memories empty, as a server
fresh from a reload does; later passes find in them what earlier keystrokes left. Prints one
JSON line: microseconds per keystroke of each pass, and the process's resident memory before
the first pass and after the last (what the memories grew to). Pair with ``scripts/same_rankings.py``
to check that a speed change leaves the answers as they were.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import indexer
from replay.bench import rss_mb
from replay.loadgen import chain_pairs
from replay.scripts import scripts_from_pairs, typed_keystrokes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="model directory")
    ap.add_argument("--pairs", required=True, help="dev pairs (JSON lines), as scripts/typists.py reads them")
    ap.add_argument("--limit", type=int, default=1000, help="pairs read (default 1000)")
    ap.add_argument("--passes", type=int, default=3, help="times the keystrokes are ranked (default 3)")
    args = ap.parse_args()
    model = indexer.load(args.index)
    keystrokes = list(typed_keystrokes(chain_pairs(scripts_from_pairs(args.pairs, args.limit))))
    gc.freeze()  # the model and the keystrokes: no full collection walks them while timed
    rss_before = rss_mb(os.getpid())["rss_mb"]
    passes = []
    for _ in range(args.passes):
        start = time.perf_counter()
        for prefix, history in keystrokes:
            model.complete(prefix, history, 10)
        passes.append(round((time.perf_counter() - start) / max(1, len(keystrokes)) * 1e6))
    gc.collect()
    print(json.dumps({"index": args.index, "keystrokes": len(keystrokes), "us_per_keystroke": passes,
                      "rss_mb": [rss_before, rss_mb(os.getpid())["rss_mb"]]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
