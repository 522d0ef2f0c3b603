"""The `ingest` and `late` sections: how fast the worker takes a burst of events from Redis."""

from __future__ import annotations

import contextlib

from bench import profile as prof
from bench.context import Bench, close_all, go, mb, prepare_burst, process, publish_span, rnd
from bench.harness import CpuMeter, Names, Server, stats_accepted, wait_accepted, worker_stats
from bench.proto import Helper

INGEST_PUBSUB_LIMIT = "pubsub 0 0 0"


@contextlib.contextmanager
def burst_publishers(bench: Bench, names: Names, publishers: int):
    """`publishers` burst publisher processes on the section's channel, with Redis's Pub/Sub
    output limit lifted while they exist. A burst outruns any consumer for a moment; with the
    default limit (32 MB hard) the backlog of 200k events can get the subscriber disconnected.
    These sections measure throughput, not that disconnect, so the limit goes and comes back."""
    with bench.redis.pubsub_limit(INGEST_PUBSUB_LIMIT):
        pubs = bench.publishers(names, publishers)
        try:
            yield pubs
        finally:
            close_all(pubs)


def burst(
    bench: Bench, server: Server, pubs: list[Helper], *, events: int, profile_path=None, **prepare
) -> dict:
    """One burst of `events` to the server's worker, timed from the first PUBLISH until the
    worker's `accepted` counter has grown by `events`; py-spy on the server if `profile_path`."""
    names = server.names
    prepare_burst(pubs, events, bench.next_step(), **prepare)
    before = stats_accepted(bench.redis.client, names)
    profiler = prof.profile_or_none(bench.py_spy, server.pid, profile_path) if profile_path else None
    meter = bench.cpu_meter(server)
    pub_results = go(pubs, timeout=120 + events / 1000)
    first_pub, last_pub = publish_span(pub_results)
    done_at, accepted = wait_accepted(
        bench.redis.client, names, before + events, timeout=max(60.0, events / 1000)
    )
    cpu = meter.stop()
    run = {
        "accepted": accepted - before,
        "completed": done_at is not None,
        "elapsed_s": rnd(done_at - first_pub, 3) if done_at else None,
        "rate": rnd(events / (done_at - first_pub)) if done_at else None,
        "publish_rate": rnd(events / (last_pub - first_pub)),
        "cpu_pct": cpu,
    }
    if profiler:
        run.update(profiler.finish())
    return run


def ingest(
    bench: Bench, *, events: int, publishers: int, async_mode: str = "eventlet", profile: bool = False
) -> dict:
    """Burst `events` through Redis: first to a bare subscriber, then to the server's worker."""
    names = Names()
    out: dict = {
        "async_mode": async_mode,
        "transport": "stream" if bench.stream_transport else "pubsub",
        "events": events,
        "publishers": publishers,
        "event_bytes_avg": None,
        "redis_pubsub_limit": INGEST_PUBSUB_LIMIT,
    }
    with burst_publishers(bench, names, publishers) as pubs:
        out["bare"] = _bare(bench, names, pubs, events)
        # --- the server's worker --------------------------------------------------------------
        bench.redis.client.delete(names.stream)  # the bare reader's entries are not the worker's
        with bench.server(names, async_mode=async_mode, label="ingest") as server:
            rss_before = server.rss()
            profile_path = bench.profile_dir / f"ingest-{async_mode}.txt" if profile else None
            run = burst(bench, server, pubs, events=events, profile_path=profile_path)
            # The profile stays beside the figures, where it always was in the JSON.
            out.update({k: run.pop(k) for k in ("profile", "profile_file") if k in run})
            stats = worker_stats(bench.redis.client, names)
            out["worker"] = {
                **run,  # rate: first PUBLISH -> stats.accepted == N
                "received": stats.get("received", 0),
                "rejected": stats.get("rejected", 0),
                "rss_mb_before": mb(rss_before),
                "rss_mb_after": mb(server.rss()),
                "profiled": "profile" in out,
            }
            worker_rate, bare_rate = run["rate"], out["bare"]["rate"]
            out["ratio_to_bare"] = rnd(worker_rate / bare_rate, 3) if worker_rate and bare_rate else None
            out["event_bytes_avg"] = _avg_event_bytes(bench.redis.client, names)
    return out


def _bare(bench: Bench, names: Names, pubs: list[Helper], events: int) -> dict:
    """The same burst to a bare redis-py subscriber alone on the channel (or a bare consumer
    group on the stream): what reading alone costs, for the worker's ratio."""
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
        prepare_burst(pubs, events, bench.next_step())
        bare.send({"cmd": "count", "expected": events, "timeout": 10})
        meter = CpuMeter({"redis": bench.redis.proc, "subscriber": process(bare.pid)}).start()
        pub_results = go(pubs, timeout=120 + events / 1000)
        sub = bare.recv(timeout=120 + events / 1000)
        cpu = meter.stop()
    finally:
        close_all([bare])
    first_pub, last_pub = publish_span(pub_results)
    return {
        "received": sub["received"],
        "rate": sub["rate"],  # first -> last message received, as a bare reader sees it
        "rate_from_first_publish": rnd(
            (sub["received"] / (sub["last_recv"] - first_pub)) if sub["last_recv"] else None
        ),
        "publish_rate": rnd(events / (last_pub - first_pub)),
        "cpu_pct": cpu,
    }


LATE_MARGIN_S = 120  # spread events stay this far inside RETENTION_S, so none turns stale mid-run


def late(bench: Bench, *, events: int, publishers: int, rounds: int = 2, profile: bool = False) -> dict:
    """Ingest rate of live events vs events stamped uniformly over the last hour, same server.

    Both bursts go through the same server one after the other (in-order first), `rounds` times,
    with the section's transport; each kind's best round is reported (on a machine shared with
    other work the worst rounds measure the neighbours), every round is in `rounds`. A live
    batch touches a handful of per-second buckets; a spread one touches up to a thousand
    distinct seconds per metric, which is what a backlog flush or a history import looks like.
    The Pub/Sub output limit is lifted as in `ingest`: this measures throughput, not the
    disconnect (issue 15 covers that separately)."""
    from backend.config import current

    retention = int(dict(bench.opts.server_env).get("RETENTION_S") or current().RETENTION_S)
    spread_s = max(60, retention - LATE_MARGIN_S)
    names = Names()
    out: dict = {
        "transport": "stream" if bench.stream_transport else "pubsub",
        "events": events,
        "publishers": publishers,
        "spread_s": spread_s,
    }
    with burst_publishers(bench, names, publishers) as pubs, bench.server(names, label="late") as server:
        plan = [("in_order", 0.0), ("spread", float(spread_s))] * max(1, rounds)
        out["rounds"] = []
        for n_run, (kind, spread) in enumerate(plan):
            last_round = n_run >= len(plan) - 2
            profile_path = bench.profile_dir / f"late-{kind}.txt" if profile and last_round else None
            run = {
                "kind": kind,
                **burst(bench, server, pubs, events=events, profile_path=profile_path, spread_s=spread),
            }
            out["rounds"].append(run)
            best = out.get(kind)
            if best is None or (run["rate"] or 0) > (best["rate"] or 0):
                out[kind] = run
        out["rejected"] = worker_stats(bench.redis.client, names).get("rejected", 0)
        live, spread_rate = out["in_order"]["rate"], out["spread"]["rate"]
        out["ratio"] = rnd(spread_rate / live, 3) if live and spread_rate else None
    return out


def _avg_event_bytes(client, names: Names) -> float | None:
    items = client.lrange(names.recent, 0, 99)
    return round(sum(len(i) for i in items) / len(items), 1) if items else None
