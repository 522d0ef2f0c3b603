"""The `ingest` and `late` sections: how fast the worker takes a burst of events from Redis."""

from __future__ import annotations

import time

from bench import profile as prof
from bench.context import Bench, close_all, go, mb, process, rnd
from bench.harness import CpuMeter, Names, stats_accepted, wait_accepted
from bench.proto import Helper

INGEST_PUBSUB_LIMIT = "pubsub 0 0 0"


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
            meter = CpuMeter({"redis": bench.redis.proc, "subscriber": process(bare.pid)}).start()
            pub_results = go(pubs, timeout=120 + events / 1000)
            sub = bare.recv(timeout=120 + events / 1000)
            cpu = meter.stop()
        finally:
            close_all([bare])
        first_pub = min(p["first_pub"] for p in pub_results)
        out["bare"] = {
            "received": sub["received"],
            "rate": sub["rate"],  # first -> last message received, as a bare reader sees it
            "rate_from_first_publish": rnd(
                (sub["received"] / (sub["last_recv"] - first_pub)) if sub["last_recv"] else None
            ),
            "publish_rate": rnd(events / (max(p["last_pub"] for p in pub_results) - first_pub)),
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
        pub_results = go(pubs, timeout=120 + events / 1000)
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
            "elapsed_s": rnd(done_at - first_pub, 3) if done_at else None,
            "rate": rnd(worker_rate),  # first PUBLISH -> stats.accepted == N
            "publish_rate": rnd(events / (last_pub - first_pub)),
            "cpu_pct": cpu,
            "rss_mb_before": mb(rss_before),
            "rss_mb_after": mb(server.rss()),
            "profiled": profiler is not None,
        }
        bare_rate = out["bare"]["rate"]
        out["ratio_to_bare"] = rnd(worker_rate / bare_rate, 3) if worker_rate and bare_rate else None
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
            pub_results = go(pubs, timeout=120 + events / 1000)
            first_pub = min(p["first_pub"] for p in pub_results)
            done_at, accepted = wait_accepted(
                bench.redis.client, names, before + events, timeout=max(60.0, events / 1000)
            )
            cpu = meter.stop()
            run = {
                "kind": kind,
                "accepted": accepted - before,
                "completed": done_at is not None,
                "elapsed_s": rnd(done_at - first_pub, 3) if done_at else None,
                "rate": rnd(events / (done_at - first_pub)) if done_at else None,
                "publish_rate": rnd(events / (max(p["last_pub"] for p in pub_results) - first_pub)),
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
        out["ratio"] = rnd(spread_rate / live, 3) if live and spread_rate else None
    finally:
        if server:
            server.stop()
        close_all(pubs)
        bench.redis.client.config_set("client-output-buffer-limit", previous_limit)
    return out


def _avg_event_bytes(client, names: Names) -> float | None:
    items = client.lrange(names.recent, 0, 99)
    return round(sum(len(i) for i in items) / len(items), 1) if items else None
