"""How the generator's events reach Redis: one writer per transport (INGEST_TRANSPORT).

* :class:`PubSubWriter` PUBLISHes each event on the channel, best effort, as the original design
  did: what Redis drops while it is down is gone.
* :class:`StreamWriter` XADDs events to the ingest stream in MULTI/EXEC batches. During an outage
  the generator keeps producing into its bounded backlog (oldest dropped and counted), and it is
  sent after reconnecting. Each batch's transaction also records how many events the run has sent,
  so after a connection drops mid-batch the writer can tell whether that batch went through, and
  neither loses nor duplicates it.

The generator loop calls ``take(events, rate)`` with each batch, then ``flush()``; after a
reconnect ``reconnected()``; on stop ``last_flush()``. Redis errors propagate to the loop, which
reconnects. Counters may be read from other threads.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque

import orjson
import redis

from backend.ingest.stream import xadd_all

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
    def __init__(self, client: redis.Redis, channel: str):
        super().__init__()
        self.client = client
        self.channel = channel
        self.target = f"on {channel!r}"

    def take(self, events: list[dict], rate: float) -> None:
        """PUBLISH `events` in one pipeline."""
        pipe = self.client.pipeline(transaction=False)
        publish = pipe.publish
        channel = self.channel
        dumps = orjson.dumps
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
    durable = True

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        maxlen: int,
        sent_key: str,
        max_batch: int,
        backlog_s: float = BACKLOG_S,
    ):
        super().__init__()
        self.client = client
        self.stream = stream
        self.target = f"to stream {stream!r}"
        self.maxlen = maxlen
        self.sent_key = sent_key  # the count of events sent, set by each batch's transaction
        self.max_batch = max_batch
        self.backlog_s = backlog_s
        self.inflight = 0  # events of the batch whose EXEC may or may not have run
        self._dropped_warned = 0

    def take(self, events: list[dict], rate: float) -> None:
        """Add `events` to the backlog; past its bound the oldest are dropped and counted."""
        self.backlog.extend(map(orjson.dumps, events))
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

    def flush(self) -> None:
        """XADD the backlog, oldest first, max_batch events per MULTI/EXEC."""
        while self.backlog:
            chunk = list(itertools.islice(self.backlog, self.max_batch))
            pipe = self.client.pipeline(transaction=True)
            xadd_all(pipe, self.stream, chunk, self.maxlen)
            pipe.set(self.sent_key, self.published + len(chunk), ex=SENT_MARKER_TTL_S)
            self.inflight = len(chunk)
            pipe.execute()  # REDIS_DOWN: the chunk stays in the backlog, inflight says it may be in
            self._confirm(len(chunk))

    def _confirm(self, n: int) -> None:
        for _ in range(n):
            self.backlog.popleft()
        self.published += n
        self.inflight = 0

    def reconnected(self) -> None:
        """Did the batch in flight when the connection dropped go through? Its transaction set
        the marker to the count including it, all or nothing. (If Redis lost its data, the marker
        is gone and so is anything the batch added: it is sent again.)"""
        if self.inflight:
            sent = self.client.get(self.sent_key)
            if sent is not None and int(sent) >= self.published + self.inflight:
                self._confirm(self.inflight)
            self.inflight = 0

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
