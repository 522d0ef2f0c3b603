"""The `pulseboard` command: up, serve, worker, generate, import.

The benchmark is a development tool outside the runtime package: `make bench` or
`python -m bench` from a checkout (nothing here imports it).

The async mode is chosen and the standard library monkey-patched before anything else is
imported, which is why most imports below live inside the functions.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from backend.config import MODES, SettingError, current, load

SERVER_COMMANDS = {"up", "serve", "worker", "reader"}


def _command_of(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _async_mode_of(argv: list[str]) -> str:
    if _command_of(argv) == "reader":
        return "eventlet"  # many reads at once, each pausing between its parts
    for i, arg in enumerate(argv):
        if arg == "--async-mode" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--async-mode="):
            return arg.split("=", 1)[1]
    return current().ASYNC_MODE


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config = load()  # the environment (and .env) is read here, once, before anything else
    except SettingError as exc:  # a malformed setting (config names it): one line, not a traceback
        print(f"pulseboard: {exc}", file=sys.stderr)
        return 2
    if _command_of(argv) in SERVER_COMMANDS:
        from backend.asyncmode import patch

        patch(_async_mode_of(argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from backend.logsetup import setup

    setup(config.LOG_LEVEL, config.LOG_FORMAT)
    try:
        return args.func(args) or 0
    except SettingError as exc:
        print(f"pulseboard: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    from generator import cli as generator_cli

    config = current()
    parser = argparse.ArgumentParser(prog="pulseboard", description="Real-time analytics on Redis Pub/Sub.")
    sub = parser.add_subparsers(dest="command")

    def server_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default=config.HOST, help="bind address (default %(default)s)")
        p.add_argument("--port", type=int, default=config.PORT, help="port (default %(default)s)")
        p.add_argument("--async-mode", default=config.ASYNC_MODE, choices=MODES)

    up = sub.add_parser(
        "up",
        help="everything on one machine: embedded Redis (if REDIS_URL is unset), "
        "server, worker and generator",
    )
    server_options(up)
    up.add_argument("--rate", type=float, default=config.GENERATOR_RATE, help="generator events/s")
    up.add_argument("--profile", default=config.GENERATOR_PROFILE)
    up.add_argument("--no-generator", action="store_true", help="start no generator")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="web node: REST + Socket.IO (+ the worker unless --no-worker)")
    server_options(serve)
    serve.add_argument("--no-worker", action="store_true", help="serve clients only; run `pulseboard worker`")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser(
        "worker", help="the ingest worker alone, emitting through the Redis message queue"
    )
    worker.add_argument("--async-mode", default=config.ASYNC_MODE, choices=MODES)
    worker.set_defaults(func=cmd_worker)

    reader = sub.add_parser(
        "reader",
        help="answer GET /api/metrics/* on a Unix socket for a web node (serve and up start it; READ_MODE)",
    )
    reader.add_argument("--socket", required=True, help="path of the Unix socket to listen on")
    reader.set_defaults(func=cmd_reader, async_mode="eventlet")

    gen = sub.add_parser("generate", help="publish simulated traffic")
    generator_cli.add_arguments(gen)
    gen.set_defaults(func=generator_cli.run)

    imp = sub.add_parser("import", help="import events from an NDJSON or CSV file (or -) via the stream")
    from backend.cli import importer

    importer.add_arguments(imp)
    imp.set_defaults(func=importer.run)

    return parser


def _app(args, **overrides):
    from backend import create_app

    config = {"ASYNC_MODE": args.async_mode, **overrides}
    return create_app(config)


def cmd_serve(args) -> int:
    from backend.cli.procs import share_metrics_with_children, worker_in_own_process

    config = current()
    worker = not args.no_worker and config.RUN_WORKER
    own_process = worker and worker_in_own_process(config.as_dict())
    if own_process:
        # Before anything imports prometheus_client: the worker's figures reach our /metrics
        # through its multiprocess files (backend/telemetry.py).
        share_metrics_with_children()
    from backend.cli.serve import (
        interrupt_on_sigterm,
        serve,
        start_background,
        start_children,
        stop_background,
    )
    from backend.web.httpserver import ensure_port_free

    ensure_port_free(args.host, args.port)  # before anything starts: a clean one-line error
    interrupt_on_sigterm()
    # A worker in a process of its own hands batches over through Redis (the fan-out channel).
    app = _app(args, RUN_WORKER=worker, **({"MESSAGE_QUEUE": True} if own_process else {}))
    try:
        start_children(app, worker=own_process)
        start_background(app, worker=worker and not own_process)
        serve(app, args.host, args.port)
    except KeyboardInterrupt:
        pass
    finally:
        stop_background(app)
    return 0


def cmd_worker(args) -> int:
    import threading

    from backend.cli.procs import settle_gc
    from backend.cli.serve import start_background, stop_background

    app = _app(args, MESSAGE_QUEUE=True)
    if app.config["METRICS_PORT"]:
        from prometheus_client import start_http_server

        start_http_server(app.config["METRICS_PORT"], addr=app.config["HOST"])
    stopping = threading.Event()

    def stop(signum, frame):
        stopping.set()  # only a flag: the main thread stops the tasks in order below

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    settle_gc()
    # What `serve` starts for its worker, without the web side: the worker (it emits through the
    # Redis message queue) and the alert evaluator beside it.
    start_background(app, worker=True, ticker=False)
    while not stopping.wait(0.5):
        pass
    stop_background(app)  # finishes the batches in hand, releases the leases
    return 0


def cmd_reader(args) -> int:
    from backend.cli.serve import interrupt_on_sigterm, serve_reads

    interrupt_on_sigterm()
    # Reads only: no worker, no sockets (its app never emits, so no message queue either).
    app = _app(args, RUN_WORKER=False, MESSAGE_QUEUE=False)
    with contextlib.suppress(KeyboardInterrupt):
        serve_reads(app, args.socket)
    return 0


def cmd_up(args) -> int:
    from backend.cli.up import up

    return up(args)


if __name__ == "__main__":
    sys.exit(main())
