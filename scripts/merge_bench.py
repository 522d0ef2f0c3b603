"""How long the query path takes to merge wide bucket hashes into a WindowStats and render it.

    .venv/bin/python scripts/merge_bench.py [--hashes 3600] [--repeat 3] [--tree DIR]

Builds one wide per-second bucket hash the way the worker writes it (10 metrics x 3 measured
fields, values spread over ~40-300 sketch bins each: ~6,000 entries), as Redis returns it
(bytes -> bytes), then times merging it --hashes times into one WindowStats (a wide hour read
second by second), to_aggregate() of the result, and merging two such WindowStats (what a window
read does with its cached closed minutes and the live minute). Prints the best CPU time of
--repeat runs.

--tree runs the same measurement against another checkout (e.g. `git archive` of the commit
before a change), so before/after figures come from one script. Pure Python, no Redis.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path


def wide_hash(seed: int = 1) -> dict[bytes, bytes]:
    from backend.core.aggregate import BatchAccumulator, apply_delta
    from backend.core.events import Event

    rng = random.Random(seed)
    acc = BatchAccumulator()
    sec = 1_773_835_200
    for i in range(10_000):
        metric = f"metric_{i % 10}"
        status = "error" if rng.random() < 0.05 else "ok"
        fields = {
            "ms": rng.lognormvariate(4, 1),
            "bytes": float(rng.randint(100, 100_000)),
            "price": round(rng.uniform(1, 500), 2),
        }
        acc.add(Event({}, sec + rng.random(), metric, fields, status == "error"))
    h: dict = {}
    for (res, _start), delta in acc.deltas().items():
        if res == 1:
            apply_delta(h, delta)
    return {k.encode(): str(v).encode() for k, v in h.items()}


def window_stats_class():
    try:
        from backend.core.window import WindowStats  # after the split
    except ImportError:
        from backend.core.aggregate import WindowStats  # before it
    return WindowStats


def combine(a, b):
    from backend.storage import reads

    return reads._combined(a, b)


def best(fn, repeat: int) -> float:
    """Best CPU time of `repeat` runs: process time, not wall time, so that other work on a shared
    machine taking the core away does not count (the merge is single-threaded, pure Python)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashes", type=int, default=3600)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
    args = parser.parse_args()
    sys.path.insert(0, args.tree)

    WindowStats = window_stats_class()
    h = wide_hash()
    hashes = [h] * args.hashes

    def merge():
        stats = WindowStats()
        for one in hashes:
            stats.merge_hash(one)
        return stats

    merged = merge()
    t_merge = best(merge, args.repeat)
    t_render = best(lambda: merged.to_aggregate(window_s=3600, from_s=0, to_s=3600), args.repeat * 4)
    t_combine = best(lambda: combine(merged, merged), args.repeat * 4)
    print(f"tree: {args.tree}")
    print(f"one hash: {len(h)} entries")
    print(f"merge {args.hashes} hashes into WindowStats: {t_merge * 1000:8.1f} ms")
    print(f"to_aggregate of the merge:                {t_render * 1000:8.2f} ms")
    print(f"combine two merged WindowStats:           {t_combine * 1000:8.2f} ms")


if __name__ == "__main__":
    main()
