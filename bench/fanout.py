"""The `fanout` and `baseline` sections: publish -> Socket.IO client delivery, rate by rate.

A ladder is one server with N clients and increasing publish rates; `fanout` runs one ladder per
client count, `baseline` the same clients with the original per-event strategy beside batching.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from bench import profile as prof
from bench.context import Bench, close_all, go, mb, prepare_paced, publish_span, rnd
from bench.harness import Names, Server, seq_counter
from bench.latency import Histogram
from bench.proto import Helper, HelperError


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
    step = bench.next_step()
    prepare_paced(pubs, rate=rate, duration=duration, step=step)
    profiler = prof.profile_or_none(bench.py_spy, server.pid, profile_path) if profile_path else None
    seq_before = seq_counter(bench.redis.client, server.names)
    meter = bench.cpu_meter(server, [*clients, *pubs])
    pub_results = go(pubs, timeout=duration * 3 + 60)
    cpu = meter.stop()
    profile = profiler.finish() if profiler else None
    published = sum(p["published"] for p in pub_results)
    first_pub, last_pub = publish_span(pub_results)
    got = deliveries(bench, clients, step=step, published=published, slack_s=60)
    reports, per_client, received = got.reports, got.per_client, got.received
    # Events the worker had not even taken from Redis when the clients gave up waiting: a
    # missing event with a backlog is late, one without is lost on the way to the client.
    backlog = published - (seq_counter(bench.redis.client, server.names) - seq_before)

    order_errors = got.order_errors
    foreign = sum(c["foreign"] for c in per_client)
    disconnected = sum(1 for c in per_client if not c["connected"])
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
    exact = got.exactly_once and foreign == 0 and coverage_ok and len(received) == n_clients
    achieved = published / max(last_pub - first_pub, 1e-9)
    tail_lag = (last_recv - last_pub) if last_recv else None
    publisher_ok = achieved >= 0.95 * rate
    kept_up = exact and publisher_ok and tail_lag is not None and tail_lag <= 1.0
    client_cpu = [cpu.get(h.name) for h in clients]
    out = {
        "step": step,
        "clients": n_clients,
        "target_rate": rate,
        "duration_s": duration,
        "published": published,
        "publish_rate": rnd(achieved),
        "publisher_max_behind_s": max(p["max_behind_s"] for p in pub_results),
        "received_min": min(received, default=0),
        "received_max": max(received, default=0),
        "lost": got.lost,
        "server_backlog_at_report": max(0, backlog),
        "order_errors": order_errors,
        "foreign": foreign,
        "disconnected": disconnected,
        "coverage_ok": coverage_ok,
        "exactly_once": exact,
        "tail_lag_s": rnd(tail_lag, 3),
        "latency_ms": got.latency.summary(),
        "server_cpu_pct": cpu.get("server"),
        "server_rss_mb": mb(server.rss()),
        "redis_cpu_pct": cpu.get("redis"),
        "redis_used_memory_mb": mb(bench.redis.used_memory()),
        "client_procs_cpu_pct": client_cpu,
        "machine_cpu_pct": cpu.get("machine"),
        "others_cpu_pct": cpu.get("others"),
        "publisher_cpu_pct": [cpu.get(h.name) for h in pubs],
        "clients_saturated": any((c or 0) >= 90.0 for c in client_cpu),
        "publisher_ok": publisher_ok,
        "kept_up": kept_up,
        "decode_cache": [r["decode_cache"] for r in reports],
    }
    if profile is not None:
        out.update(profile)
    return out


@dataclass
class Deliveries:
    """What the client processes reported for one step, over all their clients."""

    reports: list[dict]
    published: int

    @property
    def per_client(self) -> list[dict]:
        return [c for r in self.reports for c in r["clients"]]

    @property
    def received(self) -> list[int]:
        return [c["received"] for c in self.per_client]

    @property
    def lost(self) -> int:
        return sum(max(0, self.published - n) for n in self.received)

    @property
    def order_errors(self) -> int:
        return sum(c["order_errors"] for c in self.per_client)

    @property
    def exactly_once(self) -> bool:
        """Every client got every event, in order."""
        return all(n == self.published for n in self.received) and self.order_errors == 0

    @property
    def latency(self) -> Histogram:
        return Histogram.from_sparse([r["latency"] for r in self.reports])


def deliveries(
    bench: Bench, clients: list[Helper], *, step: int, published: int, slack_s: float
) -> Deliveries:
    """Ask every client process for its report on `step`: each waits up to --drain-seconds for
    the last of `published` events (we wait `slack_s` longer for the reply)."""
    drain = bench.opts.drain_seconds
    for h in clients:
        h.send({"cmd": "report", "step": step, "expected": published, "timeout": drain})
    return Deliveries([h.recv(timeout=drain + slack_s) for h in clients], published)


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
        out["server_rss_mb_idle"] = mb(server.rss())
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
            "ratio": rnd(b["rate"] / p["rate"], 1) if b["rate"] and p["rate"] else None,
        }
    return out
