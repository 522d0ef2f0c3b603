"""One batch, start to end: validate, bound the metric names, store (one script), hand to fan-out.

A message that fails to parse goes to the dead-letter list with its reason; an unexpected error
in one message is logged and dead-lettered too, so no single message can stop the loop.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import attrgetter

import orjson
import redis
from redis.exceptions import AskError, MovedError

from backend import telemetry
from backend.core.aggregate import BatchAccumulator, MinuteHold, merge_deltas, release
from backend.core.events import Event, Rejection, parse_event
from backend.core.layout import COARSE
from backend.core.timefmt import iso_ms
from backend.ingest.stream import GROUP, Entry
from backend.storage.pipe import ScriptPipe
from backend.storage.store import LeaseLost, Store

log = logging.getLogger(__name__)

DEAD_LETTER_RAW_BYTES = 1024  # how much of a rejected message is kept

# Writes sent and not answered at most: one that Redis runs and one waiting behind it, so Redis
# never waits for the worker to validate the next batch.
WRITES_IN_FLIGHT = 2

# Events in a batch from which it holds its minute's updates back even with nothing in flight or
# waiting: batches this large form only under load (at 40k events/s 71% of them; at 1k, none).
HOLD_BATCH = 100

# A write that failed this way may not have happened, or happened with its reply lost: its
# messages are retried after the reconnect (MOVED/ASK: a cluster slot moved; the script did not run).
LOST = (redis.ConnectionError, redis.TimeoutError, MovedError, AskError)


def _truncate(raw) -> str:
    if isinstance(raw, bytes):
        return raw[:DEAD_LETTER_RAW_BYTES].decode("utf-8", errors="replace")
    return str(raw)[:DEAD_LETTER_RAW_BYTES]


def dead_letter(raw, reason: str, detail: str, now: float) -> dict:
    """The dead-letter record of one rejected message: what it was (truncated), why, when."""
    return {"raw": _truncate(raw), "reason": reason, "detail": detail, "time": iso_ms(now)}


def validate(raw, config: Mapping, now: float) -> Event:
    """One message as an Event, under this deployment's limits; raises Rejection."""
    return parse_event(
        raw,
        now=now,
        retention_s=config["RETENTION_S"],
        future_tolerance_s=config["FUTURE_TOLERANCE_S"],
        max_bytes=config["MAX_EVENT_BYTES"],
    )


def validate_all(raws, config: Mapping, now: float, rejected: list) -> list[Event]:
    """The valid events of `raws`; each invalid one goes to `rejected` as a dead letter."""
    accepted = []
    retention_s, tolerance_s = config["RETENTION_S"], config["FUTURE_TOLERANCE_S"]
    max_bytes = config["MAX_EVENT_BYTES"]
    for raw in raws:
        try:
            accepted.append(
                parse_event(
                    raw, now=now, retention_s=retention_s, future_tolerance_s=tolerance_s, max_bytes=max_bytes
                )
            )
        except Rejection as rej:
            rejected.append(dead_letter(raw, rej.reason, rej.detail, now))
        except Exception as exc:
            log.exception("unexpected error validating a message")
            rejected.append(dead_letter(raw, "internal_error", f"{type(exc).__name__}: {exc}", now))
    return accepted


@dataclass(slots=True)
class _Batch:
    """A batch in hand: its messages validated and aggregated as they arrive. Sent down the pipe,
    it is kept until its reply is read, for its figures (or its retry, if the write is lost)."""

    acc: BatchAccumulator | None  # None once sent: its deltas are built
    now: float
    started: float | None  # monotonic time its first message was read
    rejected: list = field(default_factory=list)
    messages: list = field(default_factory=list)  # raw Pub/Sub messages: retried if the write is lost
    size: int = 0  # bytes of its messages
    events: list[Event] = field(default_factory=list)
    new_metrics: list[str] = field(default_factory=list)  # names it admits, written with it
    held: MinuteHold | None = None  # its updates of the current minute, held back to be merged
    carries: list[_Batch] = field(default_factory=list)  # batches whose held updates it writes

    def newest(self) -> float:
        return max(map(attrgetter("ts"), self.events)) if self.events else self.now


def none_waiting() -> int:
    return 0


class BatchProcessor:
    """Stores batches for one worker: `fence` is the lease (key, token) its stream acks hold to.

    With a `pipe` (storage/pipe.py) a batch of Pub/Sub messages is sent without waiting for its
    reply: the worker validates and aggregates the next one while Redis runs it, and reads the
    reply later. Up to WRITES_IN_FLIGHT writes are sent and unanswered; past that, what arrives
    is gathered into one open batch (validated and aggregated as it comes), sent as soon as
    Redis answers the oldest write; a take that would carry it past MAX_BATCH or
    MAX_BATCH_BYTES waits for that answer and starts the next open batch. So the worker never
    waits for Redis while there is work in hand, and when Redis is the slower stage the batches
    grow to its pace by themselves: fewer, larger scripts, whose cost is mostly per bucket
    field, not per event. The fan-out waits for none of this: the script publishes the batch
    itself. Batches with stream entries are fenced and acknowledged, and go one at a time
    (write_batch), after whatever is in flight or open.

    Under load the current minute's bucket updates are held back: a batch sent while another
    write is still unanswered, or while more events already wait (`backlog`), or of at least
    HOLD_BATCH events, writes its seconds, and a later batch writes the minute updates of all
    the batches held since, merged (aggregate.MinuteHold). At 40,000 events/s that takes 30-40%
    of Redis's work off a held batch. What is held goes with the next small batch sent with
    nothing in flight and nothing waiting, the first batch after the minute ended, the first
    once the oldest held update is MINUTE_HOLD_MS old (how far the current minute's hash may
    trail its seconds under load; aggregates read the current minute's seconds), or flush(),
    before the worker idles. Seconds, lists and the fan-out are never held. If the connection
    goes with writes in flight, the held updates of batches that are retried are dropped with
    them (the retry counts them again), and those of stored batches are held again."""

    def __init__(
        self,
        config: Mapping,
        store: Store,
        broadcaster,
        *,
        fence: tuple[str, str],
        pipe: ScriptPipe | None = None,
    ):
        self.config = config
        self.store = store
        self.broadcaster = broadcaster
        self.fence = fence
        self.pipe = pipe if broadcaster.channel is not None else None
        self.max_metrics = config["MAX_METRICS"]
        self.known_metrics: set[str] = set()
        self.max_batch = config["MAX_BATCH"]
        self.max_batch_bytes = config["MAX_BATCH_BYTES"]
        self._in_flight: deque[_Batch] = deque()  # sent down the pipe, replies not read yet
        self._open: _Batch | None = None  # gathered while the writes in flight are unanswered
        self._held: list[_Batch] = []  # sent batches whose held minute updates no write carries yet
        self._held_since = 0.0  # monotonic time the oldest of them was sent
        self.minute_hold_s = config["MINUTE_HOLD_MS"] / 1000
        # Messages already waiting behind the batch being sent (the consumer gives its reader's
        # count); while there are none, nothing is held.
        self.backlog = none_waiting
        self.unstored: list = []  # Pub/Sub messages of writes lost with the connection, oldest first
        self.processed = 0
        self.rejected = 0
        self.batches = 0
        self.next_seq: int | None = None  # after the last event stored
        self.written = False  # whether the last process() got as far as storing its batch

    @property
    def in_flight(self) -> int:
        """Batches not stored yet as far as this worker knows: sent and unanswered, or open."""
        return len(self._in_flight) + (self._open is not None)

    def process(self, batch: list, started: float | None = None, entries: list[Entry] = (), ack_key=None):
        """Validate, store and broadcast one batch: `batch` is raw Pub/Sub messages, `entries`
        stream entries (of stream `ack_key`), acknowledged by the write. `started`: monotonic
        time its first item was read. Raises what the write raised; the caller decides. After
        a connection error, `take_unstored()` gives every message not known to be stored."""
        pipelined = self.pipe is not None and not entries
        try:
            if pipelined:
                if self._open is not None and not self._room_for(batch):
                    # The open batch stays within MAX_BATCH / MAX_BATCH_BYTES: it goes first,
                    # once Redis has room for it.
                    if len(self._in_flight) >= WRITES_IN_FLIGHT:
                        self._finish_oldest()
                    self._send_open()
                if self._open is None:
                    self._open = self._new_batch(started)
                self._add(self._open, batch)
                if len(self._in_flight) >= WRITES_IN_FLIGHT:
                    if not self.pipe.ready():
                        return  # Redis is still busy with the writes sent: keep gathering
                    self._finish_oldest()
                self._send_open()
            else:
                self.flush()
                self._write(batch, started, entries, ack_key)
        except LOST:
            self._lose_in_flight()
            if not pipelined:
                self.unstored += batch
            raise

    def flush(self) -> None:
        """Send the open batch and whatever minute updates are held, and read every reply
        (before waiting idle, standing down or stopping)."""
        try:
            while self._in_flight:
                self._finish_oldest()
            if self._open is None and self._held:
                self._open = self._new_batch(None)  # no events: it carries the held updates
            if self._open is not None:
                self._send_open(hold=False)
                self._finish_oldest()
        except LOST:
            self._lose_in_flight()
            raise

    def take_unstored(self) -> list:
        unstored, self.unstored = self.unstored, []
        return unstored

    def _new_batch(self, started: float | None, rejected: list | None = None) -> _Batch:
        acc = BatchAccumulator(self.config["TOP_MAX_TAG_VALUES"])
        return _Batch(acc, time.time(), started, rejected if rejected is not None else [])

    def _add(self, into: _Batch, raws: list) -> None:
        """Validate `raws` and aggregate them into `into` (bad ones become its dead letters)."""
        into.messages += raws
        into.size += sum(map(len, raws))
        accepted = self._admit_metrics(validate_all(raws, self.config, into.now, into.rejected), into)
        into.events += accepted
        add = into.acc.add
        try:
            for ev in accepted:
                add(ev)
        except BaseException:
            # A bug in aggregation leaves the batch half counted: it is dropped whole (as the
            # batch in hand always was), never sent with deltas that miss some of its events.
            self._forget_new_metrics(into.new_metrics)
            if into is self._open:
                self._open = None
            raise

    def _write(self, batch: list, started: float | None, entries: list[Entry], ack_key) -> None:
        """One batch, waiting for Redis: the only way for stream entries (fenced and acked)."""
        self.written = False
        now = time.time()
        gathered = self._new_batch(
            started, [dead_letter(e.raw, "invalid_entry", e.problem, now) for e in entries if e.problem]
        )
        self._add(gathered, [e.raw for e in entries if e.problem is None] + list(batch) if entries else batch)
        events = [ev.data for ev in gathered.events]
        try:
            encoded = self.store.write_batch(
                events,
                gathered.acc.deltas() if events else {},
                gathered.rejected,
                received=len(batch) + len(entries),
                tag_deltas=gathered.acc.tag_deltas() if events else None,
                ack=(ack_key, GROUP, [e.id for e in entries]) if entries else None,
                fence=self.fence if entries else None,
                new_metrics=gathered.new_metrics,
                fanout_channel=self.broadcaster.channel,
            )
        except BaseException:
            self._forget_new_metrics(gathered.new_metrics)
            raise
        self.written = True
        if events:
            self.broadcaster.publish(encoded)
        self._stored(events[0]["seq"] if events else 0, gathered, len(batch) + len(entries))

    def _room_for(self, batch: list) -> bool:
        gathered = self._open
        return (
            len(gathered.messages) + len(batch) <= self.max_batch
            and gathered.size + sum(map(len, batch)) <= self.max_batch_bytes
        )

    def _send_open(self, hold: bool = True) -> None:
        gathered, self._open = self._open, None
        self._in_flight.append(gathered)
        events = [ev.data for ev in gathered.events]
        deltas, tag_deltas = self._deltas(gathered, hold) if events or self._held else ({}, None)
        # A held batch outlives its write by up to MINUTE_HOLD_MS: what it no longer needs goes
        # now (kept, the accumulator's references to every event's tags cost the collector).
        gathered.acc = None
        self.store.send_batch(
            self.pipe,
            events,
            deltas,
            gathered.rejected,
            received=len(gathered.messages),
            tag_deltas=tag_deltas,
            new_metrics=gathered.new_metrics,
            fanout_channel=self.broadcaster.channel,
        )

    def _deltas(self, gathered: _Batch, hold: bool) -> tuple[dict, dict]:
        """The bucket and per-tag deltas `gathered` writes: its own, less the current minute's
        part while that is held (then it joins _held), plus every held part when it releases
        them (see the class's docstring)."""
        acc = gathered.acc
        if self.minute_hold_s <= 0:
            return acc.deltas(), acc.tag_deltas()
        minute = int(time.time()) // COARSE * COARSE
        held = self._held
        # (`gathered` is in flight already)
        busy = len(self._in_flight) > 1 or len(gathered.events) >= HOLD_BATCH or self.backlog() > 0
        if hold and busy and not self._release_due(minute):
            gathered.held = MinuteHold(minute)
            deltas, tag_deltas = acc.deltas(gathered.held), acc.tag_deltas(gathered.held)
            if gathered.held:
                if not held:
                    self._held_since = time.monotonic()
                held.append(gathered)
            return deltas, tag_deltas
        deltas, tag_deltas = acc.deltas(), acc.tag_deltas()
        if held:
            released, released_tags = release(b.held for b in held)
            merge_deltas(deltas, released)
            merge_deltas(tag_deltas, released_tags)
            gathered.carries, self._held = held, []
        return deltas, tag_deltas

    def _release_due(self, minute: int) -> bool:
        """Whether what is held must go now: its minute has ended, or it is old enough."""
        held = self._held
        return bool(held) and (
            held[0].held.minute != minute or time.monotonic() - self._held_since >= self.minute_hold_s
        )

    def _finish_oldest(self) -> None:
        sent = self._in_flight[0]
        try:
            first = self.store.read_batch(self.pipe)
        except LOST:
            raise  # the caller loses everything in flight, this one included
        except BaseException:
            self._in_flight.popleft()  # Redis answered (a script error): that batch is done with
            self._forget_new_metrics(sent.new_metrics)
            raise
        self._in_flight.popleft()
        self._stored(first, sent, len(sent.messages))
        if sent.held is not None:  # stored: only its held updates are still needed
            sent.messages, sent.events, sent.carries = [], [], []

    def _stored(self, first: int, stored: _Batch, received: int) -> None:
        """The figures of a batch Redis has stored (first: its first event's seq)."""
        if not received:
            return  # only held minute updates (flush()): not a batch of events
        accepted = len(stored.events)
        if accepted:
            self.next_seq = first + (accepted - 1) * self.store.partitions + 1
            telemetry.SUBSCRIBER_LAG.set(max(0.0, stored.now - stored.newest()))
        self._count(received, accepted, stored.rejected)
        if stored.started is not None:
            telemetry.BROADCAST_LATENCY.observe(time.monotonic() - stored.started)

    def _lose_in_flight(self) -> None:
        """The connection went with replies unread: those batches may or may not be stored.
        Their messages are retried, with the open batch's (at least once: Redis may have run a
        script whose reply was lost), and the names they admitted are admitted again by
        whichever batch stores them."""
        lost = [*self._in_flight, *([self._open] if self._open is not None else [])]
        self._in_flight.clear()
        self._open = None
        for gathered in lost:
            self.unstored += gathered.messages
            self._forget_new_metrics(gathered.new_metrics)
        # Held updates: a retried batch's are counted again by its retry; a stored batch's must
        # still be written, by whichever batch releases next.
        retried = {id(b) for b in lost}
        stored = [b for g in lost for b in g.carries if id(b) not in retried]
        self._held = stored + [b for b in self._held if id(b) not in retried]
        if self._held:
            self._held_since = time.monotonic()
        if self.pipe is not None:
            self.pipe.reset()

    def dead_letter_all(self, entries: list[Entry], messages: list, exc: Exception, ack_key) -> None:
        """A batch our own code failed on, dead-lettered whole: a bug this batch triggers would
        trigger again on every re-read of its pending entries and stall the stream for good."""
        now = time.time()
        detail = f"{type(exc).__name__}: {exc}"
        rejected = [
            dead_letter(raw, "internal_error", detail, now) for raw in [e.raw for e in entries] + messages
        ]
        try:
            self.store.write_batch(
                [],
                {},
                rejected,
                received=len(rejected),
                ack=(ack_key, GROUP, [e.id for e in entries]),
                fence=self.fence,
            )
        except LeaseLost:
            return  # the new lease holder re-reads them
        self._count(len(rejected), 0, rejected)

    def _count(self, received: int, accepted: int, rejected: list) -> None:
        self.batches += 1
        self.processed += accepted
        self.rejected += len(rejected)
        telemetry.EVENTS_RECEIVED.inc(received)
        telemetry.EVENTS_ACCEPTED.inc(accepted)
        telemetry.BATCH_SIZE.observe(received)
        for item in rejected:
            telemetry.EVENTS_REJECTED.labels(item["reason"]).inc()

    # --- the cardinality bound -------------------------------------------------------------------
    def _admit_metrics(self, accepted: list, into: _Batch) -> list:
        """Keep the number of distinct metric names under MAX_METRICS: past it, events of a new
        name are dead-lettered (`too_many_metrics`), so a producer inventing names cannot make
        every bucket, query and dashboard grow without bound. Names are admitted for good
        (the set in Redis is shared by every worker and survives restarts)."""
        known = self.known_metrics
        kept = []
        for ev in accepted:
            if ev.metric not in known:
                if len(known) >= self.max_metrics:
                    into.rejected.append(
                        dead_letter(
                            orjson.dumps(ev.data),
                            "too_many_metrics",
                            f"{self.max_metrics} metric names exist (MAX_METRICS); {ev.metric!r} is not one",
                            into.now,
                        )
                    )
                    continue
                known.add(ev.metric)
                into.new_metrics.append(ev.metric)
            kept.append(ev)
        return kept

    def _forget_new_metrics(self, names: list[str]) -> None:
        """The write failed: the names it would have added are not admitted (yet)."""
        for name in names:
            self.known_metrics.discard(name)

    def load_known_metrics(self) -> None:
        self.known_metrics = {m.decode() for m in self.store.redis.smembers(self.store.keys.metrics)}

    # --- the original design, for the benchmark ---------------------------------------------------
    def process_per_event(self, raw) -> None:
        """The original design's strategy, for the benchmark's side-by-side run only: every event
        pays its own round trips (seq, LPUSH, LTRIM) and its own emit. No aggregates."""
        try:
            ev = validate(raw, self.config, time.time())
        except Rejection as rej:
            self.store.write_batch(
                [], {}, [dead_letter(raw, rej.reason, rej.detail, time.time())], received=1
            )
            self.rejected += 1
            return
        ev.data["seq"] = self.store.reserve_seqs(1)
        encoded = orjson.dumps(ev.data)
        self.store.redis.lpush(self.store.keys.recent, encoded)
        self.store.redis.ltrim(self.store.keys.recent, 0, self.store.recent_max - 1)
        self.processed += 1
        if self.broadcaster.channel is not None:  # the fan-out message format: first seq, events
            data = dict(ev.data)
            seq = data.pop("seq")
            self.store.redis.publish(self.broadcaster.channel, b"%d\n%s" % (seq, orjson.dumps(data)))
        else:
            self.broadcaster.publish([encoded])
