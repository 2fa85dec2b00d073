"""CPU time of a submit into a full personal history, as a connection makes it: the write to a
memory history store, the change notification, and the next keystroke's read of the user's
copy (``UserLink.record`` then ``UserLink.personal``).

    python -m scripts.submit_cost [--entries 1000] [--submits 2000]

The user starts with ``--entries`` queries (the server's bound); each submit is a new query
(so one entry is evicted) or, every other time, one already there. Prints the CPU time per
submit (mean, p50, p99, in ms) as JSON. Run it on two checkouts, alternately, to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time

import numpy as np

from server.history import MemoryHistoryStore
from server.metrics import Metrics
from server.personal import PersonalHub
from server.protocol import UserHello
from server.users import Signer
from server.users_ws import UserLink


async def measure(entries: int, submits: int) -> dict[str, float]:
    hub = PersonalHub(Signer(b"a secret of enough bytes"), MemoryHistoryStore(), Metrics())
    follow = asyncio.create_task(hub.follow())
    link = UserLink(hub)
    await link.handle(UserHello(None))
    assert link.user is not None
    key = link.user.key
    start = time.time() - entries
    for i in range(entries):
        await hub.store.record(key, f"earlier query number {i}", now=start + i)
    await asyncio.sleep(0)
    hub.changed(key)
    assert len(await link.personal() or ()) == entries
    ms = []
    gc.collect()
    for i in range(submits):
        query = f"new query number {i}" if i % 2 else f"earlier query number {entries - 1 - i % entries}"
        cpu = time.process_time()
        await link.record(query)
        for _ in range(3):  # the notification reaches the follower
            await asyncio.sleep(0)
        personal = await link.personal()
        ms.append((time.process_time() - cpu) * 1000)
        assert personal is not None and query in personal
    follow.cancel()
    return {"mean_ms": round(float(np.mean(ms)), 4), "p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--submits", type=int, default=2000)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(measure(args.entries, args.submits))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
