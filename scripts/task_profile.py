"""Per-task cost of a build's distributed stages: what one Dask task needs, to plan a cluster.

    python -m scripts.task_profile --log data/aol-1m-queries.txt.gz [--top 5] [--json OUT]

Prepares the final model's training rows and tree exactly as ``qac build`` does (default
parameters), then runs every featurizing task and every ranker task one after the other in
this process, timing each and measuring what it ships (pickled payload and result). The
``--top`` largest ranker payloads, and a full-size featurizing one, are then re-run each in a
fresh interpreter whose peak resident memory, less that of an idle interpreter with the same
imports, is the memory the task itself needs on a worker.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from indexer.params import BuildParams
from indexer.tfidf import PrefixFeaturizer
from indexer.train.build import FEATURE_CHUNK_ROWS, training_rows, transform_chunk
from indexer.train.cluster import build_label_tree
from indexer.train.counts import count_people
from indexer.train.examples import training_examples
from indexer.train.logs import LogStats, read_logs
from indexer.train.node_rankers import FitSettings, fit_chunk, ranker_tasks
from indexer.train.sessions import sessions_of

# Runs one pickled (function, shared, payload) task in a fresh interpreter and prints the
# peak resident memory above what it held before loading the task, in MB (Linux: writing 5
# to clear_refs resets the peak, VmHWM).
RUNNER = """
import pickle, sys
import indexer.train.build, indexer.train.node_rankers

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")
with open(sys.argv[1], "rb") as f:
    fn, shared, payload = pickle.load(f)
fn(shared, payload)
print((status("VmHWM") - base) / 1024)
"""


def peak_mb(fn, shared, payload) -> float:
    """Peak memory of ``fn(shared, payload)`` in a fresh interpreter, above its idle baseline."""
    with tempfile.NamedTemporaryFile(suffix=".pkl") as f:
        pickle.dump((fn, shared, payload), f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        out = subprocess.run([sys.executable, "-c", RUNNER, f.name], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def mb(n: float) -> float:
    return round(n / 2**20, 1)


def summarize(name: str, tasks: list[dict]) -> dict:
    secs = np.array([t["seconds"] for t in tasks])
    sent = np.array([t["payload_mb"] for t in tasks])
    return {
        "stage": name,
        "tasks": len(tasks),
        "total_seconds": round(float(secs.sum()), 1),
        "task_seconds_median": round(float(np.median(secs)), 2),
        "task_seconds_max": round(float(secs.max()), 2),
        "payload_mb_total": round(float(sent.sum()), 1),
        "payload_mb_max": round(float(sent.max()), 1),
        "result_mb_total": round(float(sum(t["result_mb"] for t in tasks)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, type=Path)
    ap.add_argument("--top", type=int, default=5, help="largest ranker tasks to measure the memory of")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args()
    params = BuildParams()
    t0 = time.perf_counter()
    rows_, _ = read_logs([args.log], LogStats())
    sessions = sessions_of(rows_)
    keys = sorted(count_people(rows_, []).queries)
    examples = training_examples(sessions, params.prefixes_per_query, params.seed)
    featurizer = PrefixFeaturizer(weighting=params.weighting, prev_weight=params.prev_weight).fit(keys, keys)
    rows = training_rows(keys, examples)
    print(f"{len(keys):,} labels, {len(examples):,} examples, {len(rows.y):,} rows "
          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    report: dict = {"labels": len(keys), "examples": len(examples), "rows": len(rows.y),
                    "featurizer_mb": mb(len(pickle.dumps(featurizer, protocol=pickle.HIGHEST_PROTOCOL)))}

    feature_tasks, parts = [], []
    for i in range(0, len(rows.y), FEATURE_CHUNK_ROWS):
        chunk = (rows.prefixes[i : i + FEATURE_CHUNK_ROWS], rows.prevs[i : i + FEATURE_CHUNK_ROWS])
        start = time.perf_counter()
        X = transform_chunk(featurizer, chunk)
        feature_tasks.append({
            "seconds": time.perf_counter() - start,
            "payload_mb": mb(len(pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))),
            "result_mb": mb(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes),
        })
        parts.append(X)
    X = sp.vstack(parts, format="csr")
    first = (rows.prefixes[:FEATURE_CHUNK_ROWS], rows.prevs[:FEATURE_CHUNK_ROWS])  # a full-size chunk
    report["featurize"] = summarize("featurize", feature_tasks)
    report["featurize"]["peak_mb_largest"] = peak_mb(transform_chunk, featurizer, first)
    print(json.dumps(report["featurize"]), file=sys.stderr)

    embeddings = featurizer.embed(keys)
    tree = build_label_tree(keys, embeddings, params.trie_depth, params.max_leaf, params.branching, params.seed)
    settings = FitSettings(n_features=X.shape[1], C=params.svm_c, prune=params.prune, tol=0.1, max_iter=100)
    _, payloads = ranker_tasks(tree, X, rows.y, params.workers, rows.weight, rows.prefix_len, params.trie_depth)
    ranker_tasks_, sizes = [], []
    for payload in payloads:
        start = time.perf_counter()
        _, trip = fit_chunk(settings, payload)
        nbytes = len(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        ranker_tasks_.append({
            "seconds": time.perf_counter() - start,
            "payload_mb": mb(nbytes),
            "result_mb": mb(sum(a.nbytes for a in trip)),
            "nodes": len(payload),
            "rows": int(sum(p.X.shape[0] for p in payload)),
            "depth": int(min(tree.depth[p.node] for p in payload)),
        })
        sizes.append(nbytes)
    report["rankers"] = summarize("rankers", ranker_tasks_)
    by_depth: dict[int, list[float]] = {}
    for t in ranker_tasks_:
        by_depth.setdefault(t["depth"], []).append(t["seconds"])
    report["rankers"]["seconds_by_top_depth"] = {d: round(sum(v), 1) for d, v in sorted(by_depth.items())}
    report["rankers"]["rows_shipped_total"] = sum(t["rows"] for t in ranker_tasks_)
    top = np.argsort(sizes)[::-1][: args.top].tolist()
    _, payloads = ranker_tasks(tree, X, rows.y, params.workers, rows.weight, rows.prefix_len, params.trie_depth)
    largest = []
    for i, payload in enumerate(payloads):
        if i in top:
            t = dict(ranker_tasks_[i])
            t["peak_mb"] = peak_mb(fit_chunk, settings, payload)
            t["seconds"] = round(t["seconds"], 2)
            largest.append(t)
            print(json.dumps(t), file=sys.stderr)
    report["rankers"]["largest"] = sorted(largest, key=lambda t: -t["payload_mb"])
    report["tree"] = {"nodes": tree.n_nodes, "leaves": tree.n_leaves, "depth": tree.max_depth,
                      "X_rows": X.shape[0], "X_nnz": int(X.nnz), "X_mb": mb(X.data.nbytes + X.indices.nbytes)}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
