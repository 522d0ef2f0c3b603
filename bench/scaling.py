"""The `scaling` section: ingest throughput of 1 and 2 `pulseboard worker` processes over partitions.

Method, per configuration (P partitions, W worker processes), on a backlog rather than a burst so
that publishing costs nothing during the timed part:
1. with no worker running, XADD N events ({"event": <JSON>}, the generator's `mixed` traffic with
   its 7 metric names each split into 7 variants: 49 names, so both of 2 partitions get work)
   into the partition streams, each event routed with `producer.partition_of` to
   `INGEST_STREAM:{k}` (P = 1 on one Redis: the untagged INGEST_STREAM, today's layout);
2. start W processes `python -m backend.cli worker` (REDIS_URL, INGEST_TRANSPORT=stream,
   INGEST_PARTITIONS=P, MESSAGE_QUEUE=true, KEY_PREFIX/INGEST_STREAM/REDIS_CHANNEL of this run's
   own) and poll the sum over partitions of the stats hash field `accepted` every 10 ms until
   it reaches N.

Reported per run: `rate` = N / (workers spawned -> sum of accepted = N), which includes Python's
start-up and the partition hand-over (the first worker to start takes every partition and
gives the extra one up at its next heartbeat, ~1 s, once it sees the second worker);
`drain_rate` = events accepted from the first accepted batch to N over that time, the rate
the backlog is worked off once consuming; CPU% (100% = one core) of each worker process and
of redis-server (every node of a cluster) over the drain, the machine's, and others'; how many
events each worker process took (from its report in the `workers` hash).

Each worker runs in a session of its own (`--scaling-shared-session`: in the bench's): under the
kernel's autogroup scheduling one session gets one fair share of a busy machine's CPU, however
many processes it has, which would cap two workers at what one gets.

The configurations run alternately (p1w1, p2w1, p2w2, then again) `--scaling-rounds` times, so
the machine's background load spreads over all of them; every run is kept. With
`--scaling-cluster` the same runs go to an embedded 3-master cluster (REDIS_CLUSTER=true);
that needs the worker's cluster support, and a failure there is recorded, not raised.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time

import orjson
import psutil
import redis

from backend.cli.procs import die_with_parent
from backend.cli.procs import stop as stop_process
from backend.storage.keys import Keys, Partitioning
from bench.context import Bench, rnd
from bench.harness import CpuMeter, Names
from bench.proto import ROOT
from producer import partition_of

CONFIGS = (("p1w1", 1, 1), ("p2w1", 2, 1), ("p2w2", 2, 2))
STARTS = ("cold", "warm")
VARIANTS = 7  # each of the 7 `mixed` metrics as 7 names: 49 metric names
FILL_CHUNK = 5000
STALL_S = 30.0  # a run with nothing accepted this long after its workers started has failed


def backlog_events(n: int, seed: int, ts0: float) -> list[tuple[str, bytes]]:
    """(metric, JSON) of `n` events: `mixed` traffic bodies, 49 metric names, ts spread over the
    last ~10 s before `ts0` (live events: each batch lands in a few buckets, as in `ingest`)."""
    from generator.traffic import TrafficModel

    model = TrafficModel("mixed", seed=seed, burst_every_s=0.0, id_prefix="t-")
    bodies = [{k: v for k, v in e.items() if k not in ("ts", "id")} for e in model.events(4096, 0.0, 10.0)]
    out = []
    for i in range(n):
        body = dict(bodies[i % len(bodies)])
        body["metric"] = f"{body['metric']}_{(i * 31 + i // len(bodies)) % VARIANTS}"
        body["ts"] = ts0 - 10.0 + 10.0 * i / n
        body["id"] = f"s-{i}"
        out.append((body["metric"], orjson.dumps(body)))
    return out


class Target:
    """Where the runs go: the bench's single Redis, or an embedded cluster."""

    def __init__(self, bench: Bench, cluster: bool):
        self.cluster = cluster
        self.name = "cluster" if cluster else "redis"
        self._owned = None
        if cluster:
            from backend.cli.embedded_cluster import EmbeddedCluster

            self._owned = EmbeddedCluster().start()
            self.url = self._owned.url
            self.client = redis.cluster.RedisCluster.from_url(self.url)
            self.procs = {f"redis{i}": psutil.Process(pid) for i, pid in enumerate(self._owned.pids())}
        else:
            self.url = bench.redis.url
            self.client = bench.redis.client
            self.procs = {"redis": bench.redis.proc}

    def flush(self) -> None:
        if self.cluster:
            self.client.flushall(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
        else:
            self.client.flushall()

    def close(self) -> None:
        if self._owned is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self._owned.stop()


def fill(target: Target, names: Names, parts: Partitioning, events: list[tuple[str, bytes]]) -> dict:
    """XADD the backlog, each event to its partition's stream; per-partition counts."""
    counts = [0] * parts.count
    pipe = target.client.pipeline(transaction=False)
    t0 = time.monotonic()
    for i, (metric, payload) in enumerate(events, 1):
        k = partition_of(metric, parts.count)
        counts[k] += 1
        pipe.xadd(parts.stream(names.stream, k), {"event": payload})
        if i % FILL_CHUNK == 0:
            pipe.execute()
    pipe.execute()
    return {"per_partition": counts, "fill_s": rnd(time.monotonic() - t0, 2)}


def accepted(target: Target, stats_keys: list[str]) -> int:
    if target.cluster:
        values = [target.client.hget(k, "accepted") for k in stats_keys]
    else:
        pipe = target.client.pipeline(transaction=False)
        for k in stats_keys:
            pipe.hget(k, "accepted")
        values = pipe.execute()
    return sum(int(v) for v in values if v is not None)


def spawn_worker(bench: Bench, target: Target, names: Names, partitions: int, label: str, extra=None):
    env = {
        **os.environ,  # only to build the child's environment
        "REDIS_URL": target.url,
        "REDIS_CLUSTER": "true" if target.cluster else "false",
        "INGEST_TRANSPORT": "stream",
        "INGEST_PARTITIONS": str(partitions),
        "MESSAGE_QUEUE": "true",
        "LOG_LEVEL": "WARNING",
        "PULSEBOARD_ENV_FILE": "/nonexistent",  # a developer's .env must not change the figures
        **names.env(),
        **(extra or {}),
        **dict(bench.opts.server_env),
    }
    bench.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = bench.log_dir / f"scaling-{label}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            # A session of its own, as a service or container would run it (and as the embedded
            # Redis runs): with the kernel's autogroup scheduling (sched_autogroup_enabled=1)
            # processes of one session share one fair share of the CPU, so two workers started
            # from the bench's session would split one share between them on a busy machine.
            start_new_session=not getattr(bench.opts, "scaling_shared_session", False),
        )
    return proc, log_path


def worker_reports(target: Target, names: Names) -> dict[str, dict]:
    raw = target.client.hgetall(Keys(prefix=names.prefix).workers)
    out = {}
    for k, v in raw.items():
        with contextlib.suppress(ValueError):
            out[k.decode() if isinstance(k, bytes) else k] = orjson.loads(v)
    return out


def wait_split(target: Target, names: Names, procs, partitions: int, timeout: float = 30.0) -> float:
    """Wait until the running workers hold every partition between them, each its fair share
    (as their reports in the `workers` hash say); returns how long that took."""
    t0 = time.monotonic()
    share = -(-partitions // len(procs))
    pids = {str(p.pid) for p in procs}
    while time.monotonic() - t0 < timeout:
        held = {
            tok.split(":")[1]: r.get("partitions", [])
            for tok, r in worker_reports(target, names).items()
            if tok.split(":")[1:2] and tok.split(":")[1] in pids and r.get("role") == "active"
        }
        every = sorted(k for ks in held.values() for k in ks)
        if (
            len(held) == len(procs)
            and every == list(range(partitions))
            and all(len(v) <= share for v in held.values())
        ):
            return time.monotonic() - t0
        for w, p in enumerate(procs):
            if p.poll() is not None:
                raise RuntimeError(f"worker {w} exited with {p.returncode}; see its log")
        time.sleep(0.1)
    raise RuntimeError(f"the workers did not split the {partitions} partitions within {timeout:.0f}s")


def run_one(
    bench: Bench,
    target: Target,
    label: str,
    partitions: int,
    workers: int,
    events: int,
    timeout: float,
    warm: bool = False,
) -> dict:
    """One configuration. Cold (the method of the brief): backlog first, then start the workers.
    Warm: start the workers on empty streams, wait until they have split the partitions, SIGSTOP
    them, write the backlog, SIGCONT them: the timed part is then consuming alone, without
    Python's start-up or the hand-over of partitions between processes (LEASE_TTL_MS is raised
    to 60 s so that the leases outlive the pause)."""
    names = Names()
    parts = Partitioning(count=partitions, cluster=target.cluster)
    base = Keys(prefix=names.prefix, recent=names.recent)
    stats_keys = [k.stats for k in parts.all_keys(base)]
    target.flush()
    procs = []
    run: dict = {
        "config": label,
        "start": "warm" if warm else "cold",
        "partitions": partitions,
        "workers": workers,
        "events": events,
    }
    try:
        if warm:
            extra = {"LEASE_TTL_MS": "60000"}
            procs = [
                spawn_worker(bench, target, names, partitions, f"{target.name}-{label}-warm-w{w}", extra)[0]
                for w in range(workers)
            ]
            run["split_s"] = rnd(wait_split(target, names, procs, partitions), 2)
            for p in procs:
                os.kill(p.pid, signal.SIGSTOP)
        backlog = backlog_events(events, bench.opts.seed, time.time())
        run.update(fill(target, names, parts, backlog))
        del backlog
        t_spawn = time.monotonic()
        if warm:
            for p in procs:
                os.kill(p.pid, signal.SIGCONT)
        else:
            for w in range(workers):
                procs.append(spawn_worker(bench, target, names, partitions, f"{target.name}-{label}-w{w}")[0])
        ps = {f"worker{w}": psutil.Process(p.pid) for w, p in enumerate(procs)}
        meter = CpuMeter({**ps, **target.procs})
        t_first = a_first = done = None
        value = 0
        deadline = t_spawn + timeout
        while time.monotonic() < deadline:
            value = accepted(target, stats_keys)
            now = time.monotonic()
            if t_first is None and value > 0:
                t_first, a_first = now, value
                meter.start()
            if value >= events:
                done = now
                break
            for w, p in enumerate(procs):
                if p.poll() is not None:
                    raise RuntimeError(f"worker {w} exited with {p.returncode}; see {bench.log_dir}")
            if t_first is None and now - t_spawn > STALL_S:
                # e.g. a worker without cluster support: alive, retrying a MOVED error forever
                raise RuntimeError(
                    f"no event accepted within {STALL_S:.0f}s; see the workers' logs in {bench.log_dir}"
                )
            time.sleep(0.01)
        cpu = meter.stop() if t_first is not None else {}
        run.update(
            {
                "accepted": value,
                "completed": done is not None,
                "elapsed_s": rnd(done - t_spawn, 3) if done else None,
                "first_accepted_s": rnd(t_first - t_spawn, 3) if t_first else None,
                "rate": rnd(events / (done - t_spawn)) if done else None,
                "drain_rate": rnd((events - a_first) / (done - t_first)) if done and done > t_first else None,
                "cpu_pct": cpu,
                "worker_cpu_pct": [cpu.get(f"worker{w}") for w in range(workers)],
                "redis_cpu_pct": rnd(sum(cpu.get(k) or 0.0 for k in target.procs), 1) if cpu else None,
            }
        )
        time.sleep(1.2)  # every worker reports about once a second: take their final figures
        reports = worker_reports(target, names)
        pids = {str(p.pid) for p in procs}
        run["processed_by_worker"] = sorted(
            (
                r.get("processed", 0)
                for tok, r in reports.items()
                if tok.split(":")[1:2] and tok.split(":")[1] in pids
            ),
            reverse=True,
        )
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                os.kill(p.pid, signal.SIGCONT)  # a stopped process would not see its SIGTERM
            with contextlib.suppress(Exception):
                stop_process(p)
    return run


def _median(values):
    values = [v for v in values if v is not None]
    return rnd(statistics.median(values)) if values else None


def summarize(runs: list[dict]) -> dict:
    """Medians per (start, config), and the ratios: 2 workers / 1 worker (both P=2), and P=2 /
    P=1 with one worker (what partitioning costs or gains a single process)."""
    out: dict = {}
    for start in STARTS:
        by = {}
        for label, _, _ in CONFIGS:
            rs = [r for r in runs if r.get("config") == label and r.get("start") == start]
            ok = [r for r in rs if "error" not in r]
            by[label] = {
                "rates": [r.get("rate") for r in rs],
                "drain_rates": [r.get("drain_rate") for r in rs],
                "rate_median": _median(r.get("rate") for r in ok),
                "drain_rate_median": _median(r.get("drain_rate") for r in ok),
                "worker_cpu_pct_median": _median(
                    sum(v or 0.0 for v in r["worker_cpu_pct"]) for r in ok if "worker_cpu_pct" in r
                ),
                "redis_cpu_pct_median": _median(r.get("redis_cpu_pct") for r in ok),
            }

        def ratio(a, b, key, by=by):
            x, y = by[a][key], by[b][key]
            return rnd(x / y, 3) if x and y else None

        rounds: dict = {}
        for r in runs:
            if r.get("start") == start:
                rounds.setdefault(r.get("round"), {})[r.get("config")] = r

        def by_round(a, b, key, rounds=rounds):
            return [
                rnd(rd[a][key] / rd[b][key], 3) if rd.get(a, {}).get(key) and rd.get(b, {}).get(key) else None
                for _, rd in sorted(rounds.items())
            ]

        out[start] = {
            "by_config": by,
            "ratio_2w_1w": ratio("p2w2", "p2w1", "rate_median"),
            "ratio_2w_1w_drain": ratio("p2w2", "p2w1", "drain_rate_median"),
            "ratio_2w_1w_by_round": by_round("p2w2", "p2w1", "rate"),
            "ratio_p2_p1_one_worker": ratio("p2w1", "p1w1", "rate_median"),
            "ratio_p2_p1_one_worker_drain": ratio("p2w1", "p1w1", "drain_rate_median"),
            "ratio_p2_p1_by_round": by_round("p2w1", "p1w1", "rate"),
        }
    return out


def measure(bench: Bench, *, cluster: bool, events: int, rounds: int) -> dict:
    """Every configuration, cold then warm, `rounds` times over (alternating)."""
    variant = "cluster (3 masters)" if cluster else "single"
    target = Target(bench, cluster)
    runs: list[dict] = []
    try:
        starts = [s for s in STARTS if s in bench.opts.scaling_starts]
        configs = [c for c in CONFIGS if c[0] in bench.opts.scaling_configs]
        for rd in range(rounds):
            for start in starts:
                for label, partitions, workers in configs:
                    bench.say(f"  {'cluster' if cluster else 'redis'} round {rd + 1}: {start} {label} ...")
                    try:
                        run = run_one(
                            bench,
                            target,
                            label,
                            partitions,
                            workers,
                            events,
                            timeout=max(120.0, events / 500),
                            warm=start == "warm",
                        )
                    except Exception as exc:
                        run = {
                            "config": label,
                            "start": start,
                            "partitions": partitions,
                            "workers": workers,
                            "error": f"{type(exc).__name__}: {exc}",
                        }
                    run["round"] = rd + 1
                    runs.append(run)
                    bench.say("    " + line(run))
                    if cluster and ("error" in run or not run.get("completed")):
                        # the worker's cluster support may not be there yet: one failure is the answer
                        return {"redis": variant, "runs": runs, **summarize(runs)}
    finally:
        target.close()
    return {"redis": variant, "runs": runs, **summarize(runs)}


def scaling(bench: Bench) -> dict:
    opts = bench.opts
    out = {
        "events": opts.scaling_events,
        "rounds": opts.scaling_rounds,
        "transport": "stream",
        "metric_names": VARIANTS * 7,
        "worker_sessions": "shared with the bench" if opts.scaling_shared_session else "one per worker",
        "single": measure(bench, cluster=False, events=opts.scaling_events, rounds=opts.scaling_rounds),
    }
    if opts.scaling_cluster:
        try:
            out["cluster"] = measure(
                bench, cluster=True, events=opts.scaling_events, rounds=opts.scaling_rounds
            )
        except Exception as exc:
            out["cluster"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def line(run: dict) -> str:
    if "error" in run:
        return f"{run.get('start')} {run['config']}: ERROR {run['error']}"
    return (
        f"{run['start']} {run['config']}: {run['rate'] or '-'} ev/s (drain {run['drain_rate'] or '-'} ev/s), "
        f"workers CPU {run['worker_cpu_pct']}%, redis {run['redis_cpu_pct']}%, "
        f"others {run['cpu_pct'].get('others') if run.get('cpu_pct') else '-'}%, "
        f"per worker {run['processed_by_worker']}"
    )


HEADERS = [
    "redis",
    "round",
    "start",
    "config",
    "P",
    "workers",
    "events/s",
    "drain ev/s",
    "1st accepted s",
    "worker CPU %",
    "redis CPU %",
    "others CPU %",
    "per worker",
]


def rows(r: dict) -> list[list]:
    out = []
    for variant in ("single", "cluster"):
        v = r.get(variant)
        if not v:
            continue
        if "error" in v and "runs" not in v:
            out.append([variant, None, None, "ERROR " + v["error"]] + [None] * (len(HEADERS) - 4))
            continue
        for run in v["runs"]:
            if "error" in run:
                out.append(
                    [variant, run.get("round"), run.get("start"), run["config"], "ERROR " + run["error"][:80]]
                    + [None] * (len(HEADERS) - 5)
                )
                continue
            out.append(
                [
                    variant,
                    run["round"],
                    run["start"],
                    run["config"],
                    run["partitions"],
                    run["workers"],
                    run["rate"],
                    run["drain_rate"],
                    run["first_accepted_s"],
                    run["worker_cpu_pct"],
                    run["redis_cpu_pct"],
                    run["cpu_pct"].get("others") if run.get("cpu_pct") else None,
                    run["processed_by_worker"],
                ]
            )
    return out


def summary_lines(r: dict) -> list[str]:
    out = []
    for variant in ("single", "cluster"):
        v = r.get(variant)
        if not v:
            continue
        for start in STARTS:
            s = v.get(start)
            if not s:
                continue
            med = s["by_config"]
            out.append(
                f"{variant}, {start}: median events/s p1w1 {med['p1w1']['rate_median']}, "
                f"p2w1 {med['p2w1']['rate_median']}, p2w2 {med['p2w2']['rate_median']}; "
                f"2 workers / 1 worker {s['ratio_2w_1w']} (by round {s['ratio_2w_1w_by_round']}); "
                f"P=2 / P=1, one worker {s['ratio_p2_p1_one_worker']} (by round {s['ratio_p2_p1_by_round']})"
            )
    return out
