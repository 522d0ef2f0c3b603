"""The import's writer: chunks of events XADDed to the ingest stream, with backpressure.

A chunk is one MULTI/EXEC (XADD x N, then XINFO GROUPS and XLEN), so it is queued whole or not
at all, which makes the resume point exact, and every write also tells how far behind the worker
is. The worker's unprocessed backlog (the group's lag + pending) never grows past `max_backlog`:
past it the writer waits, so the stream's MAXLEN trim can only ever drop stored entries.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from backend.cli.importer.reading import ImportFailed
from backend.ingest.stream import GROUP, xadd_all

POLL_S = 0.05  # how often a waiting writer asks Redis for the backlog
STALL_WARN_S = 10.0  # a backlog that does not shrink for this long gets a warning
DEFAULT_MAX_BACKLOG = 100_000

# Called on every poll while the writer waits: (state, backlog) -> whether to go on waiting.
Waiting = Callable[[str, int], bool]
Warn = Callable[[str], None]


class StreamWriter:
    def __init__(self, client: redis.Redis, stream: str, *, maxlen: int, chunk: int, max_backlog: int | None):
        self.redis = client
        self.stream = stream
        self.maxlen = maxlen
        self.chunk = chunk
        default = min(DEFAULT_MAX_BACKLOG, maxlen // 2) if maxlen else DEFAULT_MAX_BACKLOG
        self.max_backlog = max_backlog or default
        if maxlen and self.max_backlog >= maxlen:
            raise ImportFailed(
                f"--max-backlog {self.max_backlog} must be below INGEST_STREAM_MAXLEN ({maxlen}), "
                "or unprocessed events could be trimmed"
            )
        self.queued = 0
        self.backlog: int | None = None  # as of the last write or poll
        self.writing: tuple[int, int] | None = None  # first/last line of the chunk being written
        self.last_id = None  # of the last entry written

    def check_group(self) -> None:
        """Refuse to start when no worker consumes the stream: the backlog would never drain."""
        try:
            groups = self.redis.xinfo_groups(self.stream)
        except redis.ResponseError:
            groups = []  # no such key
        if _group(groups) is None:
            raise ImportFailed(
                f"no worker consumes stream {self.stream!r} (it has no consumer group {GROUP!r}): "
                "start the server or worker with INGEST_TRANSPORT=stream against this Redis "
                "(and the same INGEST_STREAM) first"
            )

    def send(self, payloads: list[bytes], first: int, last: int, waiting: Waiting, warn: Warn) -> None:
        """Queue lines `first`..`last` (their good events, `payloads`) in one transaction, once
        the backlog has room for them."""
        self._wait_for_room(waiting, warn)
        pipe = self.redis.pipeline(transaction=True)
        xadd_all(pipe, self.stream, payloads, self.maxlen)
        pipe.xinfo_groups(self.stream)
        pipe.xlen(self.stream)
        self.writing = (first, last)
        replies = pipe.execute()
        self.writing = None
        self.last_id = replies[-3]
        self.queued += len(payloads)
        self.backlog = self._backlog_of(replies[-2], replies[-1])

    def _wait_for_room(self, waiting: Waiting, warn: Warn) -> None:
        """Block while the worker has more than max_backlog entries unprocessed."""
        if self.backlog is None or self.backlog + self.chunk <= self.max_backlog:
            return
        stall = _Stall(warn, self.backlog)
        while True:
            groups, length = self._poll(lambda pipe: None)[:2]
            self.backlog = self._backlog_of(groups, length)
            if self.backlog + self.chunk <= self.max_backlog:
                return
            stall.check(
                self.backlog,
                f"the worker processed nothing for {STALL_WARN_S:.0f}s (backlog {self.backlog:,}): "
                "is a worker with INGEST_TRANSPORT=stream running against this Redis?",
            )
            if not waiting("waiting", self.backlog):
                return
            time.sleep(POLL_S)

    def drain(self, waiting: Waiting, warn: Warn) -> bool:
        """Wait until the worker has processed (stored or dead-lettered) every entry written: the
        group has delivered past the last one and none of ours is still pending. False: stopped
        before."""
        if self.last_id is None:
            return False
        last = _stream_id(self.last_id)
        stall = _Stall(warn, None)
        while True:
            groups, length, pending = self._poll(lambda pipe: pipe.xpending(self.stream, GROUP))
            backlog = self._backlog_of(groups, length)
            delivered = _stream_id(_group(groups).get("last-delivered-id") or "0-0")
            oldest_pending = _stream_id(pending["min"]) if pending["pending"] else None
            if delivered >= last and (oldest_pending is None or oldest_pending > last):
                return True
            stall.check(
                None, f"still waiting for the worker to process the last events (backlog {backlog:,})"
            )
            if not waiting("draining", backlog):
                return False
            time.sleep(POLL_S)

    def _poll(self, more: Callable) -> list:
        """XINFO GROUPS and XLEN (plus what `more` adds to the pipeline), outside a transaction."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xinfo_groups(self.stream)
        pipe.xlen(self.stream)
        more(pipe)
        try:
            return pipe.execute()
        except redis.ResponseError:
            raise ImportFailed(f"stream {self.stream!r} lost its consumer group {GROUP!r}") from None

    def _backlog_of(self, groups, length: int) -> int:
        group = _group(groups)
        if group is None:
            raise ImportFailed(f"stream {self.stream!r} lost its consumer group {GROUP!r} mid-import")
        lag = group.get("lag")
        # Redis < 7 reports no lag. XLEN is then an upper bound: the worker trims what it has
        # stored about once a second, so it overstates the backlog by about a second of work.
        # Otherwise: not yet delivered (lag) plus delivered, unacknowledged.
        return int(length) if lag is None else int(lag) + int(group.get("pending") or 0)


class _Stall:
    """Warns when a wait makes no progress for STALL_WARN_S (and again every STALL_WARN_S)."""

    def __init__(self, warn: Warn, backlog: int | None):
        self.warn = warn
        self.since = time.monotonic()
        self.best = backlog

    def check(self, backlog: int | None, text: str) -> None:
        """`backlog`: a smaller one than ever before is progress (None: only time counts)."""
        if backlog is not None and (self.best is None or backlog < self.best):
            self.best, self.since = backlog, time.monotonic()
        elif time.monotonic() - self.since > STALL_WARN_S:
            self.warn(text)
            self.since = time.monotonic()


def _stream_id(value) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else str(value)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _name(group) -> str:
    name = group.get("name")
    return name.decode() if isinstance(name, bytes) else str(name)


def _group(groups) -> dict | None:
    return next((g for g in groups or () if _name(g) == GROUP), None)
