"""`pulseboard generate`: publish simulated traffic to Redis until stopped.

    pulseboard generate [--rate 200] [--duration 0] [--profile mixed] [--redis-url URL]
                        [--seed N] [--burst-every 120] [--count 0] [--transport pubsub|stream]

The lead's CLI attaches this with ``add_arguments(subparser)`` and calls ``run(args)``; it also
runs on its own as ``python -m generator.cli``. SIGINT/SIGTERM stop it after the current batch
and print a one-line summary; a second signal exits at once.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable

import redis
from redis.exceptions import RedisClusterException

from backend.config import SettingError, current, load
from backend.ingest.stream import TRANSPORTS
from backend.storage.keys import DASHBOARD_GENERATOR
from generator.control import ControlError, parse_rate
from generator.publisher import Generator, Summary
from generator.traffic import DEFAULT_BURST_EVERY_S, PROFILES

log = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_SIGNAL = 130


def _positive_rate(text: str) -> float:
    try:
        return parse_rate(text)
    except ControlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative(kind: type) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
        if not (value >= 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError("must be >= 0")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--rate",
        type=_positive_rate,
        default=None,
        help=f"events per second (default: GENERATOR_RATE, {current().GENERATOR_RATE:g})",
    )
    parser.add_argument(
        "--duration", type=_non_negative(float), default=0.0, help="seconds to run; 0 runs until stopped"
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help=f"traffic profile (default: GENERATOR_PROFILE, {current().GENERATOR_PROFILE})",
    )
    parser.add_argument("--redis-url", default=None, help="Redis to publish to (default: REDIS_URL)")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible traffic")
    parser.add_argument(
        "--burst-every",
        type=_non_negative(float),
        default=DEFAULT_BURST_EVERY_S,
        metavar="S",
        help=f"mean seconds between incident bursts; 0 disables them (default: {DEFAULT_BURST_EVERY_S:g})",
    )
    parser.add_argument(
        "--count", type=_non_negative(int), default=0, help="stop after this many events; 0 means no limit"
    )
    parser.add_argument(
        "--name",
        default=None,
        metavar="NAME",
        help=f"this generator's control identity: {DASHBOARD_GENERATOR!r} is the one the dashboard "
        "and POST /api/generator steer (`pulseboard up` starts it); any other name has control and "
        "status hashes of its own (default: generate-<pid>, so it leaves a running dashboard "
        "generator alone)",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default=None,
        help="pubsub: PUBLISH on REDIS_CHANNEL; stream: XADD to INGEST_STREAM, keeping what a Redis "
        f"outage holds up (default: INGEST_TRANSPORT, {current().INGEST_TRANSPORT})",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulseboard generate",
        description="Publish realistic simulated traffic to Redis (Pub/Sub or the ingest stream).",
    )
    return add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the generator with parsed `args`; returns the process exit code."""
    redis_url = args.redis_url if args.redis_url is not None else current().REDIS_URL
    if not redis_url:
        print("pulseboard generate: set REDIS_URL or use `pulseboard up`", file=sys.stderr)
        return EXIT_USAGE
    try:
        generator = Generator(
            redis_url,
            rate=args.rate,
            profile=args.profile,
            seed=args.seed,
            burst_every_s=args.burst_every,
            transport=args.transport,
            name=getattr(args, "name", None) or f"generate-{os.getpid()}",
        )
    except ValueError as exc:  # also a malformed REDIS_URL, which redis-py reports as ValueError
        print(f"pulseboard generate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (redis.RedisError, RedisClusterException) as exc:
        # REDIS_CLUSTER: a cluster client reads the slot map when it is built, so an unreachable
        # cluster fails here (a plain client would connect, and reconnect, in the loop).
        print(f"pulseboard generate: cannot reach the Redis Cluster at {redis_url}: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()
    outcome: dict[str, Summary | BaseException] = {}

    def work() -> None:
        try:
            outcome["summary"] = generator.run(stop, duration_s=args.duration, max_events=args.count or None)
        except BaseException as exc:
            outcome["error"] = exc

    # The loop runs in a worker thread so that the signal handlers (which always run in the main
    # thread) never fire while the main thread is inside Event.wait holding the Event's lock;
    # calling stop.set() from there could deadlock.
    worker = threading.Thread(target=work, name="pulseboard-generator", daemon=True)
    signals = _install_signal_handlers(stop)
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    finally:
        _restore_signal_handlers(signals)
        if not worker.is_alive():
            generator.close()

    if "error" in outcome:
        raise outcome["error"]
    summary = outcome["summary"]
    print(summary.line(), flush=True)
    return 0


def _install_signal_handlers(stop: threading.Event) -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may install handlers; the embedding caller owns stopping

    def handle(signum, _frame):
        if stop.is_set():
            # Second signal: the operator does not want to wait for the batch in flight.
            print(f"pulseboard generate: {signal.Signals(signum).name} again, exiting now", file=sys.stderr)
            sys.stderr.flush()
            raise SystemExit(EXIT_SIGNAL)
        log.info("%s: stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handle)
    return previous


def _restore_signal_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    try:
        load()  # the environment (and .env) is read here
    except SettingError as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=current().LOG_LEVEL.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
