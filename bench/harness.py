"""Processes the benchmark runs: the embedded Redis, the real server, and resource sampling."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import psutil
import redis
import requests

from backend.cli.embedded_redis import EmbeddedRedis, free_port
from backend.cli.procs import die_with_parent
from backend.cli.procs import stop as stop_process
from bench.proto import ROOT


@dataclass
class Names:
    """A channel, stream and key prefix of one benchmark section's own."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def channel(self) -> str:
        return f"bench:{self.token}:metrics"

    @property
    def prefix(self) -> str:
        return f"bench:{self.token}:"

    @property
    def recent(self) -> str:
        return f"bench:{self.token}:recent"

    @property
    def stream(self) -> str:
        return f"bench:{self.token}:stream"

    def env(self) -> dict:
        return {
            "REDIS_CHANNEL": self.channel,
            "KEY_PREFIX": self.prefix,
            "RECENT_KEY": self.recent,
            "INGEST_STREAM": self.stream,
        }


class Redis:
    """The embedded redis-server all sections share (flushed between sections)."""

    def __init__(self) -> None:
        self.server = EmbeddedRedis().start()
        self.url = self.server.url
        self.client = redis.Redis.from_url(self.url)
        self.proc = psutil.Process(self.server.process.pid)

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    @contextlib.contextmanager
    def pubsub_limit(self, value: str):
        """CONFIG SET client-output-buffer-limit for pubsub while the block runs, then restore it."""
        current = self.client.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
        previous = (
            " ".join(current.split()[8:12]) if current.split()[8:9] == ["pubsub"] else "pubsub 32mb 8mb 60"
        )
        self.client.config_set("client-output-buffer-limit", value)
        try:
            yield
        finally:
            self.client.config_set("client-output-buffer-limit", previous)

    def version(self) -> str:
        return str(self.client.info("server").get("redis_version"))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        self.server.close()


class ProcessTree(psutil.Process):
    """A process and its descendants as one (the web process and its worker child): CPU times
    and RSS summed, so figures mean the same whether the worker runs in a thread or a process."""

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self, *self.children(recursive=True)]
        except psutil.Error:
            return [self]

    def cpu_times(self):
        total = [0.0, 0.0]
        for p in self._tree():
            try:
                t = psutil.Process.cpu_times(p)
            except psutil.Error:
                continue
            total[0] += t.user
            total[1] += t.system
        return _Times(*total)

    def waited(self) -> float | None:
        waits = [w for w in map(_threads_waited, self._tree()) if w is not None]
        return sum(waits) if waits else None

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds per process of the tree, by role: the subcommand of a `-m backend.cli`
        child (`worker`, `reader`), `main` for this process itself, else the program's name.
        (Which of the web node, the worker and the read process is busy, not only their sum.)"""
        out: dict[str, float] = {}
        for p in self._tree():
            try:
                t = psutil.Process.cpu_times(p)
                role = "main" if p.pid == self.pid else _role(p.cmdline())
            except psutil.Error:
                continue
            out[role] = out.get(role, 0.0) + t.user + t.system
        return out

    def memory_info(self):
        rss = 0
        for p in self._tree():
            try:
                rss += psutil.Process.memory_info(p).rss
            except psutil.Error:
                continue
        return _Rss(rss)


def _role(cmdline: list[str]) -> str:
    for i, arg in enumerate(cmdline[:-2]):
        if arg == "-m" and cmdline[i + 1] == "backend.cli":
            return cmdline[i + 2]
    return os.path.basename(cmdline[0]) if cmdline else "?"


def waited_s(p: psutil.Process) -> float | None:
    """Seconds `p`'s threads have spent runnable but waiting for a CPU (Linux's schedstat), or
    None where the kernel does not say. Next to CPU%, it tells a busy machine from slow code:
    a process that waited long for a core was held up by what else ran, not by its own work."""
    return p.waited() if isinstance(p, ProcessTree) else _threads_waited(p)


def _threads_waited(p: psutil.Process) -> float | None:
    try:
        tids = [t.id for t in p.threads()]
    except psutil.Error:
        return None
    total, known = 0, False
    for tid in tids:
        try:
            with open(f"/proc/{p.pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
            known = True
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile, or no schedstat here
    return total / 1e9 if known else None


class _Times:
    __slots__ = ("system", "user")

    def __init__(self, user: float, system: float):
        self.user, self.system = user, system


class _Rss:
    __slots__ = ("rss",)

    def __init__(self, rss: int):
        self.rss = rss


class Server:
    """`python -m backend.cli.main serve` as a subprocess, with psutil on its pid (and children)."""

    def __init__(
        self,
        redis_url: str,
        names: Names,
        log_dir: Path,
        *,
        async_mode: str = "eventlet",
        strategy: str = "batch",
        extra_env: dict | None = None,
        label: str = "server",
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.names = names
        self.async_mode = async_mode
        self.strategy = strategy
        self.log_path = log_dir / f"{label}-{async_mode}-{strategy}-{self.port}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,  # only to build the child's environment
            "REDIS_URL": redis_url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "WARNING",
            "PULSEBOARD_ENV_FILE": "/nonexistent",  # a developer's .env must not change the figures
            "WORKER_STRATEGY": strategy,
            "ASYNC_MODE": async_mode,
            "REDIS_CLUSTER": "false",  # the bench's embedded Redis is one plain server
            **names.env(),
            **(extra_env or {}),
        }
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "backend.cli.main",
                    "serve",
                    "--port",
                    str(self.port),
                    "--async-mode",
                    async_mode,
                ],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        self.ps = ProcessTree(self.process.pid)
        self.http = requests.Session()

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 30.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(requests.RequestException):
                if self.http.get(self.url + "/api/ready", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"server not ready within {timeout}s; see {self.log_path}")

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.http.close()
        stop_process(self.process)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class CpuMeter:
    """CPU% of some processes between start() and stop() (100% = one core busy), and in
    `waited` the share of that time each spent runnable with no free core (100% = one thread
    waiting all along)."""

    def __init__(self, procs: dict[str, psutil.Process]):
        self.procs = {**procs, "runner": psutil.Process()}
        self._t0 = 0.0
        self._c0: dict[str, float] = {}
        self._w0: dict[str, float | None] = {}
        self._r0: dict[str, dict[str, float]] = {}
        self.result: dict[str, float | None] = {}
        self.waited: dict[str, float | None] = {}
        self.by_role: dict[str, dict[str, float]] = {}  # of each ProcessTree: CPU% per role

    @staticmethod
    def _cpu(p: psutil.Process) -> float | None:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return None

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def start(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._c0 = {k: self._cpu(p) for k, p in self.procs.items()}
        self._w0 = {k: waited_s(p) for k, p in self.procs.items()}
        self._r0 = {k: p.cpu_by_role() for k, p in self.procs.items() if isinstance(p, ProcessTree)}
        self._busy0 = self._busy()
        return self

    def stop(self) -> dict[str, float | None]:
        """Per process, plus `machine` (all CPUs busy, 200% = both cores) and `others`: what
        processes that are not part of this benchmark used meanwhile (a shared machine)."""
        wall = max(time.monotonic() - self._t0, 1e-9)
        out: dict[str, float | None] = {}
        for k, p in self.procs.items():
            c1, c0 = self._cpu(p), self._c0.get(k)
            out[k] = round(100.0 * (c1 - c0) / wall, 1) if c1 is not None and c0 is not None else None
            w1, w0 = waited_s(p), self._w0.get(k)
            self.waited[k] = round(100.0 * (w1 - w0) / wall, 1) if w1 is not None and w0 is not None else None
            if k in self._r0:
                r0 = self._r0[k]
                self.by_role[k] = {
                    role: round(100.0 * (c - r0.get(role, 0.0)) / wall, 1)
                    for role, c in p.cpu_by_role().items()
                }
        machine = 100.0 * (self._busy() - self._busy0) / wall
        ours = sum(v for v in out.values() if v is not None)
        out["machine"] = round(max(0.0, machine), 1)
        out["others"] = round(max(0.0, machine - ours), 1)
        self.result = out
        return out


def stats_accepted(client: redis.Redis, names: Names) -> int:
    """The worker's lifetime `accepted` counter, straight from Redis (no load on the server)."""
    raw = client.hget(f"{names.prefix}stats", "accepted")
    return int(raw) if raw is not None else 0


def worker_stats(client: redis.Redis, names: Names) -> dict[str, int]:
    """The worker's whole stats hash (received, accepted, rejected, ...)."""
    return {k.decode(): int(v) for k, v in client.hgetall(f"{names.prefix}stats").items()}


def seq_counter(client: redis.Redis, names: Names) -> int:
    """Sequence numbers handed out so far: events the worker took on, in either strategy
    (the per-event strategy does not count `accepted`)."""
    raw = client.get(f"{names.prefix}seq")
    return int(raw) if raw is not None else 0


def wait_accepted(client: redis.Redis, names: Names, target: int, timeout: float, poll_s: float = 0.005):
    """Poll until accepted >= target. Returns (wall time it was seen, or None on timeout; last value)."""
    deadline = time.monotonic() + timeout
    value = 0
    while time.monotonic() < deadline:
        value = stats_accepted(client, names)
        if value >= target:
            return time.time(), value
        time.sleep(poll_s)
    return None, value


def machine_info(redis_version: str | None) -> dict:
    cpu_model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in (
        "flask",
        "flask-socketio",
        "python-socketio",
        "python-engineio",
        "eventlet",
        "gevent",
        "redis",
        "hiredis",
        "orjson",
        "simple-websocket",
        "aiohttp",
        "numpy",
        "psutil",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    vm = psutil.virtual_memory()
    return {
        "cpu_model": cpu_model,
        "logical_cpus": psutil.cpu_count(logical=True),
        "physical_cpus": psutil.cpu_count(logical=False),
        "memory_gb": round(vm.total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "redis_server": redis_version,
        "packages": versions,
        "py_spy": find_py_spy(),
    }


def background_load(seconds: float = 2.0) -> dict:
    """How busy the machine is while we do nothing: other people's processes skew every figure."""
    procs = list(psutil.process_iter(["name"]))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    meter = CpuMeter({}).start()
    time.sleep(seconds)
    cpu = meter.stop()
    usage = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            usage.append((p.cpu_percent(None), p.info["name"]))
    top = [f"{name} {pct:.0f}%" for pct, name in sorted(usage, reverse=True)[:5] if pct >= 1.0]
    return {
        "seconds": seconds,
        "machine_busy_pct": cpu["machine"],
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "top_processes": top,
    }


def code_version() -> dict:
    """The commit measured, and which tracked files differed from it (others work in this tree)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "HEAD").strip() or None, "modified_files": dirty}


def find_py_spy() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")
