"""The benchmark sections. Each returns a plain dict that goes into the JSON as it is.

Conventions:
- Rates are events per second; latencies in ms; CPU in % of one core (200% = both cores here).
- Every figure comes from a measurement in this run; when something could not be measured the
  field is None and a note says why. Nothing is extrapolated.
- A section gets its own channel and key prefix, and its own server process (started fresh so
  its RSS and CPU belong to that section alone).
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench import profile as prof
from bench.harness import CpuMeter, Names, Redis, Server, seq_counter, stats_accepted, wait_accepted
from bench.latency import Histogram, percentiles_ms
from bench.proto import Helper, HelperError

INGEST_PUBSUB_LIMIT = "pubsub 0 0 0"


@dataclass
class Bench:
    """What every section needs: the options, the shared Redis, where to write, the log."""

    opts: object
    redis: Redis
    out_dir: Path
    py_spy: str | None
    say: object = print
    tag: str = field(default_factory=lambda: f"b{random.randrange(16**6):06x}-")
    _step: int = 0

    @property
    def log_dir(self) -> Path:
        return self.out_dir / "logs"

    @property
    def profile_dir(self) -> Path:
        return self.out_dir / "profiles"

    def next_step(self) -> int:
        self._step += 1
        return self._step

    def env(self) -> dict | None:
        return None

    @property
    def stream_transport(self) -> bool:
        """--server-env INGEST_TRANSPORT=stream: the publishers XADD to the section's stream."""
        return dict(self.opts.server_env).get("INGEST_TRANSPORT", "pubsub") == "stream"

    def _stream_args(self, names: Names) -> list[str]:
        if not self.stream_transport:
            return []
        from backend.config import Config

        maxlen = dict(self.opts.server_env).get("INGEST_STREAM_MAXLEN") or Config.INGEST_STREAM_MAXLEN
        return ["--stream", names.stream, "--maxlen", str(maxlen)]

    def publishers(self, names: Names, n: int) -> list[Helper]:
        helpers = []
        for pub in range(n):
            helpers.append(
                Helper(
                    "bench.publisher",
                    [
                        "--redis-url",
                        self.redis.url,
                        "--channel",
                        names.channel,
                        "--tag",
                        self.tag,
                        "--pub",
                        str(pub),
                        "--seed",
                        str(self.opts.seed),
                        *self._stream_args(names),
                    ],
                    log_path=self.log_dir / f"publisher-{pub}.log",
                    name=f"publisher-{pub}",
                )
            )
        for h in helpers:
            h.recv(timeout=30)
        return helpers

    def clients(self, server: Server, n: int, procs: int) -> list[Helper]:
        procs = max(1, min(procs, n))
        sizes = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        helpers = [
            Helper(
                "bench.clients",
                ["--url", server.url, "--clients", str(size), "--tag", self.tag, "--window", "60"],
                log_path=self.log_dir / f"clients-{i}.log",
                name=f"clients-{i}",
            )
            for i, size in enumerate(sizes)
        ]
        try:
            for h in helpers:
                h.recv(timeout=60)
        except Exception:
            close_all(helpers)
            raise
        return helpers

    def server(
        self,
        names: Names,
        *,
        async_mode: str = "eventlet",
        strategy: str = "batch",
        label: str,
        env: dict | None = None,
    ) -> Server:
        return Server(
            self.redis.url,
            names,
            self.log_dir,
            async_mode=async_mode,
            strategy=strategy,
            label=label,
            extra_env={**(env or {}), **dict(self.opts.server_env)},
        ).wait_ready()


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def close_all(helpers) -> None:
    for h in helpers:
        with contextlib.suppress(Exception):
            h.close()


def _r(x, nd=1):
    return None if x is None else round(x, nd)


# ==========================================================================================
# 1. ingest
# ==========================================================================================
def ingest(
    bench: Bench, *, events: int, publishers: int, async_mode: str = "eventlet", profile: bool = False
) -> dict:
    """Burst `events` through Redis: first to a bare subscriber, then to the server's worker."""
    names = Names()
    per_pub = [events // publishers + (1 if i < events % publishers else 0) for i in range(publishers)]
    # A burst outruns any consumer for a moment; with Redis's default pubsub output limit
    # (32 MB hard) the backlog of 200k events can get the subscriber disconnected. This section
    # measures throughput, so the limit is lifted for it and restored afterwards.
    previous_limit = bench.redis.set_pubsub_limit(INGEST_PUBSUB_LIMIT)
    pubs = bench.publishers(names, publishers)
    out: dict = {
        "async_mode": async_mode,
        "transport": "stream" if bench.stream_transport else "pubsub",
        "events": events,
        "publishers": publishers,
        "event_bytes_avg": None,
        "redis_pubsub_limit": INGEST_PUBSUB_LIMIT,
    }
    server = None
    try:
        # --- the bare subscriber, alone on the channel (or a bare consumer group on the stream) --
        bare = Helper(
            "bench.subscriber",
            [
                "--redis-url",
                bench.redis.url,
                "--channel",
                names.channel,
                *(["--stream", names.stream] if bench.stream_transport else []),
            ],
            log_path=bench.log_dir / "subscriber.log",
            name="subscriber",
        )
        try:
            bare.recv(timeout=30)
            step = bench.next_step()
            for h, n in zip(pubs, per_pub, strict=True):
                h.request({"cmd": "prepare", "mode": "burst", "count": n, "step": step}, timeout=120)
            bare.send({"cmd": "count", "expected": events, "timeout": 10})
            meter = CpuMeter({"redis": bench.redis.proc, "subscriber": _ps(bare.pid)}).start()
            pub_results = _go(pubs, timeout=120 + events / 1000)
            sub = bare.recv(timeout=120 + events / 1000)
            cpu = meter.stop()
        finally:
            close_all([bare])
        first_pub = min(p["first_pub"] for p in pub_results)
        out["bare"] = {
            "received": sub["received"],
            "rate": sub["rate"],  # first -> last message received, as a bare reader sees it
            "rate_from_first_publish": _r(
                (sub["received"] / (sub["last_recv"] - first_pub)) if sub["last_recv"] else None
            ),
            "publish_rate": _r(events / (max(p["last_pub"] for p in pub_results) - first_pub)),
            "cpu_pct": cpu,
        }

        # --- the server's worker --------------------------------------------------------------
        bench.redis.client.delete(names.stream)  # the bare reader's entries are not the worker's
        server = bench.server(names, async_mode=async_mode, label="ingest")
        rss_before = server.rss()
        step = bench.next_step()
        for h, n in zip(pubs, per_pub, strict=True):
            h.request({"cmd": "prepare", "mode": "burst", "count": n, "step": step}, timeout=120)
        profiler = (
            prof.profile_or_none(bench.py_spy, server.pid, bench.profile_dir / f"ingest-{async_mode}.txt")
            if profile
            else None
        )
        if profiler:
            time.sleep(1.0)  # let py-spy attach before the burst starts
        meter = CpuMeter({"server": server.ps, "redis": bench.redis.proc}).start()
        pub_results = _go(pubs, timeout=120 + events / 1000)
        first_pub = min(p["first_pub"] for p in pub_results)
        last_pub = max(p["last_pub"] for p in pub_results)
        done_at, accepted = wait_accepted(bench.redis.client, names, events, timeout=max(60.0, events / 2000))
        cpu = meter.stop()
        if profiler:
            path = profiler.stop()
            out["profile"] = prof.summarize(path) if path else {"error": "py-spy wrote nothing"}
            out["profile_file"] = str(path) if path else None
        stats = {k.decode(): int(v) for k, v in bench.redis.client.hgetall(f"{names.prefix}stats").items()}
        worker_rate = events / (done_at - first_pub) if done_at else None
        out["worker"] = {
            "accepted": accepted,
            "received": stats.get("received", 0),
            "rejected": stats.get("rejected", 0),
            "completed": done_at is not None,
            "elapsed_s": _r(done_at - first_pub, 3) if done_at else None,
            "rate": _r(worker_rate),  # first PUBLISH -> stats.accepted == N
            "publish_rate": _r(events / (last_pub - first_pub)),
            "cpu_pct": cpu,
            "rss_mb_before": _mb(rss_before),
            "rss_mb_after": _mb(server.rss()),
            "profiled": profiler is not None,
        }
        bare_rate = out["bare"]["rate"]
        out["ratio_to_bare"] = _r(worker_rate / bare_rate, 3) if worker_rate and bare_rate else None
        out["event_bytes_avg"] = _avg_event_bytes(bench.redis.client, names)
    finally:
        if server:
            server.stop()
        close_all(pubs)
        bench.redis.client.config_set("client-output-buffer-limit", previous_limit)
    return out


LATE_MARGIN_S = 120  # spread events stay this far inside RETENTION_S, so none turns stale mid-run


def late(bench: Bench, *, events: int, publishers: int, rounds: int = 2, profile: bool = False) -> dict:
    """Ingest rate of live events vs events stamped uniformly over the last hour, same server.

    Both bursts go through the same server one after the other (in-order first), `rounds` times,
    with the section's transport; each kind's best round is reported (on a machine shared with
    other work the worst rounds measure the neighbours), every round is in `rounds`. A live batch touches a handful of per-second buckets; a spread one
    touches up to a thousand distinct seconds per metric, which is what a backlog flush or a
    history import looks like. The Pub/Sub output limit is lifted as in `ingest`: this measures
    throughput, not the disconnect (issue 15 covers that separately)."""
    from backend.config import Config

    retention = int(dict(bench.opts.server_env).get("RETENTION_S") or Config.RETENTION_S)
    spread_s = max(60, retention - LATE_MARGIN_S)
    names = Names()
    per_pub = [events // publishers + (1 if i < events % publishers else 0) for i in range(publishers)]
    previous_limit = bench.redis.set_pubsub_limit(INGEST_PUBSUB_LIMIT)
    pubs = bench.publishers(names, publishers)
    out: dict = {
        "transport": "stream" if bench.stream_transport else "pubsub",
        "events": events,
        "publishers": publishers,
        "spread_s": spread_s,
    }
    server = None
    try:
        server = bench.server(names, label="late")
        plan = [("in_order", 0.0), ("spread", float(spread_s))] * max(1, rounds)
        out["rounds"] = []
        for n_run, (kind, spread) in enumerate(plan):
            step = bench.next_step()
            for h, n in zip(pubs, per_pub, strict=True):
                h.request(
                    {"cmd": "prepare", "mode": "burst", "count": n, "step": step, "spread_s": spread},
                    timeout=120,
                )
            before = stats_accepted(bench.redis.client, names)
            profiler = (
                prof.profile_or_none(bench.py_spy, server.pid, bench.profile_dir / f"late-{kind}.txt")
                if profile and n_run >= len(plan) - 2  # the last round only
                else None
            )
            if profiler:
                time.sleep(1.0)
            meter = CpuMeter({"server": server.ps, "redis": bench.redis.proc}).start()
            pub_results = _go(pubs, timeout=120 + events / 1000)
            first_pub = min(p["first_pub"] for p in pub_results)
            done_at, accepted = wait_accepted(
                bench.redis.client, names, before + events, timeout=max(60.0, events / 1000)
            )
            cpu = meter.stop()
            run = {
                "kind": kind,
                "accepted": accepted - before,
                "completed": done_at is not None,
                "elapsed_s": _r(done_at - first_pub, 3) if done_at else None,
                "rate": _r(events / (done_at - first_pub)) if done_at else None,
                "publish_rate": _r(events / (max(p["last_pub"] for p in pub_results) - first_pub)),
                "cpu_pct": cpu,
            }
            if profiler:
                path = profiler.stop()
                run["profile"] = prof.summarize(path) if path else {"error": "py-spy wrote nothing"}
                run["profile_file"] = str(path) if path else None
            out["rounds"].append(run)
            best = out.get(kind)
            if best is None or (run["rate"] or 0) > (best["rate"] or 0):
                out[kind] = run
        stats = {k.decode(): int(v) for k, v in bench.redis.client.hgetall(f"{names.prefix}stats").items()}
        out["rejected"] = stats.get("rejected", 0)
        live, spread_rate = out["in_order"]["rate"], out["spread"]["rate"]
        out["ratio"] = _r(spread_rate / live, 3) if live and spread_rate else None
    finally:
        if server:
            server.stop()
        close_all(pubs)
        bench.redis.client.config_set("client-output-buffer-limit", previous_limit)
    return out


def _avg_event_bytes(client, names: Names) -> float | None:
    items = client.lrange(names.recent, 0, 99)
    return round(sum(len(i) for i in items) / len(items), 1) if items else None


def _go(pubs: list[Helper], timeout: float) -> list[dict]:
    for h in pubs:
        h.send({"cmd": "go"})
    return [h.recv(timeout=timeout) for h in pubs]


def _ps(pid: int):
    import psutil

    return psutil.Process(pid)


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


# ==========================================================================================
# 2/3. fan-out steps
# ==========================================================================================
def fanout_step(
    bench: Bench,
    server: Server,
    clients: list[Helper],
    pubs: list[Helper],
    *,
    rate: float,
    duration: float,
    n_clients: int,
    profile_path: Path | None = None,
) -> dict:
    opts = bench.opts
    step = bench.next_step()
    per_pub_rate = rate / len(pubs)
    for h in pubs:
        h.request(
            {"cmd": "prepare", "mode": "paced", "rate": per_pub_rate, "duration": duration, "step": step},
            timeout=60,
        )
    procs = {"server": server.ps, "redis": bench.redis.proc}
    procs.update({h.name: _ps(h.pid) for h in clients})
    procs.update({h.name: _ps(h.pid) for h in pubs})
    profiler = prof.profile_or_none(bench.py_spy, server.pid, profile_path) if profile_path else None
    if profiler:
        time.sleep(1.0)
    seq_before = seq_counter(bench.redis.client, server.names)
    meter = CpuMeter(procs).start()
    pub_results = _go(pubs, timeout=duration * 3 + 60)
    cpu = meter.stop()
    profile_summary = None
    if profiler:
        path = profiler.stop()
        profile_summary = prof.summarize(path) if path else {"error": "py-spy wrote nothing"}
    published = sum(p["published"] for p in pub_results)
    first_pub = min(p["first_pub"] for p in pub_results)
    last_pub = max(p["last_pub"] for p in pub_results)
    for h in clients:
        h.send({"cmd": "report", "step": step, "expected": published, "timeout": opts.drain_seconds})
    reports = [h.recv(timeout=opts.drain_seconds + 60) for h in clients]
    # Events the worker had not even taken from Redis when the clients gave up waiting: a
    # missing event with a backlog is late, one without is lost on the way to the client.
    backlog = published - (seq_counter(bench.redis.client, server.names) - seq_before)

    per_client = [c for r in reports for c in r["clients"]]
    received = [c["received"] for c in per_client]
    order_errors = sum(c["order_errors"] for c in per_client)
    foreign = sum(c["foreign"] for c in per_client)
    disconnected = sum(1 for c in per_client if not c["connected"])
    hist = Histogram.from_sparse([r["latency"] for r in reports])
    # Every helper saw the same distinct packets; check each helper's set independently.
    coverage_ok = True
    for r in reports:
        d = r["distinct"]
        pubs_seen = d["pubs"]
        if d["events"] != published or d["unique_keys"] != published:
            coverage_ok = False
        for i, p in enumerate(pub_results):
            seen = pubs_seen.get(str(i))
            if p["published"] and seen != [p["published"], 0, p["published"] - 1]:
                coverage_ok = False
    last_recv = max((c["last_recv"] or 0.0) for c in per_client) if per_client else 0.0
    lost = sum(max(0, published - n) for n in received)
    exact = (
        all(n == published for n in received)
        and order_errors == 0
        and foreign == 0
        and coverage_ok
        and len(received) == n_clients
    )
    achieved = published / max(last_pub - first_pub, 1e-9)
    tail_lag = (last_recv - last_pub) if last_recv else None
    publisher_ok = achieved >= 0.95 * rate
    kept_up = exact and publisher_ok and tail_lag is not None and tail_lag <= 1.0
    lat = hist.summary()
    client_cpu = [cpu.get(h.name) for h in clients]
    out = {
        "step": step,
        "clients": n_clients,
        "target_rate": rate,
        "duration_s": duration,
        "published": published,
        "publish_rate": _r(achieved),
        "publisher_max_behind_s": max(p["max_behind_s"] for p in pub_results),
        "received_min": min(received) if received else 0,
        "received_max": max(received) if received else 0,
        "lost": lost,
        "server_backlog_at_report": max(0, backlog),
        "order_errors": order_errors,
        "foreign": foreign,
        "disconnected": disconnected,
        "coverage_ok": coverage_ok,
        "exactly_once": exact,
        "tail_lag_s": _r(tail_lag, 3),
        "latency_ms": lat,
        "server_cpu_pct": cpu.get("server"),
        "server_rss_mb": _mb(server.rss()),
        "redis_cpu_pct": cpu.get("redis"),
        "redis_used_memory_mb": _mb(bench.redis.used_memory()),
        "client_procs_cpu_pct": client_cpu,
        "machine_cpu_pct": cpu.get("machine"),
        "others_cpu_pct": cpu.get("others"),
        "publisher_cpu_pct": [cpu.get(h.name) for h in pubs],
        "clients_saturated": any((c or 0) >= 90.0 for c in client_cpu),
        "publisher_ok": publisher_ok,
        "kept_up": kept_up,
        "decode_cache": [r["decode_cache"] for r in reports],
    }
    if profile_summary is not None:
        out["profile"] = profile_summary
        out["profile_file"] = str(profile_path)
    return out


def meets(step: dict, latency_ms: float) -> bool:
    p99 = step["latency_ms"]["p99_ms"]
    return bool(step["kept_up"] and p99 is not None and p99 <= latency_ms)


def ladder(
    bench: Bench,
    *,
    n_clients: int,
    rates: list[float],
    strategy: str = "batch",
    async_mode: str = "eventlet",
    label: str,
    duration: float | None = None,
    profile_rate: float | None = None,
) -> dict:
    """One server, `n_clients` clients, the rates in increasing order."""
    opts = bench.opts
    duration = duration or opts.step_seconds
    names = Names()
    server = bench.server(names, async_mode=async_mode, strategy=strategy, label=label)
    clients: list[Helper] = []
    pubs: list[Helper] = []
    steps: list[dict] = []
    out = {"clients": n_clients, "strategy": strategy, "async_mode": async_mode, "steps": steps}
    try:
        clients = bench.clients(server, n_clients, opts.client_procs)
        pubs = bench.publishers(names, opts.fanout_publishers)
        out["server_rss_mb_idle"] = _mb(server.rss())
        stop_reason = None
        for rate in rates:
            if stop_reason:
                steps.append({"target_rate": rate, "skipped": stop_reason})
                continue
            bench.say(
                f"  {label}: {n_clients} clients, {strategy}, {async_mode}, {rate:g}/s for {duration:g}s ..."
            )
            step = fanout_step(
                bench, server, clients, pubs, rate=rate, duration=duration, n_clients=n_clients
            )
            steps.append(step)
            bench.say("    " + _step_line(step))
            if not step["kept_up"] and not opts.keep_going:
                stop_reason = f"{rate:g}/s did not keep up"
        if profile_rate and bench.py_spy:
            bench.say(f"  {label}: profiling {n_clients} clients at {profile_rate:g}/s ...")
            with contextlib.suppress(HelperError):
                step = fanout_step(
                    bench,
                    server,
                    clients,
                    pubs,
                    rate=profile_rate,
                    duration=duration,
                    n_clients=n_clients,
                    profile_path=bench.profile_dir
                    / f"fanout-{strategy}-{async_mode}-{n_clients}c-{int(profile_rate)}.txt",
                )
                step["profiled"] = True
                out["profiled_step"] = step
    finally:
        close_all(clients)
        close_all(pubs)
        server.stop()
    return out


def _step_line(s: dict) -> str:
    lat = s["latency_ms"]
    return (
        f"published {s['published']} ({s['publish_rate']:.0f}/s), received min {s['received_min']}, "
        f"lost {s['lost']}, p50/p95/p99 {lat['p50_ms']}/{lat['p95_ms']}/{lat['p99_ms']} ms, "
        f"server CPU {s['server_cpu_pct']}%, clients CPU {s['client_procs_cpu_pct']}, "
        f"{'kept up' if s['kept_up'] else 'DID NOT keep up'}"
    )


def sustainable(result: dict, latency_ms: float) -> dict:
    """Highest rate of a ladder that met the criterion, and whether the ladder's top was reached."""
    best = None
    steps = [s for s in result["steps"] if "skipped" not in s]
    for s in steps:
        if meets(s, latency_ms):
            best = s["target_rate"]
    top = max((s["target_rate"] for s in result["steps"]), default=None)
    return {"rate": best, "latency_ms": latency_ms, "lower_bound_only": best is not None and best == top}


def fanout(bench: Bench) -> dict:
    opts = bench.opts
    runs = []
    for n in opts.fanout_clients:
        profile_rate = opts.profile_fanout_rate if (opts.profile and n == max(opts.fanout_clients)) else None
        runs.append(
            ladder(
                bench, n_clients=n, rates=opts.fanout_rates, label=f"fanout-{n}c", profile_rate=profile_rate
            )
        )
    return {
        "latency_target_ms": opts.latency_ms,
        "runs": runs,
        "sustainable": {str(r["clients"]): sustainable(r, opts.latency_ms) for r in runs},
    }


def baseline(bench: Bench, fanout_result: dict | None) -> dict:
    opts = bench.opts
    n = opts.baseline_clients
    per_event = ladder(
        bench, n_clients=n, rates=opts.baseline_rates, strategy="per_event", label=f"baseline-{n}c"
    )
    batch = None
    if fanout_result:
        batch = next((r for r in fanout_result["runs"] if r["clients"] == n), None)
    if batch is None:
        batch = ladder(bench, n_clients=n, rates=opts.fanout_rates, label=f"batch-{n}c")
    out = {"clients": n, "per_event": per_event, "batch": batch, "criteria": {}}
    for ms in (opts.latency_ms, opts.baseline_latency_ms):
        b = sustainable(batch, ms)
        p = sustainable(per_event, ms)
        out["criteria"][f"p99<={ms:g}ms"] = {
            "batch_rate": b["rate"],
            "batch_lower_bound_only": b["lower_bound_only"],
            "per_event_rate": p["rate"],
            "per_event_lower_bound_only": p["lower_bound_only"],
            "ratio": _r(b["rate"] / p["rate"], 1) if b["rate"] and p["rate"] else None,
        }
    return out


# ==========================================================================================
# 4. queries
# ==========================================================================================
QUERY_METRICS = ("api.latency", "db.query", "cache.get", "queue.job", "checkout")


def fill_hour(bench: Bench, names: Names, *, rate: float, window_s: int = 3600, chunk_s: int = 30) -> dict:
    """Write `rate` events/s worth of aggregates for the past `window_s` seconds, straight through
    the store (validate -> BatchAccumulator -> Store.write_batch), as the worker would have."""
    from backend.core.aggregate import BatchAccumulator
    from backend.core.events import validate
    from backend.keys import Keys
    from backend.store import Store

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
                    bench.py_spy, server.pid, bench.profile_dir / f"queries-{_slug(label)}-aggregate-3600.txt"
                )
                if profiler:
                    time.sleep(1.0)
                    _time_requests(http, url, opts.query_requests)  # profiled requests: not timed
                    profile_path = profiler.stop()
                    entry["profile"] = prof.summarize(profile_path) if profile_path else None
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
    fill["redis_used_memory_mb"] = _mb(bench.redis.used_memory())
    server = bench.server(names, label="queries")
    pubs: list[Helper] = []
    out: dict = {
        "fill": fill,
        "requests_per_endpoint": opts.query_requests,
        "live_rate": opts.query_live_rate,
    }
    try:
        meter = CpuMeter({"server": server.ps, "redis": bench.redis.proc}).start()
        out["at_rest"] = _measure_queries(bench, server, label="at rest", profile=opts.profile)
        out["at_rest_cpu_pct"] = meter.stop()
        # Live: a paced publisher keeps the worker writing while we read. It is sized to outlast
        # the reads and stopped (killed) when they are done.
        pubs = bench.publishers(names, 1)
        pubs[0].request(
            {
                "cmd": "prepare",
                "mode": "paced",
                "rate": opts.query_live_rate,
                "duration": 600,
                "step": bench.next_step(),
            },
            timeout=60,
        )
        pubs[0].send({"cmd": "go"})
        time.sleep(1.0)
        meter = CpuMeter({"server": server.ps, "redis": bench.redis.proc}).start()
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


# ==========================================================================================
# 5. soak
# ==========================================================================================
def soak(bench: Bench) -> dict:
    opts = bench.opts
    names = Names()
    server = bench.server(names, label="soak")
    clients: list[Helper] = []
    pubs: list[Helper] = []
    samples: list[dict] = []
    try:
        clients = bench.clients(server, opts.soak_clients, opts.client_procs)
        pubs = bench.publishers(names, opts.fanout_publishers)
        step = bench.next_step()
        per_pub = opts.soak_rate / len(pubs)
        for h in pubs:
            h.request(
                {
                    "cmd": "prepare",
                    "mode": "paced",
                    "rate": per_pub,
                    "duration": opts.soak_seconds,
                    "step": step,
                },
                timeout=60,
            )
        t0 = time.monotonic()

        def sample() -> None:
            samples.append(
                {
                    "t_s": round(time.monotonic() - t0, 1),
                    "server_rss_mb": _mb(server.rss()),
                    "redis_used_memory_mb": _mb(bench.redis.used_memory()),
                    "accepted": stats_accepted(bench.redis.client, names),
                }
            )

        sample()
        bench.say(
            f"  soak: {opts.soak_clients} clients at {opts.soak_rate:g}/s for {opts.soak_seconds:g}s ..."
        )
        procs = {"server": server.ps, "redis": bench.redis.proc}
        procs.update({h.name: _ps(h.pid) for h in clients})
        meter = CpuMeter(procs).start()
        for h in pubs:
            h.send({"cmd": "go"})
        results: list[dict | None] = [None] * len(pubs)
        interval = max(1.0, min(10.0, opts.soak_seconds / 30))
        next_sample = time.monotonic() + interval
        while any(r is None for r in results):
            for i, h in enumerate(pubs):
                if results[i] is None:
                    results[i] = h.poll(timeout=0.05)
            if time.monotonic() >= next_sample:
                sample()
                next_sample += interval
            if time.monotonic() - t0 > opts.soak_seconds * 3 + 120:
                raise RuntimeError("soak publishers did not finish")
        cpu = meter.stop()
        sample()
        published = sum(r["published"] for r in results)
        first_pub = min(r["first_pub"] for r in results)
        last_pub = max(r["last_pub"] for r in results)
        for h in clients:
            h.send({"cmd": "report", "step": step, "expected": published, "timeout": opts.drain_seconds})
        reports = [h.recv(timeout=opts.drain_seconds + 120) for h in clients]
        sample()
    finally:
        close_all(clients)
        close_all(pubs)
        server.stop()
    per_client = [c for r in reports for c in r["clients"]]
    received = [c["received"] for c in per_client]
    hist = Histogram.from_sparse([r["latency"] for r in reports])
    warm = next((s for s in samples if s["t_s"] >= opts.soak_seconds * 0.1), samples[0])
    end = samples[-1]
    start = samples[0]
    rss = [s["server_rss_mb"] for s in samples]
    return {
        "seconds": opts.soak_seconds,
        "target_rate": opts.soak_rate,
        "clients": opts.soak_clients,
        "published": published,
        "publish_rate": _r(published / max(last_pub - first_pub, 1e-9)),
        "received_min": min(received),
        "received_max": max(received),
        "lost": sum(max(0, published - n) for n in received),
        "order_errors": sum(c["order_errors"] for c in per_client),
        "exactly_once": all(n == published for n in received)
        and all(c["order_errors"] == 0 for c in per_client),
        "latency_ms": hist.summary(),
        "cpu_pct": cpu,
        "server_rss_mb": {
            "start": start["server_rss_mb"],
            "warm": warm["server_rss_mb"],
            "warm_at_s": warm["t_s"],
            "end": end["server_rss_mb"],
            "max": max(rss),
        },
        "rss_drift_pct_from_warm": _r(
            100.0 * (end["server_rss_mb"] - warm["server_rss_mb"]) / warm["server_rss_mb"]
        ),
        "rss_drift_pct_from_start": _r(
            100.0 * (end["server_rss_mb"] - start["server_rss_mb"]) / start["server_rss_mb"]
        ),
        "redis_used_memory_mb": {
            "start": start["redis_used_memory_mb"],
            "warm": warm["redis_used_memory_mb"],
            "end": end["redis_used_memory_mb"],
        },
        "samples": samples,
    }


# ==========================================================================================
# 6. async modes
# ==========================================================================================
def modes(bench: Bench) -> dict:
    opts = bench.opts
    out = {}
    for mode in opts.modes:
        bench.say(f"  modes: {mode}: ingest {opts.modes_events} events ...")
        entry: dict = {}
        try:
            entry["ingest"] = ingest(
                bench, events=opts.modes_events, publishers=opts.publishers, async_mode=mode
            )
            bench.say(
                f"    worker {entry['ingest']['worker']['rate']}/s, bare {entry['ingest']['bare']['rate']}/s"
            )
            entry["fanout"] = ladder(
                bench,
                n_clients=opts.modes_clients,
                rates=[opts.modes_rate],
                async_mode=mode,
                label=f"modes-{mode}",
            )
        except Exception as exc:  # one mode failing (e.g. gevent missing) must not lose the others
            entry["error"] = f"{type(exc).__name__}: {exc}"
            bench.say(f"    {mode} failed: {entry['error']}")
        out[mode] = entry
    return out
