"""Ablation study on dev: build one model per variant with ``qac build``, score it with
``qac eval --json``, and print a Markdown table.

    python -m scripts.ablation --log TRAIN.tsv.gz --pairs DEV.pairs.jsonl --work DIR [--only NAME ...]

Each variant is a set of ``qac build`` flags (or, for "no previous query", the pairs with
their previous query blanked out). Models and results are kept under ``--work`` so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ALL = "tree,mpc,prefix,word,session,transitions"

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "weighting none": ["--weighting", "none"],
    "weighting word": ["--weighting", "word"],
    "trie depth 0": ["--trie-depth", "0"],
    "trie depth 1": ["--trie-depth", "1"],
    "trie depth 2": ["--trie-depth", "2"],
    "tree without prev query": ["--prev-weight", "0"],
    "default scorer": ["--default-scorer"],
    **{
        f"without {s}": ["--sources", ",".join(x for x in ALL.split(",") if x != s)]
        for s in ALL.split(",")
    },
}
NO_PREV = "no previous query at all"


def run(cmd: list[str]) -> str:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    names = args.only or [*VARIANTS, NO_PREV]
    for name in names:
        if name in results:
            continue
        flags = VARIANTS.get(name, [])
        model = args.work / name.replace(" ", "-")
        pairs = args.pairs
        if name == NO_PREV:
            model = args.work / "default"
            pairs = str(args.work / "pairs-no-prev.jsonl")
            with open(args.pairs) as src, open(pairs, "w") as dst:
                for line in src:
                    d = json.loads(line)
                    d["prev_query"] = ""
                    dst.write(json.dumps(d) + "\n")
        started = time.time()
        if not (model / "manifest.json").exists():
            run(["qac", "build", "--log", args.log, "--out", str(model), "--quiet", *flags])
        build_s = time.time() - started
        out = run(["qac", "eval", "--index", str(model), "--pairs", pairs, "--json", "--quiet"])
        result = json.loads(out.strip().splitlines()[-1])
        result["build_s"] = round(build_s, 1)
        result["flags"] = flags
        results[name] = result
        results_path.write_text(json.dumps(results, indent=1))
    print("| variant | flags | MRR@10 | success@1 | success@10 | BLEU | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        m = r["model"]
        print(
            f"| {name} | `{' '.join(r['flags'])}` | {m['mrr']:.4f} | {m['success@1']:.4f} | "
            f"{m['success@10']:.4f} | {m['bleu']:.4f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
