"""Hand-written "clear when full" caches against functools.lru_cache and cachetools, per use.

    .venv/bin/python scripts/cache_bench.py [--tree DIR] [--part 1|2|3|all]

Part 1 times each cache's hot operation in its three forms side by side, on a key mix like the
real one (mostly hits, a few hundred to a few thousand distinct keys):

    bin key      once per event and measured field in BatchAccumulator.add (ingest hot path)
    ts prefix    once per event in iso_ms (ingest hot path)
    name parse   once per distinct hash field name per WindowStats / TagStats (query path)
    aggregate    once per /api/aggregate call or tick (query path)
    ts point     once per step of a /api/timeseries call (query path)

Part 2 times the real code of --tree (default: this checkout), so running it on a `git archive`
of the commit before a change gives before/after figures: iso_ms, BatchAccumulator.add over a
live-shaped batch and over a backlog-shaped one (one event per group), and resolving a wide
hash's names into a fresh WindowStats. Part 3 times whole Store reads of --tree on an embedded
Redis with every cacheable part cached: an aggregate hit, and 3,600- and 360-point time series.
Best of 7 runs throughout; the box is shared, so compare runs made one right after the other.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import timeit
from functools import lru_cache
from pathlib import Path

import cachetools

REPEAT = 7


def per_op_ns(fn, ops: int) -> float:
    runs = timeit.repeat(fn, number=1, repeat=REPEAT)
    return min(runs) / ops * 1e9


def row(label: str, figures: dict[str, float]) -> None:
    cells = "  ".join(f"{name} {ns:7.1f} ns" for name, ns in figures.items())
    print(f"  {label:<12} {cells}")


def part1() -> None:
    rng = random.Random(3)
    print("part 1: per hot operation (hand = dict cleared when full, inline .get first)")

    # bin key of a measured value: ~2,000 distinct values, integer-ish milliseconds.
    from backend.core.sketch import bin_key

    values = [float(int(rng.lognormvariate(4, 1.2))) for _ in range(100_000)]
    hand: dict[float, str] = {}

    def hand_key(x):
        key = hand.get(x)
        if key is None:
            if len(hand) >= 16384:
                hand.clear()
            key = hand[x] = bin_key(x)
        return key

    def run_hand():
        get = hand.get
        for x in values:
            bk = get(x)
            if bk is None:
                bk = hand_key(x)

    lru_key = lru_cache(maxsize=16384)(bin_key)

    def run_lru():
        for x in values:
            bk = lru_key(x)  # noqa: F841

    lru_c = cachetools.LRUCache(16384)
    ct_key = cachetools.cached(lru_c)(bin_key)

    def run_ct():
        for x in values:
            bk = ct_key(x)  # noqa: F841

    row(
        "bin key",
        {
            "hand": per_op_ns(run_hand, len(values)),
            "lru_cache": per_op_ns(run_lru, len(values)),
            "cachetools": per_op_ns(run_ct, len(values)),
        },
    )

    # iso_ms prefix: a batch's events share a handful of seconds.
    secs = [1_773_835_200 + int(i / 2000) for i in range(100_000)]
    prefixes: dict[int, str] = {}

    def strftime(sec):
        return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))

    def hand_prefix(sec):
        prefix = prefixes.get(sec)
        if prefix is None:
            if len(prefixes) >= 4096:
                prefixes.clear()
            prefix = prefixes[sec] = strftime(sec)
        return prefix

    lru_prefix = lru_cache(maxsize=4096)(strftime)

    def run(fn):
        return lambda: [fn(s) for s in secs]

    row(
        "ts prefix",
        {"hand": per_op_ns(run(hand_prefix), len(secs)), "lru_cache": per_op_ns(run(lru_prefix), len(secs))},
    )

    # Name parsing: ~6,000 distinct names, all hits after the first pass.
    names = [f"metric_{m}|field_{f}|b:p{b}".encode() for m in range(10) for f in range(3) for b in range(200)]
    parsed: dict = {}

    def parse(raw):
        return tuple(raw.decode().split("|"))

    def hand_parse(raw):
        hit = parsed.get(raw, False)
        if hit is not False:
            return hit
        if len(parsed) >= 65536:
            parsed.clear()
        hit = parsed[raw] = parse(raw)
        return hit

    lru_parse = lru_cache(maxsize=65536)(parse)
    row(
        "name parse",
        {
            "hand": per_op_ns(run_names(hand_parse, names), len(names)),
            "lru_cache": per_op_ns(run_names(lru_parse, names), len(names)),
        },
    )

    # The aggregate cache: a few keys per second, one lookup per call.
    keys = [(60, None, 1_773_835_200 + i // 50, str(i // 10).encode()) for i in range(20_000)]
    plain: dict = {}

    def hand_agg():
        for k in keys:
            hit = plain.get(k)
            if hit is None:
                if len(plain) >= 256:
                    plain.clear()
                plain[k] = k

    lru_agg = cachetools.LRUCache(256)

    def ct_agg():
        for k in keys:
            hit = lru_agg.get(k)
            if hit is None:
                lru_agg[k] = k

    row("aggregate", {"hand": per_op_ns(hand_agg, len(keys)), "LRUCache": per_op_ns(ct_agg, len(keys))})

    # Closed time-series points: 360 steps a call, all hits but the open one.
    steps = [("http_request", "ms", 1, 10, 1_773_835_200 + 10 * i) for i in range(360)]
    ttl_plain: dict = {}
    ttl_ct = cachetools.TTLCache(50_000, ttl=10.0, timer=time.monotonic)
    now = time.monotonic()
    for k in steps:
        ttl_plain[k] = (now, k)
        ttl_ct[k] = k

    def hand_ts():
        clock = time.monotonic()
        for k in steps:
            hit = ttl_plain.get(k)
            if hit is not None and clock - hit[0] < 10.0:
                pass

    def ct_ts():
        for k in steps:
            ttl_ct.get(k)

    row("ts point", {"hand": per_op_ns(hand_ts, len(steps)), "TTLCache": per_op_ns(ct_ts, len(steps))})


def run_names(fn, names):
    return lambda: [fn(n) for n in names]


def part2(tree: str) -> None:
    from backend.core.aggregate import BatchAccumulator
    from backend.core.events import Event
    from backend.core.timefmt import iso_ms

    try:
        from backend.core.window import WindowStats
    except ImportError:
        from backend.core.aggregate import WindowStats

    print(f"part 2: the code of {tree}")
    rng = random.Random(5)
    stamps = [1_773_835_200 + i / 1000 for i in range(50_000)]
    row("iso_ms", {"": per_op_ns(lambda: [iso_ms(t) for t in stamps], len(stamps))})

    events = [
        Event(
            {"tags": {"endpoint": f"/e{rng.randint(0, 20)}"}},
            1_773_835_200 + i / 20_000,
            f"metric_{i % 10}",
            {"ms": float(int(rng.lognormvariate(4, 1))), "bytes": float(rng.randint(100, 5000))},
            rng.random() < 0.05,
        )
        for i in range(20_000)
    ]

    # A backlog: the same events spread over an hour, about one per (second, metric) group.
    late = [
        Event(ev.data, 1_773_835_200 + i * 3600 / len(events), ev.metric, ev.fields, ev.error)
        for i, ev in enumerate(events)
    ]

    def accumulate(tags: int, batch=events):
        acc = BatchAccumulator(tags)
        for ev in batch:
            acc.add(ev)
        acc.deltas()
        acc.tag_deltas()

    row(
        "acc.add",
        {
            "no tags": per_op_ns(lambda: accumulate(0), len(events)),
            "tags": per_op_ns(lambda: accumulate(100), len(events)),
            "late, tags": per_op_ns(lambda: accumulate(100, late), len(events)),
        },
    )

    names = {
        f"metric_{m}|field_{f}|b:p{b}".encode(): b"1" for m in range(10) for f in range(3) for b in range(200)
    }

    def first_merge():
        WindowStats().merge_hash(names)

    row("new slots", {"per name": per_op_ns(first_merge, len(names))})


def part3(tree: str) -> None:
    """The read caches where they serve: whole Store calls against an embedded Redis."""
    from backend.cli.embedded_redis import EmbeddedRedis
    from backend.storage.keys import Keys
    from backend.storage.store import Store, connect

    print(f"part 3: Store reads of {tree} (embedded Redis, every cacheable part cached)")
    with EmbeddedRedis() as server:
        store = Store(
            connect(server.url), Keys(prefix="bench:"), recent_max=10, retention_s=3600, dead_letter_max=10
        )
        now = time.time()
        store.aggregate(60, now=now)
        runs = timeit.repeat(lambda: store.aggregate(60, now=now), number=200, repeat=REPEAT)
        print(f"  aggregate (a hit)        {min(runs) / 200 * 1e6:7.1f} us a call")
        for window, step in ((3600, 1), (3600, 10)):
            store.timeseries(window, step, None, None, now=now)  # fills the cache of closed points
            runs = timeit.repeat(
                lambda w=window, s=step: store.timeseries(w, s, None, None, now=now), number=5, repeat=REPEAT
            )
            print(f"  timeseries {window // step:>4} points  {min(runs) / 5 * 1000:7.2f} ms a call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--part", choices=("1", "2", "3", "all"), default="all")
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    if args.part in ("1", "all"):
        part1()
    if args.part in ("2", "all"):
        part2(args.tree)
    if args.part in ("3", "all"):
        part3(args.tree)


if __name__ == "__main__":
    main()
