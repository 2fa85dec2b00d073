"""What the cyclic garbage collector does in every Python process started with this directory
on ``PYTHONPATH`` (the server's workers included), for BENCHMARKS.md (#gc, #connection-garbage):

    PYTHONPATH=scripts/gc_probe GC_PAUSES=/tmp/gc python -m scripts.soak ...

- ``GC_PAUSES=PREFIX``: one line per collection in ``PREFIX.<pid>``: the wall-clock time at its
  end, the generation, how long it took in ms, and how many objects it freed.
- ``GC_GARBAGE=PREFIX``: the collector keeps what it finds (``gc.DEBUG_SAVEALL``, so memory
  grows: for short runs only), and every 5 s ``PREFIX.<pid>`` gets how many objects it found
  since, by type.
"""

import collections
import gc
import os
import threading
import time

if os.environ.get("GC_PAUSES"):
    _pauses = open(f"{os.environ['GC_PAUSES']}.{os.getpid()}", "w", buffering=1)
    _started = [0.0]

    def _time(phase, info):
        if phase == "start":
            _started[0] = time.perf_counter()
        else:
            took = (time.perf_counter() - _started[0]) * 1000
            _pauses.write(f"{time.time():.3f} {info['generation']} {took:.3f} {info['collected']}\n")

    gc.callbacks.append(_time)

if os.environ.get("GC_GARBAGE"):
    gc.set_debug(gc.DEBUG_SAVEALL)

    def _count():
        out = open(f"{os.environ['GC_GARBAGE']}.{os.getpid()}", "w", buffering=1)
        seen = 0
        while True:
            time.sleep(5)
            found, seen = gc.garbage[seen:], len(gc.garbage)
            kinds = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in found)
            out.write(f"== {time.time():.1f} {len(found)}\n")
            out.writelines(f"{n}\t{kind}\n" for kind, n in kinds.most_common(25))

    threading.Thread(target=_count, daemon=True).start()
