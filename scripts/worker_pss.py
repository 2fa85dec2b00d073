"""PSS of a server's processes for 1, 2 and 4 workers: what each worker really costs in memory.

    python -m scripts.worker_pss --index models/aol --pairs data/aol-top1000/dev.pairs.jsonl \\
        [--tree DIR] [--workers 1,2,4] [--users 50] [--duration 5]

Serves the model with ``qac serve --workers N`` from the code in ``--tree`` (its working
directory and first on ``PYTHONPATH``; default this checkout), drives it with human-paced typists for a few seconds
(so the workers have ranked, as in service), then reads ``Pss`` from ``/proc/PID/smaps_rollup``
of the supervisor and each worker: shared pages count a fraction to each process that maps
them, so the sum is what the server costs the machine. Prints one JSON line per worker count.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from replay.bench import UNLIMITED, RedisProcess, ServerProcess
from replay.loadgen import chain_pairs, run_load
from replay.scripts import scripts_from_pairs


def pss_mb(pid: int) -> float:
    """The proportional set size of a process, in MB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args()
    scripts = chain_pairs(scripts_from_pairs(args.pairs, 2000))
    env = UNLIMITED | {"PYTHONPATH": str(Path(args.tree).resolve())}
    with tempfile.TemporaryDirectory(prefix="worker-pss-") as tmp, RedisProcess() as redis:
        for workers in (int(w) for w in args.workers.split(",")):
            with ServerProcess(Path(args.index).resolve(), Path(tmp) / f"serve-{workers}.log", workers=workers,
                               env=env, cwd=Path(args.tree).resolve(),
                               sessions=redis.url if workers > 1 else "memory") as server:
                assert server.proc is not None
                run_load(server.url, scripts, users=args.users, duration=args.duration)
                supervisor = server.proc.pid
                children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
                # uvicorn's spawn starts a resource tracker too: the workers are the children serving.
                pss = {int(c): pss_mb(int(c)) for c in children}
                worker_pss = sorted((v for v in pss.values() if v > 20), reverse=True) if workers > 1 \
                    else [pss_mb(supervisor)]
                print(json.dumps({"workers": workers, "supervisor_pss_mb": round(pss_mb(supervisor), 1),
                                  "worker_pss_mb": [round(v, 1) for v in worker_pss],
                                  "other_children_mb": [round(v, 1) for v in pss.values() if v <= 20],
                                  "total_pss_mb": round(pss_mb(supervisor) + sum(pss.values()), 1)}),
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
