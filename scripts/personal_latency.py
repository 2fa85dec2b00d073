"""In-process latency with a full personal history: every dev keystroke ranked with a
1,000-query history (the server's bound), against the same keystrokes with none.

    python -m scripts.personal_latency --index DIR --log TRAIN.tsv.gz --pairs DEV.pairs.jsonl [--limit N]

The history is the 1,000 most recent distinct queries of the users with the most distinct
queries (no user of the AOL sample has 1,000), as the history store would hold them. Prints
wall-clock and thread CPU percentiles.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time

import numpy as np

import indexer
from indexer.evaluate import read_pairs
from indexer.personal import pooled_history
from indexer.train.logs import read_logs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--limit", type=int, default=3000)
    ap.add_argument("--entries", type=int, default=1000)
    args = ap.parse_args()
    model = indexer.load(args.index)
    rows, _ = read_logs([args.log])
    history = pooled_history(((r.user, r.time, r.query) for r in rows), args.entries)
    # As the server does after loading (server.completer.load_warm): the log's millions of rows
    # gone, and what is left frozen out of the cyclic collector, so that no full collection
    # walks them in the middle of a timed keystroke.
    del rows
    gc.collect()
    gc.freeze()
    pairs = read_pairs(args.pairs, args.limit)
    result = {"entries": len(history), "pairs": len(pairs)}
    for name, personal in (("no history", None), ("1,000-query history", history)):
        for p in pairs[:200]:  # warm up
            model.complete(p.prefix, [p.prev_query], personal=personal)
        ms, cpu = [], []
        for p in pairs:
            start, start_cpu = time.perf_counter(), time.thread_time()
            model.complete(p.prefix, [p.prev_query], personal=personal)
            cpu.append((time.thread_time() - start_cpu) * 1000)
            ms.append((time.perf_counter() - start) * 1000)
        # The thread's CPU time too: on a shared machine it moves less than the wall clock.
        result[name] = {"p50_ms": round(float(np.percentile(ms, 50)), 3),
                        "p99_ms": round(float(np.percentile(ms, 99)), 3),
                        "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 3),
                        "cpu_p99_ms": round(float(np.percentile(cpu, 99)), 3)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
