"""The `realtime` section: publish -> client latency and loss with lean clients, side by side.

Every scenario starts a fresh server (`pulseboard serve`, default settings unless the scenario
says otherwise), 2 processes of raw Engine.IO clients (bench/rawclients.py) and a paced
publisher, then reports per scenario: published, lost, duplicates, order errors, latency
p50/p95/p99/max, the server's CPU (web process and its worker child together) and the
clients' CPU, which share the machine's cores with it.

Scenarios (issue targets in brackets):
- batch clients at 1k [p50 <= 3 ms, p99 <= 20 ms], 20k [p99 <= 100 ms] and 40k events/s [<= 250 ms];
  20k and 40k twice: with the generator's events (--event-shape, `mixed` by default: value
  objects, tags, about 210 bytes) and with the original design's (`original`: about 130 bytes);
- per-event (`metric`) clients at 2k events/s, ours beside the original per-event strategy
  (WORKER_STRATEGY=per_event) [0 lost, 0 dropped, p99 <= 200 ms];
- a stalled client among 50 batch clients at 1k events/s: how soon it is dropped, and the
  others' p99 beside the scenario without it [dropped within 10 s, p99 moves < 10%];
- 500 events/s to 5 clients while 8 threads read aggregate?window=3600 and
  timeseries?window=3600&step=60 over wide data [0 lost, p99 <= 250 ms].
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import time

import orjson
import requests

from bench.context import prepare_paced
from bench.harness import Names
from bench.proto import Helper


def _clients(bench, server, n: int, mode: str, procs: int = 2) -> list[Helper]:
    return bench.client_processes(
        "rawclients", n, procs, ["--url", server.url, "--mode", mode, "--tag", bench.tag]
    )


def scenario(
    bench,
    *,
    label: str,
    mode: str,
    rate: float,
    clients: int,
    duration: float,
    env: dict | None = None,
    strategy: str = "batch",
    during=None,
    shape: str | None = None,
) -> dict:
    """One measured step on a fresh server. `during(server)` runs beside the publisher (a
    context manager factory) and may add figures to the result. `shape`: the events'
    (bench.events.SHAPES), --event-shape unless given."""
    names = Names()
    server = bench.server(names, strategy=strategy, label=f"realtime-{label}", env=env)
    helpers: list[Helper] = []
    pubs: list[Helper] = []
    try:
        helpers = _clients(bench, server, clients, mode)
        pubs = bench.publishers(names, 1, shape)
        step = bench.next_step()
        prepare_paced(pubs, rate=rate, duration=duration, step=step)
        for h in helpers:
            h.request({"cmd": "mark", "step": step}, timeout=10)
        extra: dict = {}
        ctx = during(server, extra) if during else contextlib.nullcontext()
        meter = bench.cpu_meter(server, [*helpers, *pubs])
        with ctx:
            pub = pubs[0].request({"cmd": "go"}, timeout=duration * 3 + 60)
        cpu = meter.stop()
        extra["redis_cpu_pct"] = cpu.get("redis")
        extra["others_cpu_pct"] = cpu.get("others")  # processes not in this benchmark, meanwhile
        extra["server_cpu_by_process"] = meter.by_role.get("server")  # web (main), worker, reader
        # Time runnable with no free core, as a share of the step: a busy machine, not slow code.
        extra["waited_pct"] = {
            k: meter.waited.get(k) for k in ("server", "redis", *(h.name for h in [*helpers, *pubs]))
        }
        reports = [
            h.request({"cmd": "report", "expected": pub["published"], "timeout": 10}, timeout=70)
            for h in helpers
        ]
        dropped = server_log(server).count("dropping slow client")
        extra["shape"] = shape or bench.opts.event_shape
        return summarize(label, mode, rate, clients, strategy, pub, reports, cpu, dropped, extra)
    finally:
        for h in helpers + pubs:
            h.close()
        server.stop()


def server_log(server) -> str:
    try:
        return server.log_path.read_text(errors="replace")
    except OSError:
        return ""


def summarize(label, mode, rate, clients, strategy, pub, reports, cpu, dropped, extra) -> dict:
    def worst(key):
        vals = [r[key] for r in reports if r.get(key) is not None]
        return max(vals) if vals else None

    server_cpu = sum(v for k, v in cpu.items() if k.startswith("server") and v is not None)
    client_cpu = [cpu.get(f"rawclients-{i}") for i in range(len(reports))]
    return {
        "label": label,
        "mode": mode,
        "strategy": strategy,
        "rate": rate,
        "clients": clients,
        "published": pub["published"],
        "publish_rate": pub["rate"],
        "lost": sum(r["lost"] for r in reports),
        "duplicates": sum(r["duplicates"] for r in reports),
        "order_errors": sum(r["order_errors"] for r in reports),
        "disconnected": sum(r["disconnected"] for r in reports),
        "dropped_by_server": dropped,
        # Pooled over both client processes; worst process's percentile is an upper bound.
        "p50_ms": worst("p50_ms"),
        "p95_ms": worst("p95_ms"),
        "p99_ms": worst("p99_ms"),
        "max_ms": worst("max_ms"),
        "worst_ms_by_second": [
            max(ws)
            for ws in itertools.zip_longest(
                *(r.get("worst_ms_by_second") or [] for r in reports), fillvalue=0.0
            )
        ],
        "server_cpu_pct": round(server_cpu, 1),
        "client_cpu_pct": [c for c in client_cpu if c is not None],
        "publisher_cpu_pct": next((v for k, v in cpu.items() if k.startswith("publisher")), None),
        **extra,
    }


@contextlib.contextmanager
def stalled_client(server, extra: dict):
    """One more client, in its own process, frozen (SIGSTOP) once connected: it reads nothing."""
    code = (
        "import socketio,sys\n"
        "c=socketio.Client()\n"
        "c.connect(sys.argv[1], transports=['websocket'])\n"
        "c.call('subscribe', {'mode': 'batch', 'window': 60})\n"
        "print('ready', flush=True)\n"
        "c.wait()\n"
    )
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", code, server.url], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        proc.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        found = {}

        def connected() -> float | None:
            try:
                text = requests.get(server.url + "/metrics", timeout=2).text
            except requests.RequestException:
                return None
            for line in text.splitlines():
                if line.startswith("pulseboard_connected_clients "):
                    return float(line.split()[-1])
            return None

        before = connected()

        def watch():
            # Dropped by the slow-client rule (bytes) or the Engine.IO heartbeat (missed PONG).
            while "at" not in found and time.monotonic() - stopped_at < 60:
                now = connected()
                if before is not None and now is not None and now < before:
                    found["at"] = time.monotonic() - stopped_at
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        yield
        watcher.join(timeout=15)
        extra["stalled_dropped_after_s"] = round(found["at"], 1) if "at" in found else None
    finally:
        proc.kill()
        proc.wait()


def wide_fill(bench, server, *, metrics: int = 10_000, fields: int = 32, events: int = 20_000) -> None:
    """Wide data: many metric names, 32 fields, values spread over 300 decades, in the last hour."""
    client = bench.redis.client
    now = time.time()
    pipe = client.pipeline(transaction=False)
    # The live traffic's metrics exist first, as in a running deployment: then the wide names
    # fill what is left under MAX_METRICS (the rest are dead-lettered, as designed).
    from bench.events import Templates

    for name in sorted(
        {orjson.loads(body + b"}")["metric"] for body in Templates(seed=bench.opts.seed).bodies}
    ):
        pipe.publish(server.names.channel, orjson.dumps({"metric": name, "value": 0}))
    for i in range(events):
        value = {f"f{j}": 10.0 ** (((i * 7 + j * 13) % 300) - 150) for j in range(fields)}
        pipe.publish(
            server.names.channel,
            orjson.dumps({"metric": f"wide{i % metrics}", "value": value, "ts": now - (i % 3500)}),
        )
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()


WIDE_READS = ("/api/metrics/aggregate?window=3600", "/api/metrics/timeseries?window=3600&step=60")


def readers(threads: int = 8, paths: tuple[str, ...] = WIDE_READS):
    def factory(server, extra: dict):
        @contextlib.contextmanager
        def ctx():
            stop = threading.Event()
            times: list[float] = []
            codes: dict[int, int] = {}

            def read(i: int):
                http = requests.Session()
                k = i
                while not stop.is_set():
                    t0 = time.perf_counter()
                    try:
                        code = http.get(server.url + paths[k % len(paths)], timeout=30).status_code
                    except requests.RequestException:
                        code = -1
                    times.append(time.perf_counter() - t0)
                    codes[code] = codes.get(code, 0) + 1
                    k += 1

            pool = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(threads)]
            for t in pool:
                t.start()
            try:
                yield
            finally:
                stop.set()
                for t in pool:
                    t.join(timeout=60)
                times.sort()
                extra["reads"] = len(times)
                extra["read_codes"] = codes
                extra["read_p50_ms"] = round(times[len(times) // 2] * 1000, 1) if times else None
                extra["read_p95_ms"] = round(times[int(len(times) * 0.95)] * 1000, 1) if times else None

        return ctx()

    return factory


def realtime(bench) -> dict:
    quick = bench.opts.quick
    dur = 4.0 if quick else 10.0
    runs = []

    wanted = bench.opts.realtime_scenarios

    def run(opt_in: bool = False, **kw):
        """One scenario, unless --realtime-scenarios leaves it out; an opt-in one runs only when
        named there."""
        if (wanted is None and opt_in) or (wanted is not None and kw["label"] not in wanted):
            return None
        result = scenario(bench, duration=dur, **kw)
        runs.append(result)
        bench.say(line(result))
        return result

    run(label="batch-1k", mode="batch", rate=1000, clients=50)
    run(label="event-2k", mode="event", rate=2000, clients=50)
    run(label="event-2k-per_event", mode="event", rate=2000, clients=50, strategy="per_event")
    run(label="batch-20k", mode="batch", rate=20_000, clients=50)
    if not quick:
        run(label="batch-40k", mode="batch", rate=40_000, clients=50)
    # The same rates with the original design's events (about 130 bytes, no tags), as a harness
    # written for the original publishes them; the events above are the generator's (210 bytes).
    run(label="batch-20k-original", mode="batch", rate=20_000, clients=50, shape="original")
    if not quick:
        run(label="batch-40k-original", mode="batch", rate=40_000, clients=50, shape="original")
    run(label="batch-1k-stalled", mode="batch", rate=1000, clients=50, during=stalled_client)
    run(
        label="event-500-readers",
        mode="event",
        rate=500,
        clients=5,
        during=_with_wide_fill(bench, readers(8)),
    )
    run(opt_in=True, label="batch-50k", mode="batch", rate=50_000, clients=50)  # headroom above 40k
    # A dashboard's live aggregate while the web process delivers to 50 clients: one reader,
    # one request after another (the `queries` section measures it with no clients).
    run(
        opt_in=True,
        label="batch-1k-aggregate",
        mode="batch",
        rate=1000,
        clients=50,
        during=readers(1, ("/api/metrics/aggregate?window=3600",)),
    )
    run(
        opt_in=True,
        label="batch-20k-readers",
        mode="batch",
        rate=20_000,
        clients=50,
        during=_with_wide_fill(bench, readers(8)),
    )
    return {"runs": runs}


def _with_wide_fill(bench, inner):
    def factory(server, extra):
        t0 = time.monotonic()
        wide_fill(bench, server)
        # Wait until the wide events are stored, so the readers read wide data.
        deadline = time.monotonic() + 120
        key = f"{server.names.prefix}stats"
        while time.monotonic() < deadline:
            got = int(bench.redis.client.hget(key, "received") or 0)
            if got >= 20_000:
                break
            time.sleep(0.2)
        extra["wide_fill_s"] = round(time.monotonic() - t0, 1)
        return inner(server, extra)

    return factory


def line(r: dict) -> str:
    extra = ""
    if "stalled_dropped_after_s" in r:
        extra += f", stalled client dropped after {r['stalled_dropped_after_s']} s"
    if "reads" in r:
        extra += f", {r['reads']} reads p50 {r['read_p50_ms']} ms p95 {r['read_p95_ms']} ms {r['read_codes']}"
    return (
        f"  {r['label']:<22} {r.get('shape', ''):<8} {r['published']:>7} published @ {r['publish_rate']:>8.0f}/s  lost {r['lost']}"
        f"  dup {r['duplicates']}  dropped {r['dropped_by_server']}  "
        f"p50 {r['p50_ms']} p95 {r['p95_ms']} p99 {r['p99_ms']} max {r['max_ms']} ms  "
        f"server CPU {r['server_cpu_pct']}%{_split(r)}  clients {r['client_cpu_pct']}%{_waits(r)}{extra}"
    )


def _split(r: dict) -> str:
    """The server's CPU by process: web (`main`), worker, read process."""
    parts = r.get("server_cpu_by_process") or {}
    return f" ({', '.join(f'{k} {v}%' for k, v in parts.items())})" if parts else ""


def _waits(r: dict) -> str:
    """Redis's CPU and the time the server and Redis waited for a core (runs before these
    figures existed have neither)."""
    waited = r.get("waited_pct") or {}
    if r.get("redis_cpu_pct") is None and not waited:
        return ""
    return (
        f"  redis CPU {r.get('redis_cpu_pct')}%"
        f"  waited for a core: server {waited.get('server')}% redis {waited.get('redis')}%"
    )
