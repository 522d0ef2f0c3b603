"""Running the app: background tasks and the server loop (called by the CLI)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import greenlet
from flask import Flask

from backend.cli.procs import die_with_parent, pulseboard_command, reads_in_own_process, settle_gc, stop
from backend.ingest.worker import Worker
from backend.realtime import status
from backend.realtime.broadcast import Broadcaster, FanoutListener, Ticker
from backend.realtime.fanout import Fanout
from backend.tasks.analytics import start_evaluator, stop_evaluator
from backend.web import handoff, offload
from backend.web.extensions import socketio
from backend.web.handoff import Handoff
from backend.web.readproxy import PROXIED_ENVIRON, PeerFromProxy, ReadProxy
from backend.web.runtime import get_runtime

log = logging.getLogger(__name__)

READER_MAX_CONNECTIONS = 256  # concurrent reads in the read process (the web node's pool feeds it)


def start_background(app: Flask, *, worker: bool, ticker: bool = True) -> None:
    """Start the ingest worker and/or the web side (fan-out, tick), once per process."""
    runtime = get_runtime(app)
    cfg = app.config
    remote = cfg["MESSAGE_QUEUE"] or not ticker  # batches reach clients through Redis
    if ticker and runtime.fanout is None:
        runtime.fanout = Fanout(
            socketio,
            soft_bytes=cfg["SLOW_CLIENT_SOFT_BYTES"],
            soft_s=cfg["SLOW_CLIENT_SOFT_S"],
            hard_bytes=cfg["SLOW_CLIENT_HARD_BYTES"],
        )
        runtime.fanout.install()
        offload.yield_to(runtime.fanout.deliveries_pending)  # long reads let deliveries go first
        if remote:
            runtime.listener = FanoutListener(
                socketio,
                runtime.fanout,
                cfg["REDIS_URL"],
                runtime.store.keys.fanout,
                backoff_max_s=cfg["RECONNECT_MAX_S"],
                store=runtime.store,
            )
            socketio.start_background_task(runtime.listener.run)
    if worker and runtime.worker is None:
        broadcaster = Broadcaster(runtime.fanout, channel=runtime.store.keys.fanout if remote else None)
        runtime.worker = Worker(
            cfg, broadcaster, sleep=socketio.sleep, start_task=socketio.start_background_task
        )
        socketio.start_background_task(runtime.worker.run)
        # Runs beside every worker, acts only while that worker holds the lease: one evaluator.
        start_evaluator(app, socketio, runtime.worker)
    if ticker and runtime.ticker is None:
        runtime.ticker = Ticker(
            socketio,
            runtime.store,
            interval_s=cfg["AGGREGATE_TICK_MS"] / 1000.0,
            fanout=runtime.fanout,
            reads=runtime.read_proxy,
        )
        socketio.start_background_task(runtime.ticker.run)
        status.start(
            app, socketio
        )  # Redis/worker up or down, pushed as `status` (backend/realtime/status.py)


def stop_background(app: Flask, wait_s: float = 5.0) -> None:
    """Ask the worker and the tick to stop, and give the worker up to `wait_s` to finish (write
    and broadcast) the batch it holds and release its lease, so a standby takes over at once."""
    runtime = get_runtime(app)
    if runtime.worker_process is not None:
        runtime.worker_process.stop()  # SIGTERM: it finishes its batch and releases the lease
    if runtime.reader_process is not None:
        # Our kept connections first: its server waits for every open connection to end.
        runtime.read_proxy.close()
        runtime.reader_process.stop()
    stop_evaluator(app)
    if app.extensions.get(status.EXTENSION_KEY) is not None:
        app.extensions[status.EXTENSION_KEY].stop()
    for task in (runtime.worker, runtime.ticker, runtime.listener):
        if task is not None:
            task.stop()
    worker = runtime.worker
    deadline = time.monotonic() + wait_s
    while worker is not None and worker.running and time.monotonic() < deadline:
        socketio.sleep(0.05)
    if worker is not None:
        log.info("worker stopped (%s)", "clean" if not worker.running else "timed out")


def interrupt_on_sigterm() -> None:
    """SIGTERM (docker stop, systemd, Kubernetes) takes the same clean path as Ctrl-C: a
    KeyboardInterrupt in the main green thread, the one that runs the server loop."""
    main = greenlet.getcurrent()

    def handler(signum, frame):
        # Once. The stop that follows finishes the batch in hand and stops the children in
        # order; a second SIGTERM must not break into it (systemd signals the whole control
        # group, and `make run` passes its own SIGTERM on to us).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if greenlet.getcurrent() is main:
            raise KeyboardInterrupt
        # Under eventlet or gevent the signal lands in whichever green thread is running.
        # Raised there, it ended that one (a websocket's closing, which swallowed it about one
        # stop in five) and the server went on: thrown into the main one at the hub's next turn.
        if socketio.async_mode == "gevent":
            import gevent

            gevent.get_hub().loop.run_callback(main.throw, KeyboardInterrupt)
        else:
            import eventlet.hubs

            eventlet.hubs.get_hub().schedule_call_global(0, main.throw, KeyboardInterrupt)

    signal.signal(signal.SIGTERM, handler)


def serve(app: Flask, host: str, port: int) -> None:
    settle_gc()
    cfg = app.config
    if socketio.async_mode == "eventlet":
        # Not socketio.run: it listens with SO_REUSEPORT and a backlog of 50, and offers no hook for
        # the header deadline. The same two eventlet calls it makes, with our socket and limits.
        import eventlet.wsgi

        from backend.web import httpserver

        nofile = httpserver.raise_nofile_limit()
        max_size = httpserver.connection_capacity(cfg["HTTP_MAX_CONNECTIONS"], nofile)
        sock = httpserver.listen(host, port, cfg["HTTP_LISTEN_BACKLOG"])
        handed = get_runtime(app).handoff
        if handed is not None:  # connections the read process hands back
            handed.bind(_server_for(sock, app, cfg, handed))
        log.info(
            "Pulseboard serving on http://%s:%d (async mode eventlet, up to %d connections, "
            "open-file limit %d)",
            host,
            port,
            max_size,
            nofile,
        )
        eventlet.wsgi.server(
            sock,
            app,
            log_output=False,
            max_size=max_size,
            socket_timeout=cfg["HTTP_IDLE_TIMEOUT_S"] or None,
            protocol=httpserver.protocol_class(
                cfg["HTTP_IDLE_TIMEOUT_S"], cfg["HTTP_HEADER_TIMEOUT_S"], handed
            ),
        )
        return
    log.info("Pulseboard serving on http://%s:%d (async mode %s)", host, port, socketio.async_mode)
    if socketio.async_mode == "gevent":
        # What socketio.run does for gevent (websockets from simple-websocket), on our socket:
        # it would bind its own, without TCP_NODELAY.
        from gevent import pywsgi

        from backend.web import httpserver

        sock = httpserver.listen(host, port, cfg["HTTP_LISTEN_BACKLOG"], green="gevent")
        socketio.wsgi_server = pywsgi.WSGIServer(sock, app, log=None)
        socketio.wsgi_server.serve_forever()
        return
    kwargs = {"host": host, "port": port, "use_reloader": False, "log_output": False}
    if socketio.async_mode == "threading":
        kwargs["allow_unsafe_werkzeug"] = True  # werkzeug's server: for development and tests
    socketio.run(app, **kwargs)


class ChildProcess:
    """A supervised child process (`pulseboard ARGS`): restarted when it exits (backoff up to
    RECONNECT_MAX_S), stopped with SIGTERM before us, killed with us (PR_SET_PDEATHSIG)."""

    def __init__(self, name: str, args: list[str], env: dict, backoff_max_s: float):
        self.name = name
        self.args = args
        self.env = env
        self.backoff_max_s = backoff_max_s
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = False

    def start(self) -> None:
        self.process = subprocess.Popen(
            pulseboard_command(*self.args),
            env=self.env,
            preexec_fn=die_with_parent,
            # Not in the terminal's process group: Ctrl-C reaches us alone, and we stop the
            # child (the worker finishes its batch) before the embedded Redis goes.
            start_new_session=True,
        )
        log.info("started the %s process (pid %d)", self.name, self.process.pid)

    def pid(self) -> int | None:
        """The running child's, or None while it is down."""
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def supervise(self) -> None:
        backoff = 0.1
        while not self._stopping:
            socketio.sleep(0.2)
            if self._stopping or self.process is None or self.process.poll() is None:
                continue
            log.warning("the %s process exited with %s; restarting it", self.name, self.process.returncode)
            _forget_metrics_of(self.process.pid)
            socketio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)
            if not self._stopping:
                self.restarts += 1
                self.start()

    def stop(self) -> None:
        self._stopping = True
        stop(self.process)  # SIGTERM: the worker finishes the batch in hand and releases the lease
        if self.process is not None:
            clean = self.process.returncode == 0
            log.info(
                "the %s process stopped (%s)",
                self.name,
                "clean" if clean else f"exit {self.process.returncode}",
            )


def _forget_metrics_of(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # its live gauges no longer count


def _supervised(app: Flask, name: str, args: list[str], env: dict) -> ChildProcess:
    child = ChildProcess(name, args, {**os.environ, **env}, app.config["RECONNECT_MAX_S"])
    child.start()
    socketio.start_background_task(child.supervise)
    return child


def start_children(app: Flask, *, worker: bool) -> None:
    """This web process's supervised children: the ingest worker (when `worker`) and, when
    READ_MODE asks for it, the read process."""
    runtime = get_runtime(app)
    if worker:
        runtime.worker_process = start_worker_process(app)
    if reads_in_own_process(app.config):
        runtime.reader_process = start_reader_process(app)


def start_worker_process(app: Flask) -> ChildProcess:
    """The ingest worker as a child process (`pulseboard worker`): ingest keeps a core of its own
    whatever the web process does. A restarted worker takes its dead predecessor's lease over at
    once (same host, process gone)."""
    env = {
        "REDIS_URL": app.config["REDIS_URL"],
        "MESSAGE_QUEUE": "true",
        # Real threads: its Pub/Sub reader takes messages off the socket while a batch is
        # processed (backend/ingest/pubsub.py); it serves no HTTP, so eventlet buys nothing.
        "ASYNC_MODE": "threading",
    }
    return _supervised(app, "ingest worker", ["worker"], env)


def start_reader_process(app: Flask) -> ChildProcess:
    """The read process (`pulseboard reader`, backend/web/readproxy.py), and this app's reads
    forwarded to it. Its socket lives in a new directory only this user can enter."""
    directory = tempfile.mkdtemp(prefix="pulseboard-read-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = os.path.join(directory, "read.sock")
    env = {"REDIS_URL": app.config["REDIS_URL"], "ASYNC_MODE": "eventlet"}
    child = _supervised(app, "read", ["reader", "--socket", path], env)
    proxy = ReadProxy(app.wsgi_app, path, timeout_s=app.config["READ_TIMEOUT_S"])
    app.wsgi_app = proxy
    runtime = get_runtime(app)
    runtime.read_proxy = proxy
    if socketio.async_mode == "eventlet":  # the HTTP server that can hand connections over
        runtime.handoff = Handoff(side="web", max_connections=app.config["HTTP_MAX_CONNECTIONS"])
        runtime.handoff.connect(os.path.join(directory, handoff.SOCKET_NAME))
    return child


def serve_reads(app: Flask, path: str) -> None:
    """The read process's server: the app on a Unix socket (eventlet). Same CPU priority as the
    others: the web process and the worker mostly wait, and the kernel runs a task that wakes
    before one that has been computing. (At nice 5 it answered half the reads in the same time, and
    deliveries were no faster: docs/benchmarks.md.)"""
    import eventlet
    import eventlet.wsgi

    cfg = app.config
    app.wsgi_app = PeerFromProxy(app.wsgi_app)
    settle_gc()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a dead predecessor's
    sock = eventlet.listen(path, socket.AF_UNIX, backlog=cfg["HTTP_LISTEN_BACKLOG"])
    # Client connections the web process hands over (backend/web/handoff.py), served as the
    # web process would: the same deadlines and socket timeout.
    handed = Handoff(side="read", max_connections=cfg["READ_MAX_CONNECTIONS"])
    handed.bind(_server_for(sock, app, cfg, handed))
    handed.listen(os.path.join(os.path.dirname(path), handoff.SOCKET_NAME))
    log.info("Pulseboard reads served on %s", path)
    eventlet.wsgi.server(
        sock, app, log_output=False, max_size=READER_MAX_CONNECTIONS, environ={PROXIED_ENVIRON: True}
    )


def _server_for(sock, app: Flask, cfg, handed: Handoff):
    """An eventlet.wsgi.Server for connections handed to this process (what eventlet.wsgi.server
    builds for its listening socket, with our protocol)."""
    import eventlet.wsgi

    from backend.web import httpserver

    return eventlet.wsgi.Server(
        sock,
        sock.getsockname(),
        app,
        log_output=False,
        max_http_version=eventlet.wsgi.DEFAULT_MAX_HTTP_VERSION,
        socket_timeout=cfg["HTTP_IDLE_TIMEOUT_S"] or None,
        protocol=httpserver.protocol_class(cfg["HTTP_IDLE_TIMEOUT_S"], cfg["HTTP_HEADER_TIMEOUT_S"], handed),
    )
