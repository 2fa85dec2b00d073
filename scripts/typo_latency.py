"""In-process latency of ``Model.complete`` on the dev pairs of 5+ characters, as typed and
with one synthetic typo (the pairs of ``qac eval --typos``): 200 warm-up requests, then one
request at a time, featurizing included.

    python -m scripts.typo_latency models/aol data/aol-top1000/dev.pairs.jsonl [SEED]
"""

from __future__ import annotations

import gc
import sys
import time

import numpy as np

import indexer
from indexer.evaluate import read_pairs, typo_pairs


def main() -> int:
    model = indexer.load(sys.argv[1])
    pairs = read_pairs(sys.argv[2])
    kept, typo = typo_pairs(pairs, int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    gc.freeze()  # as the server does after loading (server.completer.load_warm)
    for name, subset in (("clean", [pairs[i] for i in kept]), ("typo", typo)):
        for p in subset[:200]:
            model.complete(p.prefix, [p.prev_query] if p.prev_query else [])
        ms = []
        for p in subset:
            start = time.perf_counter()
            model.complete(p.prefix, [p.prev_query] if p.prev_query else [])
            ms.append((time.perf_counter() - start) * 1000)
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        print(f"{name:6} n={len(ms)}  p50 {p50:.3f} ms  p90 {p90:.3f} ms  p99 {p99:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
