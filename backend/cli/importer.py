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

import csv
import io
import logging
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis

from backend.config import current
from backend.core.events import Rejection, parse_event, validate
from backend.core.importfmt import FORMATS, CsvMapping, detect_format
from backend.ingest.stream import GROUP, xadd_all

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

CHUNK = 1000  # events per MULTI/EXEC: one round trip, and the granularity of resuming
SHOW_REJECTS = 10  # rejected lines printed as they occur; --rejects FILE keeps all of them
POLL_S = 0.05  # how often a waiting importer asks Redis for the backlog
STALL_WARN_S = 10.0  # a backlog that does not shrink for this long gets a warning
TTY_REDRAW_S = 0.2
LOG_EVERY_S = 5.0


class ImportFailed(Exception):
    """A problem that ends the import with a one-line message (exit 1)."""


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


# -- reading ---------------------------------------------------------------------------------------


@dataclass
class Position:
    line: int = 0  # physical lines read so far
    bytes: int = 0  # bytes read so far
    bad_utf8: set[int] = field(default_factory=set)  # CSV lines that were not UTF-8


@dataclass
class Item:
    """One record of the input: where it starts, and either the event or why not."""

    line: int
    raw: bytes | str | list[str]  # a CSV record as its cells
    event: dict | None = None
    rejection: Rejection | None = None


def _binary_lines(f, pos: Position) -> Iterator[bytes]:
    for raw in f:
        pos.line += 1
        pos.bytes += len(raw)
        yield raw


def _text_lines(f, pos: Position) -> Iterator[str]:
    for raw in _binary_lines(f, pos):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            pos.bad_utf8.add(pos.line)
            yield raw.decode("utf-8", "replace")


def read_ndjson(f, pos: Position, first: int, *, now, retention_s, future_s, max_bytes) -> Iterator[Item]:
    for raw in _binary_lines(f, pos):
        if pos.line < first or not raw.strip():
            continue
        line = pos.line
        try:
            ev = parse_event(
                raw, now=now(), retention_s=retention_s, future_tolerance_s=future_s, max_bytes=max_bytes
            )
        except Rejection as rej:
            yield Item(line, raw, rejection=rej)
        else:
            yield Item(line, raw, event=ev.data)


def read_csv(f, pos: Position, first: int, *, now, retention_s, future_s, max_bytes) -> Iterator[Item]:
    reader = csv.reader(_text_lines(f, pos), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise ImportFailed(f"line 1: not a CSV header: {exc}") from None
    if 1 in pos.bad_utf8:
        raise ImportFailed("line 1: the CSV header is not UTF-8")
    try:
        mapping = CsvMapping(header)
    except ValueError as exc:
        raise ImportFailed(f"line 1: {exc}") from None
    started = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # strict=True: a malformed quote. The reader has consumed the line; go on after it.
            line, started = started, reader.line_num + 1
            if line >= first:
                yield Item(line, "", rejection=Rejection("invalid_csv", str(exc)))
            continue
        line, ended = started, reader.line_num
        started = ended + 1
        if line < first or not row or row == [""]:
            continue
        raw = row
        if any(n in pos.bad_utf8 for n in range(line, ended + 1)):
            yield Item(line, raw, rejection=Rejection("invalid_csv", "the line is not valid UTF-8"))
            continue
        try:
            obj = mapping.event(row)
            if len(orjson.dumps(obj)) > max_bytes:
                raise Rejection("too_large", f"event is larger than {max_bytes} bytes")
            ev = validate(obj, now=now(), retention_s=retention_s, future_tolerance_s=future_s)
        except Rejection as rej:
            yield Item(line, raw, rejection=rej)
        else:
            yield Item(line, raw, event=ev.data)


# -- progress --------------------------------------------------------------------------------------


class Progress:
    """Rate, ETA and rejections on stderr: one redrawn line on a terminal, else a line every few s.

    The ETA is for the whole job: when the importer waits for the worker (the default), the end
    is when the worker has stored the last event, so it is the larger of what is left to read at
    the read rate and what is left to store (unread lines plus the backlog) at the worker's rate."""

    def __init__(self, out, name: str, total_bytes: int | None, tty: bool, wait: bool = True):
        self.out = out
        self.name = name
        self.total = total_bytes
        self.tty = tty
        self.wait = wait
        self.started = time.monotonic()
        # (t, lines, events the worker is done with) over the last ~5 s
        self._samples: deque[tuple[float, int, int]] = deque([(self.started, 0, 0)])
        # A log gets its first line after LOG_EVERY_S, a terminal at once.
        self._last_draw = 0.0 if tty else self.started
        self._drawn = False

    def update(
        self,
        pos: Position,
        queued: int,
        rejected: int,
        backlog: int | None,
        state: str = "reading",  # "reading", "waiting" (for room in the backlog) or "draining"
        force: bool = False,
    ) -> None:
        now = time.monotonic()
        every = TTY_REDRAW_S if self.tty else LOG_EVERY_S
        if not force and now - self._last_draw < every:
            return
        self._last_draw = now
        done = max(0, queued - backlog) if backlog is not None else queued
        samples = self._samples
        samples.append((now, pos.line, done))
        while len(samples) > 2 and now - samples[0][0] > 5.0:
            samples.popleft()
        t0, lines0, done0 = samples[0]
        span = max(now - t0, 1e-6)
        line_rate = (pos.line - lines0) / span
        done_rate = (done - done0) / span

        left_lines = None  # lines still to read, estimated from the bytes left
        if state == "draining":
            left_lines = 0
        elif self.total and pos.line:
            left_lines = (self.total - pos.bytes) / (pos.bytes / pos.line)
        eta = None
        if left_lines is not None:
            etas = [left_lines / line_rate if line_rate > 0 else (0.0 if not left_lines else None)]
            if self.wait:
                left_work = left_lines + (backlog or 0)
                etas.append(left_work / done_rate if done_rate > 0 else (0.0 if not left_work else None))
            eta = None if None in etas else max(etas)

        if state == "draining":
            parts = [f"all {pos.line:,} lines read", f"{queued:,} queued", f"{rejected:,} rejected"]
            text = ", ".join(parts) + f"; the worker has {backlog or 0:,} to go ({done_rate:,.0f}/s)"
        else:
            parts = []
            if self.total:
                parts.append(f"{min(100.0, 100.0 * pos.bytes / self.total):3.0f}%")
            parts.append(f"line {pos.line:,}")
            parts.append(f"{queued:,} queued" + (f" (backlog {backlog:,})" if backlog is not None else ""))
            parts.append(f"{rejected:,} rejected")
            parts.append(f"{line_rate:,.0f} lines/s")
            text = ", ".join(parts)
        if left_lines is not None:
            text += f", ETA {_duration(eta) if eta is not None else '?'}"
        if state == "waiting":
            text += ", waiting for the worker"
        text = f"importing {self.name}: {text}"
        if self.tty:
            self.out.write("\r\x1b[K" + text)
            self._drawn = True
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def message(self, text: str) -> None:
        """A line of its own, above the progress line."""
        if self.tty and self._drawn:
            self.out.write("\r\x1b[K")
        self.out.write(text + "\n")
        self.out.flush()
        self._last_draw = 0.0  # redraw the bar at the next update

    def finish(self) -> None:
        if self.tty and self._drawn:
            self.out.write("\r\x1b[K")
            self.out.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# -- the import ------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    stream: str
    lines: int = 0
    queued: int = 0
    stored_wait: bool = False  # the worker was seen to have processed everything queued
    rejected: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    interrupted: bool = False
    retention_s: int = 0

    def summary(self) -> str:
        rate = self.queued / self.elapsed_s if self.elapsed_s > 0 else 0.0
        done = "processed by the worker" if self.stored_wait else "queued"
        head = "interrupted" if self.interrupted else "imported"
        lines = [
            f"{head} {self.name}: {self.queued:,} events {done} via stream {self.stream!r} "
            f"in {self.elapsed_s:.1f}s ({rate:,.0f}/s); {self.lines:,} lines read"
        ]
        total = sum(self.rejected.values())
        too_old = self.rejected.get("stale_ts", 0)
        if total:
            reasons = ", ".join(
                f"{reason} {n:,}" for reason, n in sorted(self.rejected.items(), key=lambda kv: -kv[1])
            )
            lines.append(f"rejected {total:,} lines: {reasons}")
        lines.append(
            f"too old (more than RETENTION_S={self.retention_s}s before now, not aggregated): {too_old:,}"
        )
        return "\n".join(lines)


def _stream_id(value) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else str(value)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class Importer:
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
    ):
        if not redis_url:
            raise ImportFailed("set REDIS_URL (or --redis-url) to the Redis the worker reads")
        self.path = path
        self.name = "stdin" if path == "-" else path
        self.stream = stream
        self.maxlen = maxlen
        self.fmt = fmt
        self.first = resume_from
        default_backlog = min(100_000, maxlen // 2) if maxlen else 100_000
        self.max_backlog = max_backlog or default_backlog
        if maxlen and self.max_backlog >= maxlen:
            raise ImportFailed(
                f"--max-backlog {self.max_backlog} must be below INGEST_STREAM_MAXLEN ({maxlen}), "
                "or unprocessed events could be trimmed"
            )
        self.chunk = chunk
        self.wait = wait
        self.retention_s = current().RETENTION_S if retention_s is None else retention_s
        self.future_s = current().FUTURE_TOLERANCE_S if future_tolerance_s is None else future_tolerance_s
        self.max_bytes = current().MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes
        self.err = err or sys.stderr
        self.tty = self.err.isatty() if tty is None else tty
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=30, socket_connect_timeout=10)
        self.rejects_path = rejects
        self._rejects_file = None
        self.result = Result(self.name, stream, retention_s=self.retention_s)
        self.pos = Position()
        # Resume bookkeeping: every line before `self.done_before` is handled (queued or rejected).
        self.done_before = resume_from
        self._writing: tuple[int, int] | None = None  # first/last line of the chunk being written
        self._stop = False
        self._draining = False
        self._last_id = None
        self.backlog: int | None = None

    @classmethod
    def from_args(cls, args) -> Importer:
        return cls(
            args.file,
            redis_url=args.redis_url or current().REDIS_URL,
            stream=args.stream or current().INGEST_STREAM,
            maxlen=current().INGEST_STREAM_MAXLEN,
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
        if self._writing is not None:
            a, b = self._writing
            return (
                f"the import stopped while lines {a}-{b} were being written and may or may not have "
                f"been queued: resume with --resume-from {a} (may repeat them) or --resume-from {b + 1} "
                "(may miss them)"
            )
        return f"to continue, run the same command with --resume-from {self.done_before}"

    # -- the steps ----------------------------------------------------------------------------------

    def _open(self):
        if self.path == "-":
            return sys.stdin.buffer, None
        p = Path(self.path)
        try:
            f = p.open("rb")
        except OSError as exc:
            raise ImportFailed(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            size = p.stat().st_size if p.is_file() else None
        except OSError:
            size = None
        return f, size

    def _check_group(self) -> None:
        """Refuse to start when no worker consumes the stream: the backlog would never drain."""
        try:
            groups = self.redis.xinfo_groups(self.stream)
        except redis.ResponseError:
            groups = []  # no such key
        if not any(_name(g) == GROUP for g in groups):
            raise ImportFailed(
                f"no worker consumes stream {self.stream!r} (it has no consumer group {GROUP!r}): "
                "start the server or worker with INGEST_TRANSPORT=stream against this Redis "
                "(and the same INGEST_STREAM) first"
            )

    def run(self) -> Result:
        self.redis.ping()
        self._check_group()
        f, size = self._open()
        if self.rejects_path:
            try:
                self._rejects_file = open(self.rejects_path, "ab")  # noqa: SIM115 (closed in close())
            except OSError as exc:
                raise ImportFailed(f"cannot write {self.rejects_path}: {exc.strerror or exc}") from None
        progress = Progress(self.err, self.name, size, self.tty, wait=self.wait)
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)
        started = time.monotonic()
        try:
            self._import(f, progress)
            if self.wait and not self._stop:
                self._drain(progress)
        except KeyboardInterrupt:
            self.result.interrupted = True
        finally:
            signal.signal(signal.SIGINT, previous)
            self.result.elapsed_s = time.monotonic() - started
            self.result.lines = max(0, self.pos.line - self.first + 1)
            progress.finish()
            if f is not sys.stdin.buffer:
                f.close()
        self.result.interrupted = self.result.interrupted or self._stop
        return self.result

    def _on_sigint(self, signum, frame) -> None:
        if self._stop:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self._stop = True

    def _import(self, f, progress: Progress) -> None:
        head = f.peek(1 << 16)[:4096] if hasattr(f, "peek") else b""
        fmt = self.fmt if self.fmt != "auto" else detect_format(self.path, head.split(b"\n", 1)[0])
        clock = _Clock()
        kw = dict(now=clock, retention_s=self.retention_s, future_s=self.future_s, max_bytes=self.max_bytes)
        reader = read_csv if fmt == "csv" else read_ndjson
        payloads: list[bytes] = []
        first_line = None
        rejected = self.result.rejected
        for item in reader(f, self.pos, self.first, **kw):
            if item.rejection is not None:
                rejected[item.rejection.reason] += 1
                self._reject(item, progress)
            else:
                if first_line is None:
                    first_line = item.line
                payloads.append(orjson.dumps(item.event))
            if len(payloads) >= self.chunk:
                self._send(payloads, first_line, item.line, progress)
                payloads, first_line = [], None
            if not payloads:
                self.done_before = item.line + 1
            progress.update(self.pos, self.result.queued, sum(rejected.values()), self.backlog)
            if self._stop:
                break
        if payloads:
            self._send(payloads, first_line, self.pos.line, progress)
        # Every line read so far has been queued or rejected (the chunk in hand was just sent).
        self.done_before = self.pos.line + 1
        progress.update(self.pos, self.result.queued, sum(rejected.values()), self.backlog, force=self.tty)

    def _reject(self, item: Item, progress: Progress) -> None:
        n = sum(self.result.rejected.values())
        rej = item.rejection
        if n <= SHOW_REJECTS:
            detail = rej.detail if rej.reason != "stale_ts" else f"too old: {rej.detail}"
            progress.message(f"line {item.line}: {rej.reason}: {detail}")
            if n == SHOW_REJECTS and not self._rejects_file:
                progress.message(
                    "(further rejected lines are counted, not shown; --rejects FILE keeps them all)"
                )
        if self._rejects_file is not None:
            raw = item.raw
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", "replace")
            elif isinstance(raw, list):
                raw = _csv_text(raw)
            self._rejects_file.write(
                orjson.dumps(
                    {"line": item.line, "reason": rej.reason, "detail": rej.detail, "raw": raw.rstrip("\r\n")}
                )
                + b"\n"
            )

    def _send(self, payloads: list[bytes], first: int, last: int, progress: Progress) -> None:
        self._wait_for_room(progress)
        pipe = self.redis.pipeline(transaction=True)
        xadd_all(pipe, self.stream, payloads, self.maxlen)
        pipe.xinfo_groups(self.stream)
        pipe.xlen(self.stream)
        self._writing = (first, last)
        replies = pipe.execute()
        self._writing = None
        self._last_id = replies[-3]
        self.result.queued += len(payloads)
        self.done_before = last + 1
        self.backlog = self._backlog_of(replies[-2], replies[-1])

    def _wait_for_room(self, progress: Progress) -> None:
        """Block while the worker has more than max_backlog entries unprocessed."""
        if self.backlog is None or self.backlog + self.chunk <= self.max_backlog:
            return
        since = time.monotonic()
        best = self.backlog
        while not self._stop:
            self.backlog = self._read_backlog()
            if self.backlog + self.chunk <= self.max_backlog:
                return
            if self.backlog < best:
                best, since = self.backlog, time.monotonic()
            elif time.monotonic() - since > STALL_WARN_S:
                progress.message(
                    f"the worker processed nothing for {STALL_WARN_S:.0f}s (backlog {self.backlog:,}): "
                    f"is a worker with INGEST_TRANSPORT=stream running against this Redis?"
                )
                since = time.monotonic()
            progress.update(
                self.pos, self.result.queued, sum(self.result.rejected.values()), self.backlog, "waiting"
            )
            time.sleep(POLL_S)

    def _read_backlog(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xinfo_groups(self.stream)
        pipe.xlen(self.stream)
        try:
            groups, length = pipe.execute()
        except redis.ResponseError:
            groups, length = [], 0
        return self._backlog_of(groups, length)

    def _backlog_of(self, groups, length: int) -> int:
        if not any(_name(g) == GROUP for g in groups):
            raise ImportFailed(f"stream {self.stream!r} lost its consumer group {GROUP!r} mid-import")
        backlog = _backlog(groups)
        # Redis < 7 reports no lag. XLEN is then an upper bound: the worker trims what it has
        # stored about once a second, so it overstates the backlog by about a second of work.
        return int(length) if backlog is None else backlog

    def _drain(self, progress: Progress) -> None:
        """Wait until the worker has processed (stored or dead-lettered) every entry we queued:
        the group has delivered past our last entry and none of ours is still pending."""
        if self._last_id is None:
            return
        last = _stream_id(self._last_id)
        self._draining = True
        since = time.monotonic()
        while not self._stop:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xinfo_groups(self.stream)
            pipe.xpending(self.stream, GROUP)
            pipe.xlen(self.stream)
            try:
                groups, pending, length = pipe.execute()
            except redis.ResponseError:
                raise ImportFailed(f"stream {self.stream!r} lost its consumer group {GROUP!r}") from None
            backlog = self._backlog_of(groups, length)
            group = next(g for g in groups if _name(g) == GROUP)
            delivered = _stream_id(group.get("last-delivered-id") or "0-0")
            oldest_pending = _stream_id(pending["min"]) if pending["pending"] else None
            if delivered >= last and (oldest_pending is None or oldest_pending > last):
                self.result.stored_wait = True
                return
            if time.monotonic() - since > STALL_WARN_S:
                progress.message(
                    f"still waiting for the worker to process the last events (backlog {backlog:,})"
                )
                since = time.monotonic()
            progress.update(
                self.pos, self.result.queued, sum(self.result.rejected.values()), backlog, "draining"
            )
            time.sleep(POLL_S)


def _csv_text(row: list[str]) -> str:
    """A CSV record written back as CSV (quoted where needed), for the rejects file."""
    out = io.StringIO()
    csv.writer(out).writerow(row)  # the default \r\n terminator: cells with newlines get quoted
    return out.getvalue()[:-2]


class _Clock:
    """time.time() for validation, re-read every 1000 calls: validating a line takes microseconds."""

    __slots__ = ("n", "now")

    def __init__(self):
        self.n = 0
        self.now = time.time()

    def __call__(self) -> float:
        self.n += 1
        if self.n >= 1000:
            self.n = 0
            self.now = time.time()
        return self.now


def _name(group) -> str:
    name = group.get("name")
    return name.decode() if isinstance(name, bytes) else str(name)


def _backlog(groups) -> int | None:
    """Entries the worker has not finished: not yet delivered (lag) plus delivered, unacknowledged."""
    for g in groups or ():
        if _name(g) == GROUP:
            lag = g.get("lag")
            return None if lag is None else int(lag) + int(g.get("pending") or 0)
    return None


__all__ = ["ImportFailed", "Importer", "Result", "add_arguments", "read_csv", "read_ndjson", "run"]
