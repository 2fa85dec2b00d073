"""Privacy against accuracy on dev: one model per --min-users K, each scored with and without
personal history, with the leak rate, and the build's cost. Prints a Markdown table.

    python -m scripts.privacy_table --log TRAIN.tsv.gz --pairs DEV.pairs.jsonl --work DIR [--k 1 2 3 5]

Personal history and leaks come from ``qac eval --personal-log TRAIN``. Models and results are
kept under ``--work`` so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str]) -> str:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--k", type=int, nargs="*", default=[1, 2, 3, 5])
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    qac = [sys.executable, "-m", "qac"]
    for k in args.k:
        if str(k) in results:
            continue
        model = args.work / f"k{k}"
        started = time.time()
        said = run([*qac, "build", "--log", args.log, "--out", str(model), "--quiet", "--min-users", str(k)])
        build_s = time.time() - started
        out = run([*qac, "eval", "--index", str(model), "--pairs", args.pairs, "--personal-log", args.log,
                   "--json", "--quiet"])
        result = json.loads(out.strip().splitlines()[-1])
        labels = re.search(r"labels\s+([\d,]+)", said)
        peak = re.search(r"peak memory\s+([\d,]+) MB", said)
        result["build"] = {"seconds": round(build_s, 1),
                           "labels": labels.group(1) if labels else "?",
                           "peak_mb": peak.group(1) if peak else "?"}
        results[str(k)] = result
        results_path.write_text(json.dumps(results, indent=1))
    print("| K | personal history | MRR@10 | success@10 | MPC MRR@10 | leaks (shown) | labels | build s | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, r in sorted(results.items(), key=lambda kv: int(kv[0])):
        b = r["build"]
        for system, on in (("model", "on"), ("model_no_history", "off")):
            m = r[system]
            print(f"| {k} | {on} | {m['mrr']:.4f} | {m['success@10']:.4f} | {r['mpc']['mrr']:.4f} | "
                  f"{m['leak_rate']:.2%} ({m['leaked']:,} of {m['shown']:,}) | {b['labels']} | "
                  f"{b['seconds']} | {b['peak_mb']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
