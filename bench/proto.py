"""The runner talks to its helper processes in JSON lines: commands on stdin, replies on stdout.

Helpers log to stderr, which the runner sends to a file under the results directory. Every helper
is started with PR_SET_PDEATHSIG, so none outlives an interrupted benchmark.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
from pathlib import Path

import orjson

from backend.cli.procs import die_with_parent

ROOT = Path(__file__).resolve().parents[1]  # the repository: bench/ sits at its top


# --- helper side ---------------------------------------------------------------------------
def reply(obj: dict) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def commands():
    """Commands from the runner, one dict per line, until stdin closes."""
    for line in sys.stdin:
        line = line.strip()
        if line:
            yield orjson.loads(line)


def serve(handlers: dict) -> None:
    """A synchronous helper's loop: reply `handlers[cmd](command)` to each command, an error
    reply when it raises, until `quit` or the end of stdin."""
    for cmd in commands():
        if cmd["cmd"] == "quit":
            return
        try:
            reply(handlers[cmd["cmd"]](cmd))
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})


# --- runner side ---------------------------------------------------------------------------
class HelperError(RuntimeError):
    pass


class Helper:
    """A helper process: `python -m <module> <args>`, JSON lines both ways."""

    def __init__(
        self, module: str, args: list[str], *, log_path: Path, env: dict | None = None, name: str = ""
    ):
        self.name = name or module.rsplit(".", 1)[-1]
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            preexec_fn=die_with_parent,
        )
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(orjson.JSONDecodeError):
                self._lines.put(orjson.loads(line))
        self._lines.put(None)  # EOF

    def send(self, obj: dict) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(orjson.dumps(obj) + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise HelperError(f"{self.name} exited ({self.proc.poll()}); see {self.log_path}") from exc

    def recv(self, timeout: float) -> dict:
        item = self.poll(timeout)
        if item is None:
            raise HelperError(f"{self.name}: no reply within {timeout:.0f}s; see {self.log_path}")
        return item

    def poll(self, timeout: float) -> dict | None:
        """Like recv, but None when nothing arrived within `timeout`."""
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            raise HelperError(f"{self.name} exited ({self.proc.wait()}); see {self.log_path}")
        if "error" in item:
            raise HelperError(f"{self.name}: {item['error']}")
        return item

    def request(self, obj: dict, timeout: float) -> dict:
        self.send(obj)
        return self.recv(timeout)

    def close(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.send({"cmd": "quit"})
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._log.close()
