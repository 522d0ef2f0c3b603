"""What a live aggregate costs, layer by layer, while 1,000 events/s arrive.

    .venv/bin/python scripts/read_cost.py [--requests N] [--rate EVENTS_PER_S]

It fills the benchmark's hour of data (`python -m bench --only queries`: 200 events/s of five
metrics), starts a real `pulseboard serve` on an embedded Redis with a paced publisher of the
generator's events, and then asks for `aggregate?window=3600` and `window=60` three ways, N
times each:

- `Store.aggregate` in this process: the merge alone;
- the app through Flask's test client: plus routing, the rate limiter, the JSON;
- the read process over its Unix socket (what the web process forwards to): plus eventlet's
  HTTP server, on the process that serves reads;
- HTTP to the web process, as a dashboard asks: plus the web process's forwarding (CPU here
  is the web and read processes' together).

For each it prints CPU per request (this process's, or the read process's) and latency. (In
this process requests come faster than batches are written, so some are answered from the
aggregate cache, which the HTTP layers see less often.) CPU per
request moves far less than latency on a shared machine, so it is the figure to compare between
two versions of the code: run this from each checkout, one after the other.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATHS = ("/api/metrics/aggregate?window=3600", "/api/metrics/aggregate?window=60")


def _measure(label: str, call, n: int, cpu) -> None:
    warm_until = time.monotonic() + 1.5  # first merges, imports, the late counters seen still
    while time.monotonic() < warm_until:
        call()
    c0, times = cpu(), []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    used = (cpu() - c0) / n * 1e3
    times.sort()
    p50, p95 = times[n // 2] * 1e3, times[int(n * 0.95)] * 1e3
    print(f"  {label:<44} CPU {used:5.2f} ms/request   p50 {p50:6.2f} ms   p95 {p95:6.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per path and layer")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s arriving meanwhile")
    args = parser.parse_args()

    import psutil
    import redis
    import requests

    from backend.storage.keys import Keys
    from backend.storage.store import Store
    from backend.web.app import create_app
    from backend.web.readproxy import _UnixConnection
    from bench import cli
    from bench import queries as bench_queries
    from bench.context import Bench, close_all, prepare_paced
    from bench.harness import Names, Redis

    opts = cli.resolve(cli.build_parser().parse_args(["--only", "queries"]))
    embedded = Redis()
    bench = Bench(opts=opts, redis=embedded, out_dir=ROOT / "bench-results", py_spy=None, say=lambda _: None)
    names = Names()
    print("filling an hour of data ...", flush=True)
    bench_queries.fill_hour(bench, names, rate=opts.query_fill_rate)
    server = bench.server(names, label="read-cost")
    reader = next(
        p for p in psutil.Process(server.pid).children(recursive=True) if "reader" in " ".join(p.cmdline())
    )
    sock_path = reader.cmdline()[reader.cmdline().index("--socket") + 1]
    publishers = bench.publishers(names, 1)
    try:
        prepare_paced(publishers, rate=args.rate, duration=600, step=bench.next_step())
        publishers[0].send({"cmd": "go"})
        time.sleep(1.0)
        store = Store(
            redis.Redis.from_url(embedded.url),
            Keys(prefix=names.prefix, recent=names.recent),
            recent_max=500,
            retention_s=3600,
            dead_letter_max=1000,
        )
        app = create_app(
            {"REDIS_URL": embedded.url, **names.env(), "RUN_WORKER": False, "ASYNC_MODE": "threading"}
        )
        client = app.test_client()
        unix = _UnixConnection(sock_path, timeout_s=30.0)  # what the web process forwards on

        def over_socket(path: str) -> None:
            unix.request("GET", path)
            answer = unix.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{path}: HTTP {answer.status}")

        def reader_cpu() -> float:
            times = reader.cpu_times()
            return times.user + times.system

        web = psutil.Process(server.pid)
        http = requests.Session()

        def over_http(path: str) -> None:
            answer = http.get(server.url + path, timeout=30)
            if answer.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {answer.status_code}")

        def web_and_reader_cpu() -> float:
            times = web.cpu_times()
            return times.user + times.system + reader_cpu()

        print(f"{args.requests} requests each while {args.rate:g} events/s arrive:")
        for path in PATHS:
            window = int(path.rsplit("=", 1)[1])
            print(f"window={window}")
            _measure(
                "Store.aggregate in this process",
                lambda w=window: store.aggregate(w),
                args.requests,
                time.process_time,
            )
            _measure(
                "Flask test client in this process",
                lambda p=path: client.get(p),
                args.requests,
                time.process_time,
            )
            _measure("read process over its socket", lambda p=path: over_socket(p), args.requests, reader_cpu)
            _measure(
                "HTTP to the web process (web + read CPU)",
                lambda p=path: over_http(p),
                args.requests,
                web_and_reader_cpu,
            )
    finally:
        for helper in publishers:
            helper.proc.kill()
        close_all(publishers)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
