"""Fixtures: a real redis-server the suite starts itself, the app, and live server processes.

Every test gets a dedicated Redis database (flushed before and after) and its own key prefix and
channel name, because Pub/Sub channels are shared by all databases of a server.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import redis
import requests

from backend.cli.embedded_redis import EmbeddedRedis, free_port
from backend.cli.procs import pulseboard_command
from tests.helpers import wait_for

# The 3-master Redis Cluster fixtures (session-scoped: one cluster for every module that uses it).
pytest_plugins = ["tests.cluster_fixture"]

ROOT = Path(__file__).resolve().parents[1]
TEST_DB = 9

# Hypothesis (under schemathesis) keeps a cache in ./.hypothesis by default; a test run must leave
# the work tree as it found it. Read when Hypothesis first writes, which is after this import.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "pulseboard-hypothesis")
)


# How long each test function took in a recorded run (tests/durations.json, written by
# `pytest --record-durations`): the longest start first, on different xdist workers, and the short
# ones fill in around them, instead of a long one starting last and the run waiting for it alone.
DURATIONS = Path(__file__).with_name("durations.json")


def pytest_addoption(parser):
    parser.addoption(
        "--record-durations",
        action="store_true",
        help=f"write each test function's wall time (set-up to tear-down) to {DURATIONS.name}",
    )


def _function_id(nodeid: str) -> str:
    return nodeid.split("[", 1)[0]  # one entry for all parameters of a test function


def pytest_collection_modifyitems(config, items):
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    items.sort(key=lambda item: -known.get(_function_id(item.nodeid), 0.0))  # stable: the rest in order


class _DurationRecorder:
    def __init__(self):
        self.running: dict[str, float] = {}  # per test id: reports of several workers interleave
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report):
        spent = self.running.pop(report.nodeid, 0.0) + report.duration
        if report.when != "teardown":
            self.running[report.nodeid] = spent
            return
        key = _function_id(report.nodeid)
        self.seconds[key] = max(self.seconds.get(key, 0.0), spent)

    def pytest_sessionfinish(self, session):
        # Only the ones worth ordering: the rest keep the collection order.
        slow = {k: round(v, 1) for k, v in sorted(self.seconds.items()) if v >= 1.0}
        DURATIONS.write_text(json.dumps(slow, indent=1) + "\n")


def pytest_configure(config):
    # In the controller only (xdist workers have `workerinput`), which sees every worker's reports.
    if config.getoption("--record-durations") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_DurationRecorder(), "pulseboard-durations")


@pytest.fixture(scope="session")
def redis_server():
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server):
    url = f"redis://{redis_server.host}:{redis_server.port}/{TEST_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def names():
    """A channel, stream and key prefix of this test's own."""
    token = uuid.uuid4().hex[:8]
    return {
        "REDIS_CHANNEL": f"test:{token}:metrics",
        "KEY_PREFIX": f"test:{token}:",
        "RECENT_KEY": f"test:{token}:recent",
        "INGEST_STREAM": f"test:{token}:stream",
    }


@pytest.fixture
def app(redis_url, names):
    from backend import create_app

    return create_app({"TESTING": True, "REDIS_URL": redis_url, "ASYNC_MODE": "threading", **names})


@pytest.fixture
def client(app):
    return app.test_client()


@dataclass
class LiveServer:
    url: str
    port: int
    redis_url: str
    env: dict
    process: subprocess.Popen
    log_path: Path
    extra: dict = field(default_factory=dict)

    @property
    def channel(self) -> str:
        return self.env["REDIS_CHANNEL"]

    @property
    def stream(self) -> str:
        return self.env["INGEST_STREAM"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kw):
        return requests.get(self.url + path, timeout=5, **kw)

    def post(self, path: str, **kw):
        return requests.post(self.url + path, timeout=5, **kw)


def _listens_on(pid: int, port: int) -> bool:
    try:
        connections = psutil.Process(pid).net_connections("tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


class _PortTaken(Exception):
    """The free port a server was given was taken before it could bind: start it on another."""


def start_server(
    redis_url: str,
    names: dict,
    tmp_path: Path,
    *,
    command: str = "serve",
    args: tuple = (),
    env: dict | None = None,
    wait_ready: bool = True,
    _attempt: int = 1,
) -> LiveServer:
    port = free_port()
    full_env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "INFO",
        "PULSEBOARD_ENV_FILE": "/nonexistent",  # a developer's .env must not change test results
        "RECONNECT_MAX_S": "0.5",
        # Reads answered in the web process: a read process costs each server start 0.8 s of
        # CPU. The read process's own tests (test_reads) and the dashboard's browser tests ask for it.
        "READ_MODE": "inline",
        **names,
        **(env or {}),
    }
    log_path = tmp_path / f"server-{port}.log"
    with log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            pulseboard_command(command, *(("--port", str(port)) if command != "worker" else ()), *args),
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", port, redis_url, full_env, process, log_path)
    if wait_ready and command != "worker":

        def ready():
            if process.poll() is not None:
                if "is already in use" in server.log() and _attempt < 3:
                    raise _PortTaken  # another worker bound the free port between probe and bind
                raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
            # Ours that answers: another xdist worker's server may hold the same "free" port
            # while ours is still starting (it then exits with "already in use", above), and
            # its answers must not pass for ours.
            if not _listens_on(process.pid, port):
                return False
            try:
                return requests.get(server.url + "/api/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_for(ready, timeout=20, message="server readiness")
        except _PortTaken:
            return start_server(
                redis_url, names, tmp_path, command=command, args=args, env=env, wait_ready=wait_ready,
                _attempt=_attempt + 1,
            )  # fmt: skip
    return server


@pytest.fixture
def server_factory(redis_url, names, tmp_path):
    started: list[LiveServer] = []

    def factory(**kwargs) -> LiveServer:
        kwargs.setdefault("names", names)
        server = start_server(kwargs.pop("redis_url", redis_url), kwargs.pop("names"), tmp_path, **kwargs)
        started.append(server)
        return server

    yield factory
    # SIGTERM them all first, so several servers shut down side by side, not one after another.
    running = [server.process for server in started if server.process.poll() is None]
    for process in running:
        process.terminate()
    for process in running:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
def live_server(server_factory):
    return server_factory()


def with_env(server_factory, env: dict):
    """A `server_factory` whose servers get `env`, under what a test passes itself."""

    def factory(**kwargs):
        kwargs["env"] = {**env, **(kwargs.get("env") or {})}
        return server_factory(**kwargs)

    return factory


def worker_in_process(server_factory):
    """A `server_factory` whose servers run the ingest worker inside the web process
    (WORKER_MODE=thread), for modules about the HTTP surface: that saves the worker process's
    start (0.55 s of CPU) per test. Real-time, e2e and scale-out tests keep the default layout."""
    return with_env(server_factory, {"WORKER_MODE": "thread"})


def default_layout(server_factory):
    """A `server_factory` whose servers run as `serve` does on a multi-core machine: the worker
    and the read process (READ_MODE) in processes of their own."""
    return with_env(server_factory, {"READ_MODE": "process"})
