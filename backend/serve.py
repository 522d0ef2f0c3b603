"""Running the app: background tasks and the server loop (called by the CLI)."""

from __future__ import annotations

import logging
import signal
import time

from flask import Flask

from backend import status
from backend.analytics.service import start_evaluator, stop_evaluator
from backend.broadcast import Broadcaster, Ticker
from backend.extensions import socketio
from backend.runtime import get_runtime
from backend.worker import Worker

log = logging.getLogger(__name__)


def start_background(app: Flask, *, worker: bool, ticker: bool = True) -> None:
    """Start the ingest worker and/or the tick, once per process."""
    runtime = get_runtime(app)
    cfg = app.config
    if worker and runtime.worker is None:
        broadcaster = Broadcaster(socketio, runtime.store, message_queue=cfg["MESSAGE_QUEUE"])
        runtime.worker = Worker(cfg, broadcaster, sleep=socketio.sleep)
        socketio.start_background_task(runtime.worker.run)
        # Runs beside every worker, acts only while that worker holds the lease: one evaluator.
        start_evaluator(app, socketio, runtime.worker)
    if ticker and runtime.ticker is None:
        runtime.ticker = Ticker(
            socketio,
            runtime.store,
            interval_s=cfg["AGGREGATE_TICK_MS"] / 1000.0,
            message_queue=cfg["MESSAGE_QUEUE"],
            max_pending=cfg["SLOW_CLIENT_MAX_PENDING"],
        )
        socketio.start_background_task(runtime.ticker.run)
        status.start(app, socketio)  # Redis/worker up or down, pushed as `status` (backend/status.py)


def stop_background(app: Flask, wait_s: float = 5.0) -> None:
    """Ask the worker and the tick to stop, and give the worker up to `wait_s` to finish (write
    and broadcast) the batch it holds and release its lease, so a standby takes over at once."""
    runtime = get_runtime(app)
    stop_evaluator(app)
    if app.extensions.get(status.EXTENSION_KEY) is not None:
        app.extensions[status.EXTENSION_KEY].stop()
    for task in (runtime.worker, runtime.ticker):
        if task is not None:
            task.stop()
    worker = runtime.worker
    deadline = time.monotonic() + wait_s
    while worker is not None and worker.running and time.monotonic() < deadline:
        socketio.sleep(0.05)
    if worker is not None:
        log.info("worker stopped (%s)", "clean" if not worker.running else "timed out")


def interrupt_on_sigterm() -> None:
    """SIGTERM (docker stop, systemd, Kubernetes) takes the same clean path as Ctrl-C."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def serve(app: Flask, host: str, port: int) -> None:
    log.info("Pulseboard serving on http://%s:%d (async mode %s)", host, port, socketio.async_mode)
    kwargs = {"host": host, "port": port, "use_reloader": False, "log_output": False}
    if socketio.async_mode == "threading":
        kwargs["allow_unsafe_werkzeug"] = True  # werkzeug's server: for development and tests
    socketio.run(app, **kwargs)
