"""The ingest worker: one consumer that validates, stores, aggregates and broadcasts.

Exactly one worker consumes the channel at a time: a worker subscribes only while it holds a
lease in Redis (renewed every second, LEASE_TTL_MS long); the others wait as hot standbys and
take over within one TTL when the active one dies. A batch's writes go in one MULTI/EXEC, so a
worker killed mid-batch leaves the aggregates as if the batch never happened, not half-applied.

Batches form naturally: the worker takes whatever is already waiting (up to MAX_BATCH), stores
it with one script (one Redis round trip, whatever the batch size) and hands it to the fan-out,
then goes back for more; under load batches grow by themselves, at low load an event waits for
nothing but that round trip. A message that fails to parse
goes to the dead-letter list; an unexpected error in one message is logged and dead-lettered too,
so no single message can stop the loop. When Redis drops the connection (restart, slow-subscriber
kill) the loop reconnects with capped exponential backoff and reprocesses the batch it held.

With INGEST_TRANSPORT=stream the worker also reads a Redis Stream as a consumer group
(backend/ingest/stream.py) and stays subscribed to the channel: a batch then mixes stream entries
and Pub/Sub messages, and its MULTI/EXEC also acknowledges its stream entries, fenced by the
lease. The stream entries of a failed batch are not carried: they are still pending in Redis and
are re-read from there, which is what makes them count once whether or not the EXEC went through.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
import uuid
from collections import deque

import orjson
import redis

from backend import telemetry
from backend.core.aggregate import BatchAccumulator
from backend.core.events import Rejection, parse_event
from backend.core.timefmt import iso_ms
from backend.ingest.pubsub import PubSubReader
from backend.ingest.stream import GROUP, Entry, StreamReader, check_transport
from backend.storage.store import LeaseLost, Store, connect

log = logging.getLogger(__name__)

DEAD_LETTER_RAW_BYTES = 1024  # how much of a rejected message is kept
HEARTBEAT_EVERY_S = 1.0
SUBSCRIBE_TIMEOUT_S = 5.0  # longest wait for Redis to confirm a SUBSCRIBE
IDLE_WAIT_S = 0.5  # longest wait for a message before the loop renews its lease anyway
# Stream transport: how long the armed XREADGROUP blocks. An idle worker re-sends it about this
# often; the wait itself ends as soon as an entry or a Pub/Sub message arrives.
STREAM_BLOCK_MS = 1000


def _truncate(raw) -> str:
    if isinstance(raw, bytes):
        return raw[:DEAD_LETTER_RAW_BYTES].decode("utf-8", errors="replace")
    return str(raw)[:DEAD_LETTER_RAW_BYTES]


def _start_thread(target):
    thread = threading.Thread(target=target, name="pubsub-reader", daemon=True)
    thread.start()
    return thread


def _dead_local_process(token: str) -> bool:
    """Whether a worker token names a process of this host that no longer exists."""
    host, _, rest = token.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # e.g. EPERM: it exists, as another user
    return False


def dead_letter(raw, reason: str, detail: str, now: float) -> dict:
    """The dead-letter record of one rejected message: what it was (truncated), why, when."""
    return {"raw": _truncate(raw), "reason": reason, "detail": detail, "time": iso_ms(now)}


class Worker:
    def __init__(self, config, broadcaster, sleep=time.sleep, start_task=None):
        self.config = config
        self.broadcaster = broadcaster
        self.sleep = sleep  # socketio.sleep: cooperative under eventlet/gevent
        self.start_task = start_task or _start_thread  # socketio.start_background_task
        self.reader: PubSubReader | None = None
        self.pubsub_buffer_bytes = config["PUBSUB_BUFFER_BYTES"]
        self.pubsub_disconnects = 0
        self.pubsub_dropped = 0  # by readers of earlier subscriptions
        self.store = Store.from_config(config)
        self.sub_client = connect(config["REDIS_URL"], socket_timeout=None)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_ttl_ms = config["LEASE_TTL_MS"]
        self.role = "starting"
        self.channel = config["REDIS_CHANNEL"]
        self.max_batch = config["MAX_BATCH"]
        self.max_batch_bytes = config["MAX_BATCH_BYTES"]
        self.per_event = config["WORKER_STRATEGY"] == "per_event"
        self.transport = check_transport(config["INGEST_TRANSPORT"])
        self.stream = (
            StreamReader(self.store.redis, config["INGEST_STREAM"], self.sub_client)
            if self.transport == "stream"
            else None
        )
        if self.stream is not None and self.per_event:
            log.warning("WORKER_STRATEGY=per_event applies to the pubsub transport only; batching")
            self.per_event = False
        self.backoff_min = config["RECONNECT_MIN_S"]
        self.backoff_max = config["RECONNECT_MAX_S"]
        self.subscribed = False
        self.running = False
        self.reconnects = 0
        self.processed = 0
        self.rejected = 0
        self.batches = 0
        self._stopping = False
        self._carry: list | None = None  # a batch whose write failed, retried after reconnect
        self._written = False  # whether process() got as far as storing its batch
        self._last_heartbeat = 0.0
        self._last_report = 0.0
        self._next_seq: int | None = None  # after the last event this worker stored
        self._history_marks: deque = deque()  # (monotonic time, next seq) once a second
        self.max_metrics = config["MAX_METRICS"]
        self.known_metrics: set[str] = set()
        self._new_metrics: list[str] = []  # admitted by the batch in hand, written with it

    def stop(self) -> None:
        self._stopping = True

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        self.running = True
        backoff = self.backoff_min
        failures = 0
        try:
            while not self._stopping:
                pubsub = None
                try:
                    if not self._acquire_lease():
                        # Another worker is active: stay a hot standby and poll for the lease.
                        if self.role != "standby":
                            log.info("worker %s is standby: another worker holds the lease", self.token)
                        self.role = "standby"
                        self._report(time.monotonic())
                        failures, backoff = 0, self.backoff_min
                        self.sleep(self.lease_ttl_ms / 3000.0)
                        continue
                    self.role = "active"
                    self.load_known_metrics()
                    pubsub = self._subscribe()
                    if self.stream is not None:
                        self.stream.activate()  # the group exists; pending entries come first
                    # The heartbeat only now that we are subscribed (readiness on every node
                    # reads it: a producer told "ready" must not publish to nobody), and now
                    # rather than a second later.
                    self.store.renew_lease(self.token, self.lease_ttl_ms)
                    self._last_heartbeat = time.monotonic()
                    self.subscribed = True
                    self._last_report = 0.0
                    self._report(time.monotonic())  # /api/health shows the new role at once
                    if failures:
                        self.reconnects += 1
                        telemetry.REDIS_RECONNECTS.inc()
                        log.warning(
                            "worker resubscribed to %r after %d failed attempt(s)", self.channel, failures
                        )
                    else:
                        log.info(
                            "worker %s active, subscribed to %r%s",
                            self.token,
                            self.channel,
                            f" and reading stream {self.stream.key!r}" if self.stream else "",
                        )
                    failures, backoff = 0, self.backoff_min
                    if self._carry:
                        batch, self._carry = self._carry, None
                        self.process(batch)
                    if self.stream is None and not self.per_event:
                        self.reader = PubSubReader(
                            pubsub,
                            max_bytes=self.pubsub_buffer_bytes,
                            start_task=self.start_task,
                            sleep=self.sleep,
                        ).start()
                        pump, source = self.pump, self.reader
                    else:
                        pump, source = (self.pump_stream if self.stream is not None else self.pump), pubsub
                    while not self._stopping and pump(source) is not None:
                        pass
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    self.subscribed = False  # before the backoff sleep: readiness must see it now
                    if self.reader is not None and "closed by server" in str(exc).lower():
                        self.pubsub_disconnects += 1
                        telemetry.PUBSUB_DISCONNECTS.inc()
                        log.error(
                            "Redis closed the worker's subscription (%s): events published until it "
                            "resubscribes are lost. If this happens under bursts, the worker cannot keep up "
                            "within Redis's Pub/Sub output buffer limit: use INGEST_TRANSPORT=stream.",
                            exc,
                        )
                    failures += 1
                    log.warning("worker lost Redis (%s); retrying in %.2fs", exc, backoff)
                    self.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max)
                except Exception:
                    self.subscribed = False
                    failures += 1
                    log.exception("worker loop error; restarting in %.2fs", backoff)
                    self.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max)
                finally:
                    self.subscribed = False
                    if self.reader is not None:
                        self.reader.stop()
                        self.pubsub_dropped += self.reader.dropped
                        self.reader = None
                    if self.stream is not None:
                        self.stream.close()  # entries an armed read was given stay pending
                    if pubsub is not None:
                        try:
                            pubsub.close()
                        except Exception:
                            log.debug("error closing pubsub", exc_info=True)
        finally:
            self.subscribed = False
            self.running = False
            self.role = "stopped"
            with contextlib.suppress(redis.RedisError):  # if Redis is gone, the lease expires by itself
                self.store.release_lease(self.token)

    def _subscribe(self):
        """Subscribe and wait for Redis to confirm: only then is anything published delivered."""
        pubsub = self.sub_client.pubsub()
        pubsub.subscribe(self.channel)
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
        while True:
            message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message["type"] == "subscribe":
                break
            if time.monotonic() >= deadline:
                pubsub.close()
                raise redis.TimeoutError(f"no confirmation of SUBSCRIBE {self.channel!r}")
        pubsub.ignore_subscribe_messages = True
        return pubsub

    def _acquire_lease(self) -> bool:
        """Take the lease if it is free, ours, or held by a dead process of this host: a worker
        restarted after a crash (or a supervised one) takes over at once instead of waiting out
        its predecessor's lease. (Tokens are host:pid:nonce; hosts must have unique names per
        PID namespace, as containers do by default.)"""
        if self.store.acquire_lease(self.token, self.lease_ttl_ms):
            return True
        holder = self.store.lease_holder()
        if holder is None or not _dead_local_process(holder):
            return False
        if self.store.take_over_lease(holder, self.token, self.lease_ttl_ms):
            log.warning(
                "worker %s took over the lease of %s, a process of this host that is gone", self.token, holder
            )
            return True
        return False

    def _trim_history(self, now: float) -> None:
        """Keep HISTORY_S of the history stream: once a second, note the seq we have reached and
        trim what was written before the note taken HISTORY_S ago."""
        history_s = self.store.history_s
        if not history_s or self._next_seq is None:
            return
        marks = self._history_marks
        marks.append((now, self._next_seq))
        cut = None
        while marks and now - marks[0][0] >= history_s:
            cut = marks.popleft()[1]
        if cut is not None:
            try:
                self.store.trim_history(cut)
            except redis.ResponseError as exc:
                log.warning("cannot trim the history stream: %s", exc)

    def _report(self, now: float) -> None:
        """Our status for /api/health on any node, about once a second."""
        if now - self._last_report < HEARTBEAT_EVERY_S:
            return
        self._last_report = now
        try:
            self.store.report_worker(self.token, self.status())
        except redis.RedisError as exc:
            log.debug("cannot report the worker's status: %s", exc)

    def _keep_lease(self, now: float) -> bool:
        """Renew the lease and the heartbeat about once a second; False when the lease is lost."""
        if now - self._last_heartbeat < HEARTBEAT_EVERY_S:
            return True
        self._last_heartbeat = now
        if self.store.renew_lease(self.token, self.lease_ttl_ms):
            self._report(now)
            self._trim_history(now)
            if self.stream is not None:
                self._stream_housekeeping()
            return True
        log.warning("worker %s lost its lease; going back to standby", self.token)
        return False

    def _stream_housekeeping(self) -> None:
        try:
            info = self.stream.housekeeping(stuck_after_ms=self.lease_ttl_ms)
        except redis.ResponseError as exc:  # e.g. WRONGTYPE: figures are not worth a restart
            log.warning("cannot read the stream's figures: %s", exc)
            return
        if info:
            telemetry.STREAM_LENGTH.set(info["length"])
            telemetry.STREAM_PENDING.set(info["pending"])
            if info["lag"] is not None:
                telemetry.STREAM_LAG.set(info["lag"])

    @staticmethod
    def _next_message(pubsub, timeout: float):
        """The next message, waiting at most `timeout` for one to start arriving.

        redis-py's get_message(timeout=t) also applies t to reading the rest of a message that
        has only partly arrived, so a large message straddling two reads raises TimeoutError and
        costs a reconnect (and the messages in flight). Wait for readability with the timeout,
        then read the whole message blocking."""
        conn = pubsub.connection
        if conn is None:
            return pubsub.get_message(timeout=timeout)
        if not conn.can_read(timeout=timeout):
            return None
        return pubsub.get_message(timeout=None)

    def pump(self, source) -> int | None:
        """Take what has arrived (waiting only while nothing has), process it all.

        Natural batching: nothing waits on a timer for more events while some are in hand. At
        low rates a batch is one event, stored and emitted one round trip after it arrived;
        under load, messages pile up while the previous batch is written and the next batch
        grows by itself (up to MAX_BATCH). `source` is the PubSubReader (or, for the per-event
        strategy, the subscription itself).

        Returns how many messages it processed, or None when this worker lost its lease and
        must stop consuming (another worker is active now); what it had already received is
        stored first, never dropped."""
        if self.per_event:
            return self._pump_per_event(source)
        if not self._keep_lease(time.monotonic()):
            batch = source.take(self.max_batch, 0, self.max_batch_bytes)
            if batch:
                self.process(batch)
            return None
        batch = source.take(self.max_batch, IDLE_WAIT_S, self.max_batch_bytes)
        if not batch:
            self.sleep(0)  # under eventlet a quiet consumer must not hog the hub
            return 0
        self.process(batch, started=time.monotonic())
        return len(batch)

    def _pump_per_event(self, pubsub) -> int | None:
        if not self._keep_lease(time.monotonic()):
            return None
        message = self._next_message(pubsub, IDLE_WAIT_S)
        if message is None:
            self.sleep(0)
            return 0
        self.process_per_event(message["data"])
        return 1

    def _drain(self, pubsub, limit: int) -> list:
        """Pub/Sub messages already waiting, without blocking."""
        out = []
        while len(out) < limit:
            message = self._next_message(pubsub, 0)
            if message is None:
                break
            out.append(message["data"])
        return out

    def _wait(self, pubsub, timeout: float) -> None:
        """Until a Pub/Sub message or the armed stream read's reply arrives, at most `timeout`."""
        conn = pubsub.connection
        if (conn is not None and conn.can_read(timeout=0)) or self.stream.ready():
            return  # already here (possibly buffered in the parser, where no select can see it)
        socks = [sock for sock in (conn and conn._sock, self.stream.socket) if sock is not None]
        if not socks:
            self.sleep(timeout)
            return
        # selectors is green under eventlet and gevent (monkey-patched), epoll under threading.
        with selectors.DefaultSelector() as selector:
            for sock in socks:
                selector.register(sock, selectors.EVENT_READ)
            selector.select(timeout)

    def pump_stream(self, pubsub) -> int | None:
        """The stream transport's pump: stream entries and Pub/Sub messages in one batch.

        First this consumer's pending entries, page by page (a previous lease holder's, or ours
        from before a reconnect). Then: wait on the Pub/Sub socket and an armed XREADGROUP BLOCK
        together, so no busy loop and no polling delay for either source, and take what both
        have, without waiting for more (natural batching, as pump() does). Returns as pump() does."""
        stream = self.stream
        messages: list = []
        try:
            if stream.replaying:
                entries = stream.read_pending(self.max_batch)
            else:
                stream.arm(self.max_batch, STREAM_BLOCK_MS)
                self._wait(pubsub, IDLE_WAIT_S)
                entries = stream.take()
            now = time.monotonic()
            if not self._keep_lease(now):
                return None
            messages = self._drain(pubsub, self.max_batch - len(entries))
            if not entries and not messages:
                self.sleep(0)  # under eventlet a quiet consumer must not hog the hub
                return 0
        except (redis.ConnectionError, redis.TimeoutError):
            # Stream entries read so far stay pending in Redis; Pub/Sub messages exist only here.
            if messages:
                self._carry = messages
            raise
        # Ask for the next entries now, so that Redis gathers them while we process these.
        stream.arm(self.max_batch, STREAM_BLOCK_MS)
        try:
            self.process(messages, started=now, entries=entries)
        except LeaseLost as exc:
            log.warning(
                "worker %s lost its lease mid-batch (%s); nothing written, back to standby", self.token, exc
            )
            return None
        except redis.RedisError:
            raise  # Redis trouble: back off and retry; the entries are still pending
        except Exception as exc:
            if not entries or self._written:
                raise  # (once written, the entries are stored and acknowledged: nothing to undo)
            # A bug of ours that this batch triggers would trigger again on every re-read of its
            # pending entries and stall the stream for good: dead-letter them instead.
            log.exception("a batch of %d stream entries failed; dead-lettering it", len(entries))
            self._dead_letter_batch(entries, messages, exc)
        return len(entries) + len(messages)

    def _dead_letter_batch(self, entries: list[Entry], messages: list, exc: Exception) -> None:
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
                ack=(self.stream.key, GROUP, [e.id for e in entries]),
                fence=(self.store.keys.worker_lease, self.token),
            )
        except LeaseLost:
            return  # the new lease holder re-reads them
        self.rejected += len(rejected)
        telemetry.EVENTS_RECEIVED.inc(len(rejected))
        telemetry.EVENTS_REJECTED.labels("internal_error").inc(len(rejected))

    # --- one batch -----------------------------------------------------------------------------
    def process(self, batch: list, started: float | None = None, entries: list[Entry] = ()) -> None:
        """Validate, store and broadcast one batch: `batch` is raw Pub/Sub messages, `entries`
        stream entries, acknowledged by the write. `started`: monotonic time its first item was read."""
        now = time.time()
        cfg = self.config
        accepted = []
        rejected = []
        self._written = False
        raws = batch
        if entries:
            raws = [e.raw for e in entries if e.problem is None] + list(batch)
            rejected = [dead_letter(e.raw, "invalid_entry", e.problem, now) for e in entries if e.problem]
        for raw in raws:
            try:
                accepted.append(
                    parse_event(
                        raw,
                        now=now,
                        retention_s=cfg["RETENTION_S"],
                        future_tolerance_s=cfg["FUTURE_TOLERANCE_S"],
                        max_bytes=cfg["MAX_EVENT_BYTES"],
                    )
                )
            except Rejection as rej:
                rejected.append(dead_letter(raw, rej.reason, rej.detail, now))
            except Exception as exc:
                log.exception("unexpected error validating a message")
                rejected.append(dead_letter(raw, "internal_error", f"{type(exc).__name__}: {exc}", now))
        accepted = self._admit_metrics(accepted, rejected, now)
        received = len(batch) + len(entries)
        try:
            acc = BatchAccumulator(self.config["TOP_MAX_TAG_VALUES"])
            for ev in accepted:
                acc.add(ev)
            events = [ev.data for ev in accepted]
            encoded = self.store.write_batch(
                events,
                acc.deltas() if accepted else {},
                rejected,
                received=received,
                tag_deltas=acc.tag_deltas() if accepted else None,
                ack=(self.stream.key, GROUP, [e.id for e in entries]) if entries else None,
                fence=(self.store.keys.worker_lease, self.token) if entries else None,
                new_metrics=self._new_metrics,
                fanout_channel=self.broadcaster.channel,
            )
        except (redis.ConnectionError, redis.TimeoutError):
            self._carry = list(batch) or None  # stream entries are re-read from Redis instead
            self._forget_new_metrics()
            raise
        except BaseException:
            self._forget_new_metrics()
            raise
        self._new_metrics = []
        self._written = True
        if events:
            self._next_seq = events[-1]["seq"] + 1
        self.batches += 1
        self.processed += len(events)
        self.rejected += len(rejected)
        if events:
            self.broadcaster.publish(encoded)
            telemetry.SUBSCRIBER_LAG.set(max(0.0, now - max(ev.ts for ev in accepted)))
        telemetry.EVENTS_RECEIVED.inc(received)
        telemetry.EVENTS_ACCEPTED.inc(len(events))
        telemetry.BATCH_SIZE.observe(received)
        for item in rejected:
            telemetry.EVENTS_REJECTED.labels(item["reason"]).inc()
        if started is not None:
            telemetry.BROADCAST_LATENCY.observe(time.monotonic() - started)

    def _admit_metrics(self, accepted: list, rejected: list, now: float) -> list:
        """Keep the number of distinct metric names under MAX_METRICS: past it, events of a new
        name are dead-lettered (`too_many_metrics`), so a producer inventing names cannot make
        every bucket, query and dashboard grow without bound. Names are admitted for good
        (the set in Redis is shared by every worker and survives restarts)."""
        known = self.known_metrics
        kept = []
        for ev in accepted:
            if ev.metric not in known:
                if len(known) >= self.max_metrics:
                    rejected.append(
                        dead_letter(
                            orjson.dumps(ev.data),
                            "too_many_metrics",
                            f"{self.max_metrics} metric names exist (MAX_METRICS); {ev.metric!r} is not one",
                            now,
                        )
                    )
                    continue
                known.add(ev.metric)
                self._new_metrics.append(ev.metric)
            kept.append(ev)
        return kept

    def _forget_new_metrics(self) -> None:
        """The write failed: the names it would have added are not admitted (yet)."""
        for name in self._new_metrics:
            self.known_metrics.discard(name)
        self._new_metrics = []

    def load_known_metrics(self) -> None:
        self.known_metrics = {m.decode() for m in self.store.redis.smembers(self.store.keys.metrics)}

    def process_per_event(self, raw) -> None:
        """The original design's strategy, for the benchmark's side-by-side run only: every event
        pays its own round trips (seq, LPUSH, LTRIM) and its own emit. No aggregates."""
        try:
            ev = parse_event(
                raw,
                now=time.time(),
                retention_s=self.config["RETENTION_S"],
                future_tolerance_s=self.config["FUTURE_TOLERANCE_S"],
                max_bytes=self.config["MAX_EVENT_BYTES"],
            )
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

    def status(self) -> dict:
        return {
            "running": self.running,
            "role": self.role,
            "token": self.token,
            "subscribed": self.subscribed,
            "reconnects": self.reconnects,
            "processed": self.processed,
            "rejected": self.rejected,
            "batches": self.batches,
            "transport": self.transport,
            "pubsub": {
                "buffered": self.reader.pending() if self.reader is not None else 0,
                "dropped": self.pubsub_dropped + (self.reader.dropped if self.reader is not None else 0),
                "disconnects": self.pubsub_disconnects,
            },
            **({"stream": dict(self.stream.info)} if self.stream is not None else {}),
        }
