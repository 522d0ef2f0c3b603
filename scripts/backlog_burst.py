"""A backlog on the channel: N events stamped across the last hour, published at full speed on
`metrics_channel` to a default `pulseboard serve` whose Redis keeps Redis's default Pub/Sub
output limit (32 MB). Prints how long until all are aggregated and what was dropped.

    python scripts/backlog_burst.py [N]      (default 360000; docs/benchmarks.md quotes it)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.cli.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from backend.cli.procs import pulseboard_command, stop  # noqa: E402
from bench.events import Templates  # noqa: E402


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 360_000
    with EmbeddedRedis() as server:
        r = redis.Redis.from_url(server.url)
        r.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")  # Redis's default
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "PORT": str(port),
            "PULSEBOARD_ENV_FILE": "/nonexistent",
        }
        proc = subprocess.Popen(pulseboard_command("serve", "--port", str(port)), cwd=ROOT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if requests.get(url + "/api/ready", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.1)
            templates = Templates(seed=3)
            now = time.time()
            payloads = [templates.encode(i, now - 3590 + i * 3590.0 / n, f"b{i}", None) for i in range(n)]
            t0 = time.time()
            pipe = r.pipeline(transaction=False)
            for i, payload in enumerate(payloads):
                pipe.publish("metrics_channel", payload)
                if i % 5000 == 4999:
                    pipe.execute()
            pipe.execute()
            print(f"published {n} in {time.time() - t0:.1f} s ({n / (time.time() - t0):,.0f}/s)")
            received = 0
            while time.time() - t0 < 120:
                received = int(r.hget("pulseboard:stats", "received") or 0)
                if received >= n:
                    break
                time.sleep(0.2)
            accepted = int(r.hget("pulseboard:stats", "accepted") or 0)
            pubsub = requests.get(url + "/api/health", timeout=5).json()["worker"]["pubsub"]
            print(f"received {received}, accepted {accepted} after {time.time() - t0:.1f} s; pubsub {pubsub}")
        finally:
            stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
