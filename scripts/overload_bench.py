"""What clients see when a node is overloaded or its Redis goes away: status codes, not tracebacks.

    .venv/bin/python scripts/overload_bench.py [--concurrent 200] [--outage-s 5]

Starts its own Redis and `pulseboard serve` (unless --url), fills an hour of aggregates, then:
1. fires --concurrent simultaneous `GET /api/metrics/aggregate?window=3600` (redis-py's default
   pool of 100 answered part of them with 500 MaxConnectionsError);
2. stops Redis for --outage-s while requests keep coming, and counts status codes and the log
   lines the server wrote meanwhile;
3. restarts Redis and sends 150 ingests on the pooled (now dead) connections.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.cli.embedded_redis import EmbeddedRedis, free_port
from backend.cli.procs import pulseboard_command, stop


def fill(redis_url: str, base: str) -> None:
    """An hour of events, ~20 per second of it, through the API."""
    now = time.time()
    events = [
        {"metric": f"m{i % 5}", "value": {"ms": 10 + i % 300, "bytes": i}, "ts": now - 3590 + i * 0.05}
        for i in range(72_000)
    ]
    with requests.Session() as s:
        for i in range(0, len(events), 1000):
            s.post(base + "/api/ingest", json=events[i : i + 1000], timeout=30)
    client = redis.Redis.from_url(redis_url)
    deadline = time.time() + 60
    while time.time() < deadline:
        stats = requests.get(base + "/api/metrics/stats", timeout=10).json()
        if stats.get("accepted", 0) >= len(events):
            break
        time.sleep(0.5)
    client.close()


def burst(base: str, n: int, path: str) -> tuple[collections.Counter, float]:
    def one(_):
        try:
            return requests.get(base + path, timeout=60).status_code
        except requests.RequestException as exc:
            return type(exc).__name__

    t = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        codes = collections.Counter(pool.map(one, range(n)))
    return codes, time.monotonic() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--outage-s", type=float, default=5.0)
    args = parser.parse_args()
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = Path(tmp) / "server.log"
        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "PULSEBOARD_ENV_FILE": "/nonexistent",
            "INGEST_RATE_LIMIT": "",
            "RECONNECT_MAX_S": "0.5",
        }
        with log_path.open("wb") as log_file:
            server = subprocess.Popen(
                pulseboard_command("serve", "--port", str(port)), env=env, stdout=log_file, stderr=log_file
            )
        try:
            for _ in range(200):
                try:
                    if requests.get(base + "/api/ready", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            fill(redis_server.url, base)
            codes, took = burst(base, args.concurrent, "/api/metrics/aggregate?window=3600")
            print(f"{args.concurrent} concurrent aggregate?window=3600: {dict(codes)} in {took:.1f} s")

            mark = len(log_path.read_bytes())
            redis_server.stop()
            outage = collections.Counter()
            bodies = set()
            end = time.monotonic() + args.outage_s
            while time.monotonic() < end:
                for path in ("/api/metrics/aggregate?window=60", "/api/metrics/recent", "/api/alerts"):
                    resp = requests.get(base + path, timeout=10)
                    outage[resp.status_code] += 1
                    if resp.status_code >= 500:
                        bodies.add(resp.json().get("error"))
            redis_server.start()
            during = log_path.read_bytes()[mark:].decode(errors="replace")
            print(f"Redis down {args.outage_s:.0f} s: {dict(outage)} answers, errors {sorted(bodies)}")
            print(
                f"  server log meanwhile: {during.count(chr(10))} lines, {during.count('Traceback')} tracebacks, "
                f"{during.count('backend.web.errors')} from the request path"
            )
            time.sleep(0.2)  # let the ready check reconnect; the ingests below reuse pooled connections
            ingest = collections.Counter(
                requests.post(
                    base + "/api/ingest", json={"metric": "after", "value": i}, timeout=10
                ).status_code
                for i in range(150)
            )
            print(f"150 ingests right after Redis returned: {dict(ingest)}")
        finally:
            stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
