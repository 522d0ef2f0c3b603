"""`pulseboard up`: the whole system on one machine, on embedded defaults.

Starts a private Redis when REDIS_URL is unset, the generator as a child process (it gets its own
core), and the server with its worker and read process (children on a multi-core machine). Ctrl-C or SIGTERM stops all of it; the
children are also tied to us with PR_SET_PDEATHSIG, so even a SIGKILL leaves no orphans.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

import redis

from backend.cli.embedded_redis import EmbeddedRedis
from backend.cli.procs import (
    die_with_parent,
    generator_command,
    share_metrics_with_children,
    stop,
    worker_in_own_process,
)
from backend.config import SettingError, current

log = logging.getLogger(__name__)


def up(args) -> int:
    own_process = worker_in_own_process(current().as_dict())
    if own_process:
        share_metrics_with_children()  # before prometheus_client is imported: one /metrics
    from backend import create_app
    from backend.cli.serve import (
        interrupt_on_sigterm,
        serve,
        start_background,
        start_children,
        stop_background,
    )
    from backend.web.extensions import socketio
    from backend.web.httpserver import ensure_port_free
    from backend.web.runtime import get_runtime

    ensure_port_free(args.host, args.port)  # before Redis or the worker start: a one-line error
    interrupt_on_sigterm()
    embedded = None
    generator = None
    app = None
    gave_up: list[str] = []

    def give_up(why: str) -> None:
        gave_up.append(why)
        os.kill(os.getpid(), signal.SIGTERM)  # the clean path, as if stopped

    try:
        url = current().REDIS_URL
        if not url and current().REDIS_CLUSTER:
            # The embedded Redis is one plain server: cluster clients would refuse it.
            raise SettingError(
                "REDIS_CLUSTER=true needs REDIS_URL (a node of the cluster); `up` embeds a single Redis"
            )
        if not url:
            embedded = EmbeddedRedis().start()
            url = embedded.url
            log.info("started embedded Redis at %s (%s)", url, embedded.binary)
        app = create_app(
            {
                "ASYNC_MODE": args.async_mode,
                "REDIS_URL": url,
                **({"MESSAGE_QUEUE": True} if own_process else {}),
            }
        )
        # Ingest on a core of its own, reads in a process of their own (docs/benchmarks.md).
        start_children(app, worker=own_process)
        start_background(app, worker=not own_process)
        if embedded is not None:
            # A dead embedded Redis is restarted (empty, unless it persists); a crash loop stops us.
            socketio.start_background_task(embedded.watch, socketio.sleep, on_give_up=give_up)
        if not args.no_generator:
            _wait_for_worker(get_runtime(app).store)  # else its first events go to nobody
            generator = subprocess.Popen(
                generator_command(
                    url,
                    *("--rate", str(args.rate), "--profile", args.profile),
                    # the server's transport, whatever the child would read from its environment
                    *("--transport", app.config["INGEST_TRANSPORT"]),
                ),
                preexec_fn=die_with_parent,
                start_new_session=True,  # Ctrl-C reaches us; we stop it in order
            )
        print(
            f"\n  Pulseboard is running: http://{args.host}:{args.port}\n"
            f"  Redis: {url}{' (embedded)' if embedded else ''}\n  Ctrl-C to stop.\n",
            flush=True,
        )
        serve(app, args.host, args.port)
    except KeyboardInterrupt:
        pass
    finally:
        stop(generator)  # first: nothing it publishes may find the worker gone
        if app is not None:
            stop_background(app)  # before Redis goes, so the worker doesn't log a false outage
        if embedded is not None:
            # python-socketio's Redis manager (MESSAGE_QUEUE) has no stop: its listener would log
            # the embedded Redis going away below as an error on every clean stop.
            logging.getLogger("socketio.server").setLevel(logging.CRITICAL)
            embedded.close()
        log.info("stopped")
    if gave_up:
        log.error("stopped because the embedded Redis keeps dying: %s", gave_up[0])
        return 1
    return 0


def _wait_for_worker(store, timeout_s: float = 15.0) -> None:
    """Until a worker is subscribed (its heartbeat is set only then), at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if store.worker_alive():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    log.warning("no worker subscribed after %.0fs; starting the generator anyway", timeout_s)
