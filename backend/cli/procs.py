"""Child processes that never outlive us."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile

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


def share_metrics_with_children() -> None:
    """Prometheus multiprocess mode for this process and the children it starts (backend/
    telemetry.py): call before anything imports prometheus_client. Kept if the user set it."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    path = tempfile.mkdtemp(prefix="pulseboard-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)


def _own_process(mode: str) -> bool:
    """A mode setting (WORKER_MODE, READ_MODE) asking for a child process: `process`, or `auto`
    on a machine with more than one core."""
    return mode == "process" or (mode == "auto" and (os.cpu_count() or 1) > 1)


def worker_in_own_process(cfg) -> bool:
    mode = cfg["WORKER_MODE"]
    if mode not in ("auto", "process", "thread"):
        raise ValueError(f"WORKER_MODE must be auto, process or thread, got {mode!r}")
    return _own_process(mode)


def reads_in_own_process(cfg) -> bool:
    return _own_process(cfg["READ_MODE"])


def settle_gc() -> None:
    """After start-up: move what exists to the permanent generation (gc.freeze) and collect the
    young generations less often. A busy node allocates many short-lived objects per batch; with
    the defaults, full collections walk every object of the app and pause the loop for tens of
    milliseconds, which showed as the p99 of event delivery."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
