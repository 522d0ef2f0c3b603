"""`pulseboard up`: the whole system on embedded defaults, its embedded Redis watched, a clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import psutil
import requests

from backend.cli.embedded_redis import free_port
from backend.cli.procs import pulseboard_command
from tests.conftest import ROOT
from tests.helpers import wait_for
from tests.integration.sio import Recorder


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/api/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _start_up(tmp_path) -> tuple[subprocess.Popen, str, Path]:
    """`pulseboard up` without a generator on a free port, on embedded Redis, logging at INFO to
    tmp_path/up.log: the process, its URL and the log's path."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update({"PULSEBOARD_ENV_FILE": "/nonexistent", "LOG_LEVEL": "INFO"})
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            pulseboard_command("up", "--port", str(port), "--no-generator"),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc, f"http://127.0.0.1:{port}", log_path


def test_up_restarts_a_dead_embedded_redis_and_stops_cleanly(tmp_path):
    proc, url, log_path = _start_up(tmp_path)
    try:
        wait_for(lambda: _ready(url), timeout=30, message="up is ready")
        tree = psutil.Process(proc.pid).children(recursive=True)
        servers = [p for p in tree if re.search(r"(valkey|redis)-server", " ".join(p.cmdline()))]
        assert len(servers) == 1, [p.cmdline() for p in tree]
        readers = [p for p in tree if "reader" in p.cmdline()]
        # READ_MODE=auto: reads have a process of their own on a multi-core machine.
        assert len(readers) == (1 if (os.cpu_count() or 1) > 1 else 0), [p.cmdline() for p in tree]
        if readers:
            wait_for(
                lambda: (
                    requests.get(url + "/api/health", timeout=2).json()["reads"]["process"] == readers[0].pid
                ),
                message="health names the read process",
            )
        servers[0].kill()
        wait_for(
            lambda: "restarted" in log_path.read_text(), timeout=15, message="the watchdog restarts Redis"
        )
        wait_for(lambda: _ready(url), timeout=20, message="ready again on the restarted Redis")
        tree = psutil.Process(proc.pid).children(recursive=True)
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = proc.wait(timeout=20)
    assert code == 0, log_path.read_text()
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    # Stopped in order: the worker before Redis, so no false outage is logged on the way out.
    assert "worker stopped (clean)" in log_path.read_text()


def test_a_clean_stop_logs_no_error(tmp_path):
    """SIGTERM (how `make run` and service managers stop it) after a dashboard client came and
    went stops every part in order and quietly: the Socket.IO message queue's listener, which has
    no stop of its own, must not report the embedded Redis going away as an error."""
    proc, url, log_path = _start_up(tmp_path)
    try:
        wait_for(lambda: _ready(url), timeout=30, message="up is ready")
        with Recorder(url, batch_window=60) as client:
            wait_for(lambda: client.sub_acks, message="a dashboard client subscribed")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    text = log_path.read_text()
    assert code == 0 and "stopped" in text, text
    assert " ERROR " not in text and " WARNING " not in text, text
