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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.harness import CpuMeter, Names, Redis, Server
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
        from backend.config import current

        maxlen = dict(self.opts.server_env).get("INGEST_STREAM_MAXLEN") or current().INGEST_STREAM_MAXLEN
        return ["--stream", names.stream, "--maxlen", str(maxlen)]

    def publishers(self, names: Names, n: int, shape: str | None = None) -> list[Helper]:
        """`n` publisher processes of events of `shape` (bench.events.SHAPES; --event-shape
        unless given)."""
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
                        "--event-shape",
                        shape or self.opts.event_shape,
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
        """`n` python-socketio clients (bench/clients.py) in `procs` processes."""
        return self.client_processes(
            "clients", n, procs, ["--url", server.url, "--tag", self.tag, "--window", "60"]
        )

    def client_processes(self, module: str, n: int, procs: int, args: list[str]) -> list[Helper]:
        """`n` clients of bench/<module>.py shared among `procs` processes (named <module>-<i>),
        each ready when this returns."""
        sizes = split(n, max(1, min(procs, n)))
        helpers = [
            Helper(
                f"bench.{module}",
                [*args, "--clients", str(size)],
                log_path=self.log_dir / f"{module}-{i}.log",
                name=f"{module}-{i}",
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

    def cpu_meter(self, server: Server, helpers: Iterable[Helper] = ()) -> CpuMeter:
        """A started CpuMeter on the server (with its worker child), Redis and `helpers`."""
        procs = {"server": server.ps, "redis": self.redis.proc}
        procs.update({h.name: process(h.pid) for h in helpers})
        return CpuMeter(procs).start()

    def server(
        self,
        names: Names,
        *,
        async_mode: str = "eventlet",
        strategy: str = "batch",
        label: str,
        env: dict | None = None,
    ) -> Server:
        server = Server(
            self.redis.url,
            names,
            self.log_dir,
            async_mode=async_mode,
            strategy=strategy,
            label=label,
            extra_env={**(env or {}), **dict(self.opts.server_env)},
        )
        try:
            return server.wait_ready()
        except Exception:
            server.stop()  # one that never got ready must not run on into the next section
            raise


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def close_all(helpers) -> None:
    for h in helpers:
        with contextlib.suppress(Exception):
            h.close()


def rnd(x, nd=1):
    """round(), passing None through (a figure that could not be measured stays None)."""
    return None if x is None else round(x, nd)


def split(n: int, parts: int) -> list[int]:
    """`n` in `parts` shares that differ by one at most (events per publisher, clients per process)."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def prepare_burst(pubs: list[Helper], events: int, step: int, **extra) -> None:
    """Have the publishers pack `events` between them for one burst (`extra`: e.g. spread_s)."""
    for h, n in zip(pubs, split(events, len(pubs)), strict=True):
        h.request({"cmd": "prepare", "mode": "burst", "count": n, "step": step, **extra}, timeout=120)


def prepare_paced(pubs: list[Helper], *, rate: float, duration: float, step: int) -> None:
    """Have the publishers share `rate` events/s for `duration` seconds."""
    for h in pubs:
        h.request(
            {"cmd": "prepare", "mode": "paced", "rate": rate / len(pubs), "duration": duration, "step": step},
            timeout=60,
        )


def publish_span(results: list[dict]) -> tuple[float, float]:
    """The first and last PUBLISH of all the publishers' results."""
    return min(p["first_pub"] for p in results), max(p["last_pub"] for p in results)


def go(pubs: list[Helper], timeout: float) -> list[dict]:
    """Start the prepared publishers together; their results once they are done."""
    for h in pubs:
        h.send({"cmd": "go"})
    return [h.recv(timeout=timeout) for h in pubs]


def process(pid: int) -> psutil.Process:
    return psutil.Process(pid)


def mb(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)
