"""The ingest worker: one Pub/Sub subscriber that validates, stores, aggregates and broadcasts.

Exactly one worker consumes the channel at a time: a worker subscribes only while it holds a
lease in Redis (renewed every second, LEASE_TTL_MS long); the others wait as hot standbys and
take over within one TTL when the active one dies. A batch's writes go in one MULTI/EXEC, so a
worker killed mid-batch leaves the aggregates as if the batch never happened, not half-applied.

Per batch (everything that arrived within FLUSH_INTERVAL_MS, up to MAX_BATCH) the worker pays two
Redis round trips and two Socket.IO emits, whatever the batch size. A message that fails to parse
goes to the dead-letter list; an unexpected error in one message is logged and dead-lettered too,
so no single message can stop the loop. When Redis drops the connection (restart, slow-subscriber
kill) the loop reconnects with capped exponential backoff and reprocesses the batch it held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid

import orjson
import redis

from backend import telemetry
from backend.core.aggregate import BatchAccumulator
from backend.core.events import Rejection, parse_event
from backend.core.timefmt import iso_ms
from backend.store import Store, connect

log = logging.getLogger(__name__)

DEAD_LETTER_RAW_BYTES = 1024  # how much of a rejected message is kept
HEARTBEAT_EVERY_S = 1.0


def _truncate(raw) -> str:
    if isinstance(raw, bytes):
        return raw[:DEAD_LETTER_RAW_BYTES].decode("utf-8", errors="replace")
    return str(raw)[:DEAD_LETTER_RAW_BYTES]


class Worker:
    def __init__(self, config, broadcaster, sleep=time.sleep):
        self.config = config
        self.broadcaster = broadcaster
        self.sleep = sleep  # socketio.sleep: cooperative under eventlet/gevent
        self.store = Store.from_config(config)
        self.sub_client = connect(config["REDIS_URL"], socket_timeout=None)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_ttl_ms = config["LEASE_TTL_MS"]
        self.role = "starting"
        self.channel = config["REDIS_CHANNEL"]
        self.flush_s = config["FLUSH_INTERVAL_MS"] / 1000.0
        self.max_batch = config["MAX_BATCH"]
        self.per_event = config["WORKER_STRATEGY"] == "per_event"
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
        self._last_heartbeat = 0.0

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
                    if not self.store.acquire_lease(self.token, self.lease_ttl_ms):
                        # Another worker is active: stay a hot standby and poll for the lease.
                        if self.role != "standby":
                            log.info("worker %s is standby: another worker holds the lease", self.token)
                        self.role = "standby"
                        failures, backoff = 0, self.backoff_min
                        self.sleep(self.lease_ttl_ms / 3000.0)
                        continue
                    self.role = "active"
                    pubsub = self.sub_client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.channel)
                    self.subscribed = True
                    if failures:
                        self.reconnects += 1
                        telemetry.REDIS_RECONNECTS.inc()
                        log.warning(
                            "worker resubscribed to %r after %d failed attempt(s)", self.channel, failures
                        )
                    else:
                        log.info("worker %s active, subscribed to %r", self.token, self.channel)
                    failures, backoff = 0, self.backoff_min
                    if self._carry:
                        batch, self._carry = self._carry, None
                        self.process(batch)
                    while not self._stopping and self.pump(pubsub) is not None:
                        pass
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    self.subscribed = False  # before the backoff sleep: readiness must see it now
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

    def _keep_lease(self, now: float) -> bool:
        """Renew the lease and the heartbeat about once a second; False when the lease is lost."""
        if now - self._last_heartbeat < HEARTBEAT_EVERY_S:
            return True
        self._last_heartbeat = now
        if self.store.renew_lease(self.token, self.lease_ttl_ms):
            return True
        log.warning("worker %s lost its lease; going back to standby", self.token)
        return False

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

    def pump(self, pubsub) -> int | None:
        """Wait up to one flush interval for a message, drain what is waiting, process it.

        Returns how many messages it processed, or None when this worker lost its lease and
        must stop consuming (another worker is active now)."""
        message = self._next_message(pubsub, self.flush_s)
        now = time.monotonic()
        if not self._keep_lease(now):
            return None
        if message is None:
            # Yield even when idle: under eventlet a quiet subscriber must not hog the hub.
            self.sleep(0)
            return 0
        batch = [message["data"]]
        if self.per_event:
            self.process_per_event(message["data"])
            return 1
        deadline = now + self.flush_s
        while len(batch) < self.max_batch:
            message = self._next_message(pubsub, 0)
            if message is None:
                if time.monotonic() >= deadline:
                    break
                # Nothing buffered: give the socket a moment rather than flushing tiny batches.
                message = self._next_message(pubsub, min(0.005, max(0.0, deadline - time.monotonic())))
                if message is None:
                    break
            batch.append(message["data"])
        self.process(batch, started=now)
        return len(batch)

    # --- one batch -----------------------------------------------------------------------------
    def process(self, batch: list, started: float | None = None) -> None:
        """Validate, store and broadcast one batch. `started`: monotonic time its first message was read."""
        now = time.time()
        cfg = self.config
        accepted = []
        rejected = []
        for raw in batch:
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
                rejected.append(
                    {"raw": _truncate(raw), "reason": rej.reason, "detail": rej.detail, "time": iso_ms(now)}
                )
            except Exception as exc:
                log.exception("unexpected error validating a message")
                rejected.append(
                    {
                        "raw": _truncate(raw),
                        "reason": "internal_error",
                        "detail": f"{type(exc).__name__}: {exc}",
                        "time": iso_ms(now),
                    }
                )
        try:
            events, deltas, tag_deltas = [], {}, {}
            if accepted:
                first = self.store.reserve_seqs(len(accepted))
                acc = BatchAccumulator(self.config["TOP_MAX_TAG_VALUES"])
                for offset, ev in enumerate(accepted):
                    ev.data["seq"] = first + offset
                    acc.add(ev)
                    events.append(ev.data)
                deltas = acc.deltas()
                tag_deltas = acc.tag_deltas()
            self.store.write_batch(events, deltas, rejected, received=len(batch), tag_deltas=tag_deltas)
        except (redis.ConnectionError, redis.TimeoutError):
            self._carry = batch
            raise
        self.batches += 1
        self.processed += len(events)
        self.rejected += len(rejected)
        if events:
            self.broadcaster.publish(events)
            telemetry.SUBSCRIBER_LAG.set(max(0.0, now - max(ev.ts for ev in accepted)))
        telemetry.EVENTS_RECEIVED.inc(len(batch))
        telemetry.EVENTS_ACCEPTED.inc(len(events))
        telemetry.BATCH_SIZE.observe(len(batch))
        for item in rejected:
            telemetry.EVENTS_REJECTED.labels(item["reason"]).inc()
        if started is not None:
            telemetry.BROADCAST_LATENCY.observe(time.monotonic() - started)

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
                [],
                {},
                [
                    {
                        "raw": _truncate(raw),
                        "reason": rej.reason,
                        "detail": rej.detail,
                        "time": iso_ms(time.time()),
                    }
                ],
                received=1,
            )
            self.rejected += 1
            return
        ev.data["seq"] = self.store.reserve_seqs(1)
        self.store.redis.lpush(self.store.keys.recent, orjson.dumps(ev.data))
        self.store.redis.ltrim(self.store.keys.recent, 0, self.store.recent_max - 1)
        self.processed += 1
        self.broadcaster.publish([ev.data])

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
        }
