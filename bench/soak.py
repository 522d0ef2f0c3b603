"""The `soak` section: a steady rate to a few clients for minutes; memory drift and delivery."""

from __future__ import annotations

import time

from bench.context import Bench, close_all, mb, prepare_paced, publish_span, rnd
from bench.fanout import deliveries
from bench.harness import Names, stats_accepted
from bench.proto import Helper


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
        prepare_paced(pubs, rate=opts.soak_rate, duration=opts.soak_seconds, step=step)
        t0 = time.monotonic()

        def sample() -> None:
            samples.append(
                {
                    "t_s": round(time.monotonic() - t0, 1),
                    "server_rss_mb": mb(server.rss()),
                    "redis_used_memory_mb": mb(bench.redis.used_memory()),
                    "accepted": stats_accepted(bench.redis.client, names),
                }
            )

        sample()
        bench.say(
            f"  soak: {opts.soak_clients} clients at {opts.soak_rate:g}/s for {opts.soak_seconds:g}s ..."
        )
        meter = bench.cpu_meter(server, clients)
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
        first_pub, last_pub = publish_span(results)
        got = deliveries(bench, clients, step=step, published=published, slack_s=120)
        sample()
    finally:
        close_all(clients)
        close_all(pubs)
        server.stop()
    warm = next((s for s in samples if s["t_s"] >= opts.soak_seconds * 0.1), samples[0])
    end = samples[-1]
    start = samples[0]
    rss = [s["server_rss_mb"] for s in samples]
    return {
        "seconds": opts.soak_seconds,
        "target_rate": opts.soak_rate,
        "clients": opts.soak_clients,
        "published": published,
        "publish_rate": rnd(published / max(last_pub - first_pub, 1e-9)),
        "received_min": min(got.received),
        "received_max": max(got.received),
        "lost": got.lost,
        "order_errors": got.order_errors,
        "exactly_once": got.exactly_once,
        "latency_ms": got.latency.summary(),
        "cpu_pct": cpu,
        "server_rss_mb": {
            "start": start["server_rss_mb"],
            "warm": warm["server_rss_mb"],
            "warm_at_s": warm["t_s"],
            "end": end["server_rss_mb"],
            "max": max(rss),
        },
        "rss_drift_pct_from_warm": rnd(
            100.0 * (end["server_rss_mb"] - warm["server_rss_mb"]) / warm["server_rss_mb"]
        ),
        "rss_drift_pct_from_start": rnd(
            100.0 * (end["server_rss_mb"] - start["server_rss_mb"]) / start["server_rss_mb"]
        ),
        "redis_used_memory_mb": {
            "start": start["redis_used_memory_mb"],
            "warm": warm["redis_used_memory_mb"],
            "end": end["redis_used_memory_mb"],
        },
        "samples": samples,
    }
