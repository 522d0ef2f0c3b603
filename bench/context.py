"""What every benchmark section shares: the `Bench` it is handed and a few small helpers.

Conventions for the sections (bench/ingest.py, fanout.py, queries.py, soak.py, modes.py and
realtime.py), each of which returns a plain dict that goes into the JSON as it is:
- Rates are events per second; latencies in ms; CPU in % of one core (200% = both cores here).
- Every figure comes from a measurement in this run; when something could not be measured the
  field is None and a note says why. Nothing is extrapolated.
- A section gets its own channel and key prefix, and its own server process (started fresh so
  its RSS and CPU belong to that section alone).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.harness import Names, Redis, Server
from bench.proto import Helper


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


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def close_all(helpers) -> None:
    for h in helpers:
        with contextlib.suppress(Exception):
            h.close()


def rnd(x, nd=1):
    """round(), passing None through (a figure that could not be measured stays None)."""
    return None if x is None else round(x, nd)


def go(pubs: list[Helper], timeout: float) -> list[dict]:
    """Start the prepared publishers together; their results once they are done."""
    for h in pubs:
        h.send({"cmd": "go"})
    return [h.recv(timeout=timeout) for h in pubs]


def process(pid: int) -> psutil.Process:
    return psutil.Process(pid)


def mb(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)
