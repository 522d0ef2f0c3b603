"""`pulseboard import FILE|-`: load a backlog of events through the durable ingest path.

    pulseboard import events.ndjson            # or .csv, or - for stdin
    pulseboard import big.csv --resume-from 412001 --rejects rejected.ndjson

Every line is validated here with the worker's own rules (core.events), so a bad line is
reported with its line number and reason, and one older than RETENTION_S is reported as too old
instead of vanishing into the dead-letter list. Good events are XADDed to INGEST_STREAM as
``{"event": <json>}`` (the stream producers' format, via ingest_stream.xadd_all), a chunk per
MULTI/EXEC: a chunk is queued whole or not at all, which is what makes the resume point exact.

Why the stream and not Pub/Sub: a backlog arrives far faster than live traffic, and Pub/Sub
drops what its subscriber cannot take in time. The stream keeps it until the worker has stored
it. The stream is bounded (producers XADD with MAXLEN ~), so the importer never lets the
worker's unprocessed backlog (the group's lag + pending, from XINFO GROUPS, read in the same
transaction as each chunk) grow past --max-backlog: past that it waits for the worker, and a
MAXLEN trim can only ever drop entries that were already stored.

Ctrl-C: the chunk being read is still queued, then it stops and prints the line to resume from
(``--resume-from N``); a second Ctrl-C stops at once. Progress goes to stderr (a redrawn line on
a terminal, a log line every few seconds otherwise), the summary to stdout.
"""

from __future__ import annotations

import signal
import sys
import time

import orjson
import redis

from backend.cli.importer.progress import Progress, Result
from backend.cli.importer.reading import ImportFailed, Item, Position, Rules, open_input, read
from backend.cli.importer.stream import StreamWriter
from backend.config import current
from backend.core.importfmt import FORMATS
from backend.storage.client import connect
from backend.storage.keys import Partitioning

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

CHUNK = 1000  # events per MULTI/EXEC: one round trip, and the granularity of resuming
SHOW_REJECTS = 10  # rejected lines printed as they occur; --rejects FILE keeps all of them


def add_arguments(p):
    p.add_argument("file", help="NDJSON or CSV file to import; - reads standard input")
    p.add_argument(
        "--format",
        choices=("auto", *FORMATS),
        default="auto",
        help="input format (default auto: .csv/.ndjson/.jsonl by name, else by the first line)",
    )
    p.add_argument(
        "--resume-from",
        type=_positive_int,
        default=1,
        metavar="LINE",
        help="skip the lines before LINE (1-based; an interrupted import prints the number to use)",
    )
    p.add_argument("--redis-url", default=None, help="default: REDIS_URL")
    p.add_argument("--stream", default=None, help="stream to XADD to (default: INGEST_STREAM)")
    p.add_argument(
        "--max-backlog",
        type=_positive_int,
        default=None,
        metavar="N",
        help="most entries the worker may have unprocessed before the import waits "
        "(default: 100000, or half of INGEST_STREAM_MAXLEN if that is smaller)",
    )
    p.add_argument(
        "--chunk", type=_positive_int, default=CHUNK, help=f"events per transaction (default {CHUNK})"
    )
    p.add_argument("--rejects", default=None, metavar="FILE", help="write every rejected line here as NDJSON")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="exit once everything is queued, without waiting for the worker to store it",
    )
    return p


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def run(args) -> int:
    """The CLI entry point: exit code 0 when every line was handled (rejected lines included)."""
    importer = None
    try:
        importer = Importer.from_args(args)
        result = importer.run()
    except ImportFailed as exc:
        print(f"pulseboard import: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except redis.RedisError as exc:
        print(f"pulseboard import: Redis: {exc}", file=sys.stderr)
        if importer is not None and importer.result.queued:
            print(importer.where_to_resume(), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # before the import began (connecting, checking the group)
        print("pulseboard import: interrupted before anything was queued", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if importer is not None:
            importer.close()
    print(result.summary())
    if result.interrupted:
        print(importer.where_to_resume(), file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


class Importer:
    """Reads the input (reading.py), writes its good events through a StreamWriter (stream.py),
    reports (progress.py), and knows where to resume."""

    def __init__(
        self,
        path: str,
        *,
        redis_url: str,
        stream: str,
        maxlen: int,
        fmt: str = "auto",
        resume_from: int = 1,
        max_backlog: int | None = None,
        chunk: int = CHUNK,
        rejects: str | None = None,
        wait: bool = True,
        retention_s: int | None = None,
        future_tolerance_s: int | None = None,
        max_event_bytes: int | None = None,
        err=None,
        tty: bool | None = None,
        partitions: int | None = None,
        cluster: bool | None = None,
    ):
        if not redis_url:
            raise ImportFailed("set REDIS_URL (or --redis-url) to the Redis the worker reads")
        settings = current()
        self.path = path
        self.name = "stdin" if path == "-" else path
        self.fmt = fmt
        self.first = resume_from
        self.chunk = chunk
        self.wait = wait
        self.rules = Rules(
            retention_s=settings.RETENTION_S if retention_s is None else retention_s,
            future_s=settings.FUTURE_TOLERANCE_S if future_tolerance_s is None else future_tolerance_s,
            max_bytes=settings.MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes,
        )
        self.err = err or sys.stderr
        self.tty = self.err.isatty() if tty is None else tty
        parts = Partitioning(
            count=settings.INGEST_PARTITIONS if partitions is None else partitions,
            cluster=settings.REDIS_CLUSTER if cluster is None else cluster,
        )
        self.redis = (
            connect(redis_url, cluster=parts.cluster, socket_timeout=30, socket_connect_timeout=10)
            if parts.cluster
            else redis.Redis.from_url(redis_url, socket_timeout=30, socket_connect_timeout=10)
        )
        self.writer = StreamWriter(
            self.redis, stream, maxlen=maxlen, chunk=chunk, max_backlog=max_backlog, parts=parts
        )
        self.rejects_path = rejects
        self._rejects_file = None
        self.result = Result(self.name, stream, retention_s=self.rules.retention_s)
        self.pos = Position()
        # Resume bookkeeping: every line before `self.done_before` is handled (queued or rejected).
        self.done_before = resume_from
        self._stop = False
        self._draining = False
        self._progress: Progress | None = None

    @classmethod
    def from_args(cls, args) -> Importer:
        settings = current()
        return cls(
            args.file,
            redis_url=args.redis_url or settings.REDIS_URL,
            stream=args.stream or settings.INGEST_STREAM,
            maxlen=settings.INGEST_STREAM_MAXLEN,
            fmt=args.format,
            resume_from=args.resume_from,
            max_backlog=args.max_backlog,
            chunk=args.chunk,
            rejects=args.rejects,
            wait=not args.no_wait,
        )

    def close(self) -> None:
        if self._rejects_file is not None:
            self._rejects_file.close()
        self.redis.close()

    def where_to_resume(self) -> str:
        if self._draining:
            return (
                "every line was read and every good event queued; the worker stores the rest on its "
                "own (nothing to resume)"
            )
        if self.writer.writing is not None:
            a, b = self.writer.writing
            return (
                f"the import stopped while lines {a}-{b} were being written and may or may not have "
                f"been queued: resume with --resume-from {a} (may repeat them) or --resume-from {b + 1} "
                "(may miss them)"
            )
        return f"to continue, run the same command with --resume-from {self.done_before}"

    def run(self) -> Result:
        self.redis.ping()
        self.writer.check_group()
        f, size = open_input(self.path)
        if self.rejects_path:
            try:
                self._rejects_file = open(self.rejects_path, "ab")  # noqa: SIM115 (closed in close())
            except OSError as exc:
                raise ImportFailed(f"cannot write {self.rejects_path}: {exc.strerror or exc}") from None
        self._progress = Progress(self.err, self.name, size, self.tty, wait=self.wait)
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)
        started = time.monotonic()
        try:
            self._import(f)
            if self.wait and not self._stop:
                self._draining = True
                self.result.stored_wait = self.writer.drain(self._waiting, self._progress.message)
        except KeyboardInterrupt:
            self.result.interrupted = True
        finally:
            signal.signal(signal.SIGINT, previous)
            self.result.elapsed_s = time.monotonic() - started
            self.result.lines = max(0, self.pos.line - self.first + 1)
            self._progress.finish()
            if f is not sys.stdin.buffer:
                f.close()
        self.result.interrupted = self.result.interrupted or self._stop
        return self.result

    def _on_sigint(self, signum, frame) -> None:
        if self._stop:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self._stop = True

    def _show(self, state: str = "reading", backlog: int | None = None, force: bool = False) -> None:
        backlog = self.writer.backlog if backlog is None else backlog
        rejected = sum(self.result.rejected.values())
        self._progress.update(self.pos, self.result.queued, rejected, backlog, state, force=force)

    def _waiting(self, state: str, backlog: int) -> bool:
        """The writer waits for the worker: show it, and say whether to go on waiting."""
        self._show(state, backlog)
        return not self._stop

    def _import(self, f) -> None:
        payloads: list[bytes] = []
        partitions: list[int] = []  # of each payload's event
        first_line = None
        for item in read(f, self.path, self.fmt, self.pos, self.first, self.rules):
            if item.rejection is not None:
                self.result.rejected[item.rejection.reason] += 1
                self._reject(item)
            else:
                if first_line is None:
                    first_line = item.line
                payloads.append(orjson.dumps(item.event))
                partitions.append(self.writer.partition_of(item.event))
            if len(payloads) >= self.chunk:
                self._send(payloads, first_line, item.line, partitions)
                payloads, partitions, first_line = [], [], None
            if not payloads:
                self.done_before = item.line + 1
            self._show()
            if self._stop:
                break
        if payloads:
            self._send(payloads, first_line, self.pos.line, partitions)
        # Every line read so far has been queued or rejected (the chunk in hand was just sent).
        self.done_before = self.pos.line + 1
        self._show(force=self.tty)

    def _send(
        self, payloads: list[bytes], first: int, last: int, partitions: list[int] | None = None
    ) -> None:
        self.writer.send(payloads, first, last, self._waiting, self._progress.message, partitions)
        self.result.queued = self.writer.queued
        self.done_before = last + 1

    def _reject(self, item: Item) -> None:
        n = sum(self.result.rejected.values())
        rej = item.rejection
        if n <= SHOW_REJECTS:
            detail = rej.detail if rej.reason != "stale_ts" else f"too old: {rej.detail}"
            self._progress.message(f"line {item.line}: {rej.reason}: {detail}")
            if n == SHOW_REJECTS and not self._rejects_file:
                self._progress.message(
                    "(further rejected lines are counted, not shown; --rejects FILE keeps them all)"
                )
        if self._rejects_file is not None:
            record = {"line": item.line, "reason": rej.reason, "detail": rej.detail, "raw": item.raw_text()}
            self._rejects_file.write(orjson.dumps(record) + b"\n")
