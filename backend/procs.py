"""Child processes that never outlive us."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL this (child) process when its parent dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stop(proc: subprocess.Popen | None, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


def pulseboard_command(*args: str) -> list[str]:
    """`pulseboard ARGS...` run by this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "backend.cli", *args]


def generator_command(redis_url: str, *args: str) -> list[str]:
    """The dashboard's generator (`pulseboard up` starts it): the one POST /api/generator steers."""
    return pulseboard_command("generate", "--redis-url", redis_url, "--name", "dashboard", *args)
