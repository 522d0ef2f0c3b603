"""The `queries` section: REST reads over an hour of buckets, at rest and under live ingest."""

from __future__ import annotations

import random
import time

import requests

from bench import profile as prof
from bench.context import Bench, close_all, mb, prepare_paced, slug
from bench.harness import Names, Server
from bench.latency import percentiles_ms
from bench.proto import Helper

QUERY_METRICS = ("api.latency", "db.query", "cache.get", "queue.job", "checkout")


def fill_hour(bench: Bench, names: Names, *, rate: float, window_s: int = 3600, chunk_s: int = 30) -> dict:
    """Write `rate` events/s worth of aggregates for the past `window_s` seconds, straight through
    the store (validate -> BatchAccumulator -> Store.write_batch), as the worker would have."""
    from backend.core.aggregate import BatchAccumulator
    from backend.core.events import validate
    from backend.storage.keys import Keys
    from backend.storage.store import Store

    store = Store(
        bench.redis.client,
        Keys(prefix=names.prefix, recent=names.recent),
        recent_max=500,
        retention_s=3600,
        dead_letter_max=1000,
    )
    rng = random.Random(bench.opts.seed)
    now = time.time()
    start = now - window_s + 5  # a little inside the retention, so nothing is stale by the time it's written
    total = 0
    t0 = time.perf_counter()
    validate_s = write_s = 0.0
    chunk_start = start
    while chunk_start < now:
        chunk_end = min(now, chunk_start + chunk_s)
        n = int(rate * (chunk_end - chunk_start))
        acc = BatchAccumulator()
        v0 = time.perf_counter()
        for _ in range(n):
            obj = {
                "metric": QUERY_METRICS[rng.randrange(5)],
                "value": {"ms": round(rng.lognormvariate(3.5, 0.8), 2), "bytes": rng.randrange(200, 20000)},
                "ts": rng.uniform(chunk_start, chunk_end),
                "status": "error" if rng.random() < 0.02 else "ok",
            }
            acc.add(validate(obj, now=now, retention_s=3600, future_tolerance_s=300))
        deltas = acc.deltas()
        w0 = time.perf_counter()
        store.write_batch([], deltas, [], received=0)
        write_s += time.perf_counter() - w0
        validate_s += w0 - v0
        total += n
        chunk_start = chunk_end
    elapsed = time.perf_counter() - t0
    return {
        "events": total,
        "window_s": window_s,
        "rate_per_s_of_data": rate,
        "elapsed_s": round(elapsed, 2),
        "fill_events_per_s": round(total / elapsed, 1),
        "validate_aggregate_s": round(validate_s, 2),
        "redis_write_s": round(write_s, 2),
        "first_ts": start,
        "last_ts": now,
    }


QUERY_ENDPOINTS = {
    "aggregate?window=3600": "/api/metrics/aggregate?window=3600",
    "aggregate?window=60": "/api/metrics/aggregate?window=60",
    "timeseries?window=3600&step=60": "/api/metrics/timeseries?window=3600&step=60",
    "timeseries?window=300&step=5": "/api/metrics/timeseries?window=300&step=5",
}


def _time_requests(http: requests.Session, url: str, n: int) -> tuple[list[float], requests.Response | None]:
    times, last = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        resp = http.get(url, timeout=30)
        times.append(time.perf_counter() - t0)
        if resp.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status_code}: {resp.text[:200]}")
        last = resp
    return times, last


def _measure_queries(bench: Bench, server: Server, *, label: str, profile: bool) -> dict:
    opts = bench.opts
    out = {}
    http = requests.Session()
    try:
        for name, path in QUERY_ENDPOINTS.items():
            url = server.url + path
            _time_requests(http, url, 10)  # warm-up: connection, first-request imports
            entry: dict = {}
            if profile and bench.py_spy and name == "aggregate?window=3600":
                profiler = prof.profile_or_none(
                    bench.py_spy, server.pid, bench.profile_dir / f"queries-{slug(label)}-aggregate-3600.txt"
                )
                if profiler:
                    _time_requests(http, url, opts.query_requests)  # profiled requests: not timed
                    entry.update(profiler.finish())
            times, last = _time_requests(http, url, opts.query_requests)
            data = last.json() if last is not None else {}
            entry.update({**percentiles_ms(times), "bytes": len(last.content) if last is not None else 0})
            if "total" in data:
                entry["total_count"] = data["total"]["count"]
                entry["metrics"] = len(data.get("metrics", {}))
            if "points" in data:
                entry["points"] = len(data["points"])
                entry["count_sum"] = sum(p["count"] for p in data["points"])
            out[name] = entry
            bench.say(
                f"    {label}: GET {path}: p50 {entry['p50_ms']} ms, p95 {entry['p95_ms']} ms ({entry['bytes']} bytes)"
            )
    finally:
        http.close()
    return out


def queries(bench: Bench) -> dict:
    """REST reads over an hour of buckets, twice: with the data at rest, and while events keep
    arriving. The server shares an aggregate between identical requests only while no new batch
    was written (its cache key includes the data version), so at rest most requests are cache
    hits, and under live ingest nearly none are: the second is what a dashboard sees."""
    opts = bench.opts
    names = Names()
    bench.say(f"  queries: filling an hour of buckets at {opts.query_fill_rate:g} events/s of data ...")
    fill = fill_hour(bench, names, rate=opts.query_fill_rate)
    bench.say(f"    {fill['events']} events in {fill['elapsed_s']}s ({fill['fill_events_per_s']:.0f}/s)")
    fill["bucket_keys"] = len(bench.redis.client.keys(f"{names.prefix}agg:*"))
    fill["redis_used_memory_mb"] = mb(bench.redis.used_memory())
    server = bench.server(names, label="queries")
    pubs: list[Helper] = []
    out: dict = {
        "fill": fill,
        "requests_per_endpoint": opts.query_requests,
        "live_rate": opts.query_live_rate,
    }
    try:
        meter = bench.cpu_meter(server)
        out["at_rest"] = _measure_queries(bench, server, label="at rest", profile=opts.profile)
        out["at_rest_cpu_pct"] = meter.stop()
        # Live: a paced publisher keeps the worker writing while we read. It is sized to outlast
        # the reads and stopped (killed) when they are done.
        pubs = bench.publishers(names, 1)
        prepare_paced(pubs, rate=opts.query_live_rate, duration=600, step=bench.next_step())
        pubs[0].send({"cmd": "go"})
        time.sleep(1.0)
        meter = bench.cpu_meter(server)
        out["live"] = _measure_queries(
            bench, server, label=f"live {opts.query_live_rate:g}/s", profile=opts.profile
        )
        out["live_cpu_pct"] = meter.stop()
    finally:
        for h in pubs:
            h.proc.kill()
        close_all(pubs)
        server.stop()
    out["aggregate_3600_p95_ms"] = out["live"]["aggregate?window=3600"]["p95_ms"]
    out["aggregate_3600_p95_ms_at_rest"] = out["at_rest"]["aggregate?window=3600"]["p95_ms"]
    return out
