"""How the generator's events reach Redis: one writer per transport (INGEST_TRANSPORT).

* :class:`PubSubWriter` PUBLISHes each event on the channel, best effort, as the original design
  did: what Redis drops while it is down is gone.
* :class:`StreamWriter` XADDs events to the ingest stream in MULTI/EXEC batches. During an outage
  the generator keeps producing into its bounded backlog (oldest dropped and counted), and it is
  sent after reconnecting. Each batch's transaction also records how many events the run has sent,
  so after a connection drops mid-batch the writer can tell whether that batch went through, and
  neither loses nor duplicates it.

With INGEST_PARTITIONS > 1 (or REDIS_CLUSTER) every event goes to its metric's partition's channel
or stream (``Partitioning``, the same routing as ``producer.partition_of``). On a cluster a
MULTI/EXEC may only touch one slot, so a stream batch is one transaction per partition there,
each setting that partition's own sent marker (hash-tagged like its stream).

The generator loop calls ``take(events, rate)`` with each batch, then ``flush()``; after a
reconnect ``reconnected()``; on stop ``last_flush()``. Redis errors propagate to the loop, which
reconnects. Counters may be read from other threads.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable

import orjson
import redis

from backend.ingest.stream import xadd_all
from backend.storage.keys import Partitioning

log = logging.getLogger(__name__)

BACKLOG_S = 10.0  # stream transport: seconds of events kept while Redis is unreachable
BACKLOG_MAX_EVENTS = 200_000  # ... but never more than this many (memory)
SENT_MARKER_TTL_S = 3600

# What "Redis went away" looks like through redis-py (its TimeoutError is not the builtin one).
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)


class Writer:
    """What both transports count; a transport without a backlog leaves those counters at 0."""

    durable = False  # True: events produced while Redis is down are kept and sent later
    target = ""  # where the events go, for the log: 'on <channel>' or 'to stream <key>'

    def __init__(self) -> None:
        self.published = 0  # events Redis has confirmed
        self.lost = 0  # pubsub: events in batches whose fate is unknown (Redis dropped us mid-pipeline)
        self.unheard = 0  # pubsub: published while nobody subscribed (PUBLISH returned 0)
        self.dropped = 0  # stream: produced during an outage but pushed out of the full backlog
        self.backlog: deque[bytes] = deque()  # stream: produced, not yet confirmed in Redis

    @property
    def produced(self) -> int:
        """Events made so far: sent, waiting in the backlog or dropped from it."""
        return self.published + len(self.backlog) + self.dropped

    def take(self, events: list[dict], rate: float) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Send what is held back (nothing, for a transport that holds nothing)."""

    def reconnected(self) -> None:
        """Called once Redis answers again after an outage."""

    def last_flush(self) -> bool:
        """Called on stop: send what is held back if Redis answers. True if it did send."""
        return False


class PubSubWriter(Writer):
    def __init__(self, client: redis.Redis, channel: str, parts: Partitioning | None = None):
        super().__init__()
        self.client = client
        self.channel = channel
        self.parts = parts or Partitioning()
        self.target = (
            f"on {channel!r}"
            if not self.parts.tagged
            else f"on {channel!r}:{{k}} ({self.parts.count} partitions)"
        )

    def take(self, events: list[dict], rate: float) -> None:
        """PUBLISH `events` in one pipeline (SPUBLISH on a cluster: a cluster pipeline refuses
        PUBLISH, and a partition's channel is a shard channel there)."""
        pipe = self.client.pipeline(transaction=False)
        parts = self.parts
        publish = pipe.spublish if parts.cluster else pipe.publish
        dumps = orjson.dumps
        if parts.tagged:
            base = self.channel
            for event in events:
                publish(parts.channel(base, parts.of(event["metric"])), dumps(event))
        else:
            channel = self.channel
            for event in events:
                publish(channel, dumps(event))
        try:
            receivers = pipe.execute()
        except REDIS_DOWN:
            # Some of the batch may have reached Redis before it went away; we can't tell which.
            self.lost += len(events)
            raise
        self.published += len(events)
        # PUBLISH answers how many subscribers got the message; 0 means it is gone for good.
        self.unheard += receivers.count(0)


class StreamWriter(Writer):
    """The backlog holds (partition, payload) pairs, oldest first. A batch is one transaction per
    group: one group (None) on one Redis, one per partition on a cluster (a transaction cannot
    span slots). Each group has its sent marker: the count of that group's events the run has
    sent, set in the group's transaction."""

    durable = True

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        maxlen: int,
        sent_key: str,
        max_batch: int,
        backlog_s: float = BACKLOG_S,
        parts: Partitioning | None = None,
        partition_sent_key: Callable[[int], str] | None = None,
    ):
        super().__init__()
        self.client = client
        self.stream = stream
        self.parts = parts or Partitioning()
        self.target = (
            f"to stream {stream!r}"
            if not self.parts.tagged
            else f"to streams {stream!r}:{{k}} ({self.parts.count} partitions)"
        )
        self.maxlen = maxlen
        self.sent_key = sent_key  # the count of events sent, set by each batch's transaction
        # On a cluster, partition k's own marker (in its slot): counts k's events only.
        self.partition_sent_key = partition_sent_key
        if self.parts.cluster and partition_sent_key is None:
            raise ValueError("a cluster needs a sent marker per partition (partition_sent_key)")
        self.max_batch = max_batch
        self.backlog_s = backlog_s
        self.inflight = 0  # events at the backlog's head whose transaction(s) may or may not have run
        self._inflight_groups: dict = {}  # group -> events of it in the in-flight batch
        self._unconfirmed: set = set()  # groups of the in-flight batch not confirmed yet
        self._sent: dict = {}  # cluster: partition -> events of it confirmed
        self._dropped_warned = 0

    def _marker(self, group) -> str:
        return self.sent_key if group is None else self.partition_sent_key(group)

    def _confirmed(self, group) -> int:
        """What the group's marker said after its last confirmed transaction."""
        return self.published if group is None else self._sent.get(group, 0)

    def take(self, events: list[dict], rate: float) -> None:
        """Add `events` to the backlog; past its bound the oldest are dropped and counted."""
        of, dumps = self.parts.of, orjson.dumps
        self.backlog.extend((of(e["metric"]), dumps(e)) for e in events)
        cap = max(self.max_batch, min(BACKLOG_MAX_EVENTS, int(rate * self.backlog_s)))
        overflow = len(self.backlog) - cap
        if overflow > 0:
            # The oldest go, except a batch in flight: that one may already be in Redis.
            inflight = [self.backlog.popleft() for _ in range(self.inflight)]
            for _ in range(overflow):
                self.backlog.popleft()
            self.backlog.extendleft(reversed(inflight))
            self.dropped += overflow
            if self.dropped >= 2 * self._dropped_warned:  # 1, 2, 4, ... not once per tick
                self._dropped_warned = self.dropped
                log.warning("backlog full (%d events): dropped %d oldest so far", cap, self.dropped)

    def _group(self, k: int):
        """What one transaction may cover: partition k's events on a cluster, anything on one Redis."""
        return k if self.parts.cluster else None

    def flush(self) -> None:
        """XADD the backlog, oldest first, max_batch events per MULTI/EXEC (one per partition of
        them on a cluster)."""
        parts, base = self.parts, self.stream
        while self.backlog:
            chunk = list(itertools.islice(self.backlog, self.max_batch))
            groups: dict = {}
            for k, payload in chunk:
                groups.setdefault(self._group(k), []).append((k, payload))
            self.inflight = len(chunk)
            self._inflight_groups = {g: len(items) for g, items in groups.items()}
            self._unconfirmed = set(groups)
            for group, items in groups.items():
                pipe = self.client.pipeline(transaction=True)
                for k, payload in items:
                    xadd_all(pipe, parts.stream(base, k), (payload,), self.maxlen)
                sent = self._confirmed(group) + len(items)
                pipe.set(self._marker(group), sent, ex=SENT_MARKER_TTL_S)
                pipe.execute()  # REDIS_DOWN: the chunk stays in the backlog, inflight says it may be in
                if group is not None:
                    self._sent[group] = sent
                self._unconfirmed.discard(group)
            self._settle(set(groups))

    def _settle(self, committed: set) -> None:
        """Take the in-flight batch's events of the `committed` groups off the backlog's head
        (they are in Redis); the others stay there, in order, to be sent again."""
        keep = []
        for _ in range(self.inflight):
            item = self.backlog.popleft()
            if self._group(item[0]) in committed:
                self.published += 1
            else:
                keep.append(item)
        self.backlog.extendleft(reversed(keep))
        self.inflight = 0
        self._inflight_groups, self._unconfirmed = {}, set()

    def reconnected(self) -> None:
        """Did the batch in flight when the connection dropped go through? Each transaction set
        its group's marker to the count including it, all or nothing. (If Redis lost its data,
        the marker is gone and so is anything the batch added: it is sent again.)"""
        if self.inflight:
            groups = self._inflight_groups or {None: self.inflight}
            unconfirmed = self._unconfirmed if self._inflight_groups else {None}
            committed = set(groups) - unconfirmed
            for group in unconfirmed:
                expected = self._confirmed(group) + groups[group]
                sent = self.client.get(self._marker(group))
                if sent is not None and int(sent) >= expected:
                    if group is not None:
                        self._sent[group] = expected
                    committed.add(group)
            self._settle(committed)

    def last_flush(self) -> bool:
        """Send what the backlog holds if Redis answers; what it cannot stays counted as unsent."""
        if not self.backlog:
            return False
        try:
            self.reconnected()
            self.flush()
        except REDIS_DOWN as exc:
            log.warning("stopping with %d events unsent: %s", len(self.backlog), exc)
            return False
        return True
