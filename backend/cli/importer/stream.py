"""The import's writer: chunks of events XADDed to the ingest stream, with backpressure.

A chunk is one MULTI/EXEC (XADD x N, then XINFO GROUPS and XLEN), so it is queued whole or not
at all, which makes the resume point exact, and every write also tells how far behind the worker
is. The worker's unprocessed backlog (the group's lag + pending) never grows past `max_backlog`:
past it the writer waits, so the stream's MAXLEN trim can only ever drop stored entries.
With partitions, one stream per partition, each bounded so (see StreamWriter).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from backend.cli.importer.reading import ImportFailed
from backend.ingest.stream import GROUP, xadd_all
from backend.storage.keys import Partitioning

POLL_S = 0.05  # how often a waiting writer asks Redis for the backlog
STALL_WARN_S = 10.0  # a backlog that does not shrink for this long gets a warning
DEFAULT_MAX_BACKLOG = 100_000

# Called on every poll while the writer waits: (state, backlog) -> whether to go on waiting.
Waiting = Callable[[str, int], bool]
Warn = Callable[[str], None]


class StreamWriter:
    """With INGEST_PARTITIONS > 1 (or REDIS_CLUSTER) each event goes to its partition's stream
    (Partitioning.stream, the metric's partition as producer.partition_of) and the bound holds
    per stream: no partition's backlog grows past `max_backlog` (each stream has its own MAXLEN);
    `backlog` reports their sum. On one Redis a chunk is still one MULTI/EXEC over every stream
    it touches; on a cluster a transaction cannot span slots, so it is one MULTI per partition,
    and a chunk interrupted between them may be partly queued (the resume advice for a chunk
    being written already says it may or may not have been)."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        *,
        maxlen: int,
        chunk: int,
        max_backlog: int | None,
        parts: Partitioning | None = None,
    ):
        self.redis = client
        self.stream = stream
        self.parts = parts or Partitioning()
        self.streams = [self.parts.stream(stream, k) for k in range(self.parts.count)]
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
        self.backlogs: dict[str, int] = {}  # stream -> its backlog as of the last write or poll
        self.writing: tuple[int, int] | None = None  # first/last line of the chunk being written
        self.last_ids: dict[str, object] = {}  # stream -> the id of the last entry written to it

    @property
    def backlog(self) -> int | None:
        """Entries written and not yet processed, over every stream (None before any is known)."""
        return sum(self.backlogs.values()) if self.backlogs else None

    @property
    def last_id(self):
        """Of the last entry written (with one stream; any stream's otherwise): None before."""
        return next(reversed(self.last_ids.values()), None) if self.last_ids else None

    def partition_of(self, event: dict) -> int:
        metric = event.get("metric")
        return self.parts.of(metric if isinstance(metric, str) else "")

    def check_group(self) -> None:
        """Refuse to start when no worker consumes the stream(s): the backlog would never drain."""
        for stream in self.streams:
            try:
                groups = self.redis.xinfo_groups(stream)
            except redis.ResponseError:
                groups = []  # no such key
            if _group(groups) is None:
                raise ImportFailed(
                    f"no worker consumes stream {stream!r} (it has no consumer group {GROUP!r}): "
                    "start the server or worker with INGEST_TRANSPORT=stream against this Redis "
                    "(and the same INGEST_STREAM and INGEST_PARTITIONS) first"
                )

    def send(
        self,
        payloads: list[bytes],
        first: int,
        last: int,
        waiting: Waiting,
        warn: Warn,
        partitions: list[int] | None = None,
    ) -> None:
        """Queue lines `first`..`last` (their good events, `payloads`; `partitions` the partition
        of each, default all 0) in one transaction (one per partition on a cluster), once the
        backlog of each stream they go to has room for them."""
        by_stream: dict[str, list[bytes]] = {}
        for i, payload in enumerate(payloads):
            k = partitions[i] if partitions is not None else 0
            by_stream.setdefault(self.streams[k], []).append(payload)
        self._wait_for_room(list(by_stream), waiting, warn)
        self.writing = (first, last)
        if self.parts.cluster:
            batches = [{stream: items} for stream, items in by_stream.items()]
        else:
            batches = [by_stream]
        for batch in batches:
            pipe = self.redis.pipeline(transaction=True)
            for stream, items in batch.items():
                xadd_all(pipe, stream, items, self.maxlen)
                pipe.xinfo_groups(stream)
                pipe.xlen(stream)
            replies = pipe.execute()
            at = 0
            for stream, items in batch.items():
                at += len(items) + 2
                self.last_ids[stream] = replies[at - 3]
                self.queued += len(items)
                self.backlogs[stream] = self._backlog_of(stream, replies[at - 2], replies[at - 1])
        self.writing = None

    def _wait_for_room(self, streams: list[str], waiting: Waiting, warn: Warn) -> None:
        """Block while the worker has more than max_backlog entries of any of `streams` unprocessed."""

        def full() -> bool:
            return any(
                self.backlogs.get(s) is not None and self.backlogs[s] + self.chunk > self.max_backlog
                for s in streams
            )

        if not full():
            return
        stall = _Stall(warn, self.backlog)
        while True:
            for stream in streams:
                groups, length = self._poll(stream, lambda pipe: None)[:2]
                self.backlogs[stream] = self._backlog_of(stream, groups, length)
            if not full():
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
        """Wait until the worker has processed (stored or dead-lettered) every entry written: on
        each stream written to, the group has delivered past the last one and none of ours is
        still pending. False: stopped before."""
        if not self.last_ids:
            return False
        todo = {stream: _stream_id(last) for stream, last in self.last_ids.items()}
        stall = _Stall(warn, None)
        while True:
            for stream, last in list(todo.items()):
                groups, length, pending = self._poll(stream, lambda pipe, s=stream: pipe.xpending(s, GROUP))
                self.backlogs[stream] = self._backlog_of(stream, groups, length)
                delivered = _stream_id(_group(groups).get("last-delivered-id") or "0-0")
                oldest_pending = _stream_id(pending["min"]) if pending["pending"] else None
                if delivered >= last and (oldest_pending is None or oldest_pending > last):
                    del todo[stream]
            if not todo:
                return True
            stall.check(
                None, f"still waiting for the worker to process the last events (backlog {self.backlog:,})"
            )
            if not waiting("draining", self.backlog):
                return False
            time.sleep(POLL_S)

    def _poll(self, stream: str, more: Callable) -> list:
        """XINFO GROUPS and XLEN of `stream` (plus what `more` adds), outside a transaction."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xinfo_groups(stream)
        pipe.xlen(stream)
        more(pipe)
        try:
            return pipe.execute()
        except redis.ResponseError:
            raise ImportFailed(f"stream {stream!r} lost its consumer group {GROUP!r}") from None

    def _backlog_of(self, stream: str, groups, length: int) -> int:
        group = _group(groups)
        if group is None:
            raise ImportFailed(f"stream {stream!r} lost its consumer group {GROUP!r} mid-import")
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
    # (A redis-py 8.1 cluster transaction returns XINFO GROUPS without its reply callback: the
    # field names come back as bytes there.)
    groups = [{k.decode() if isinstance(k, bytes) else k: v for k, v in g.items()} for g in groups or ()]
    return next((g for g in groups if _name(g) == GROUP), None)
