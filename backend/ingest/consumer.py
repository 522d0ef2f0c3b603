"""One partition's consumer: validates, stores, aggregates and broadcasts that partition's events.

A worker process (ingest/worker.py) runs one consumer per partition; each consumes only while it
holds its partition's lease and the process is within its fair share (ingest/shares.py).

The loop is a flat sequence of named steps: hold the lease (ingest/lease.py), subscribe, open
the transport's source (ingest/sources.py), then pump batches (ingest/batch.py) until the lease
or Redis goes; on a Redis error it backs off, resubscribes and retries the batch it held.

Batches form naturally: the worker takes whatever is already waiting (up to MAX_BATCH), stores
it with one script (one Redis round trip, whatever the batch size) and hands it to the fan-out,
then goes back for more; under load batches grow by themselves, at low load an event waits for
nothing but that round trip. The script applies a batch all or nothing, so a worker killed
mid-batch leaves the aggregates as if the batch never happened, not half-applied.

With INGEST_TRANSPORT=stream the worker also reads a Redis Stream as a consumer group
(ingest/stream.py) and stays subscribed to the channel: a batch then mixes stream entries and
Pub/Sub messages, and its script also acknowledges its stream entries, fenced by the lease.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import redis
from redis.exceptions import AskError, MovedError

from backend import telemetry
from backend.core import native
from backend.ingest.batch import LOST, BatchProcessor, none_waiting
from backend.ingest.lease import HEARTBEAT_EVERY_S, Lease, new_token
from backend.ingest.pubsub import PubSubReader
from backend.ingest.shares import Shares
from backend.ingest.sources import PubSubSource, StreamSource, next_message
from backend.ingest.stream import StreamReader, check_transport
from backend.storage.client import confirm_subscriptions, node_client
from backend.storage.keys import Keys, Partitioning
from backend.storage.store import LeaseLost, Store, connect
from backend.tasks.loop import Backoff, Task, start_thread

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S = 5.0  # longest wait for Redis to confirm a SUBSCRIBE
IDLE_WAIT_S = 0.5  # longest wait for a message before the loop renews its lease anyway


class Consumer(Task):
    def __init__(
        self,
        config,
        broadcaster,
        sleep=time.sleep,
        start_task=None,
        *,
        partition: int = 0,
        token: str | None = None,
        shares: Shares | None = None,
    ):
        super().__init__(sleep)
        self.name = f"partition {partition}"
        self.config = config
        self.broadcaster = broadcaster
        self.start_task = start_task or (
            lambda target: start_thread(target, "pubsub-reader")
        )  # socketio.start_background_task
        self.partition = partition
        self.shares = shares or Shares(1)
        parts = Partitioning.from_config(config)
        self.store = Store.from_config(config, partition=partition)
        # Subscriptions (and the stream's blocking reads) take a connection of their own. On a
        # cluster that is a plain client of the master owning the partition's slot (its channel
        # and stream share the {k} tag): SSUBSCRIBE must go to that node, and a RedisCluster has
        # no connection pool to lend the stream reader. Found again on each (re)subscribe
        # (_sub_node), so a failover or reshard is followed after the reconnect it causes.
        self.sub_client = (
            None if parts.cluster else connect(config["REDIS_URL"], socket_timeout=None, cluster=False)
        )
        self.token = token or new_token()
        self.lease = Lease(self.store, self.token, config["LEASE_TTL_MS"])
        self.batch = BatchProcessor(
            config, self.store, broadcaster, fence=self.lease.fence, pipe=self.store.pipe()
        )
        self.role = "starting"
        self._said = ""  # the role the log last announced
        self.channel = parts.channel(config["REDIS_CHANNEL"], partition)
        # The unpartitioned channel (the original wire format) stays accepted: partition 0's
        # consumer takes it too, and its events are stored with partition 0's (readers merge
        # every partition, so aggregates are the same wherever an event is stored).
        self.channels = [self.channel]
        if parts.tagged and partition == 0:
            self.channels.append(config["REDIS_CHANNEL"])
        self.sharded = parts.cluster
        self.max_batch = config["MAX_BATCH"]
        self.max_batch_live = config["MAX_BATCH_LIVE"]
        self.watched_key = Keys.from_config(config).watched  # a base key: web nodes set it
        self.max_batch_bytes = config["MAX_BATCH_BYTES"]
        self.pubsub_buffer_bytes = config["PUBSUB_BUFFER_BYTES"]
        self.transport = check_transport(config["INGEST_TRANSPORT"])
        self.stream = (
            StreamReader(self.store.redis, parts.stream(config["INGEST_STREAM"], partition), self.sub_client)
            if self.transport == "stream"
            else None
        )
        self.per_event = config["WORKER_STRATEGY"] == "per_event"
        if self.stream is not None and self.per_event:
            log.warning("WORKER_STRATEGY=per_event applies to the pubsub transport only; batching")
            self.per_event = False
        self.backoff = Backoff(config["RECONNECT_MIN_S"], config["RECONNECT_MAX_S"])
        self.source: PubSubSource | StreamSource | None = None
        self.subscribed = False
        self.reconnects = 0
        self.pubsub_disconnects = 0
        self.pubsub_dropped = 0  # by readers of earlier subscriptions
        self._carry: list | None = None  # Pub/Sub messages of a batch whose write failed
        self._history_marks: deque = deque()  # (monotonic time, next seq) once a second

    # counters live with the batch processor; these names are what status() and tests read
    processed = property(lambda self: self.batch.processed)
    rejected = property(lambda self: self.batch.rejected)
    batches = property(lambda self: self.batch.batches)

    # --- the loop ----------------------------------------------------------------------------
    def loop(self) -> None:
        while not self.stopping:
            pubsub = None
            try:
                if not (self.shares.may_take(self.partition) and self.lease.acquire()):
                    self._stand_by()
                    continue
                self.shares.took(self.partition)
                pubsub = self._become_active()
                self.source = self._open_source(pubsub)
                while not self.stopping and self.pump(self.source) is not None:
                    pass
            except (redis.ConnectionError, redis.TimeoutError, OSError, MovedError, AskError) as exc:
                # (MOVED/ASK: a cluster slot of ours moved, and our plain connection to its old
                # owner says so: reconnect, as for a lost connection, to the new owner.)
                self._lost_redis(exc)
            except Exception:
                self.subscribed = False
                log.exception("worker loop error; restarting in %.2fs", self._back_off())
            finally:
                self._settle()
                self._close(pubsub)

    def finished(self) -> None:
        self.subscribed = False
        self.role = "stopped"
        self.shares.gave_up(self.partition)
        self.lease.release()
        if self.batch.pipe is not None:
            self.batch.pipe.close()

    def _stand_by(self) -> None:
        """Another worker is active: stay a hot standby and poll for the lease."""
        if self._said != "standby":
            log.info("%s of worker %s is standby: another worker holds it", self.name, self.token)
        self.role = self._said = "standby"
        self.shares.gave_up(self.partition)
        self.backoff.reset()
        # A third of the TTL, at most a heartbeat: a partition handed over is taken within a second.
        self.sleep(min(self.lease.ttl_ms / 3000.0, HEARTBEAT_EVERY_S))

    def _become_active(self):
        self.role = self._said = "active"
        self.batch.load_known_metrics()
        pubsub = self._subscribe()
        if self.stream is not None:
            self.stream.activate()  # the group exists; pending entries come first
        self.subscribed = True
        self.shares.changed()  # /api/health shows the new role before the node says it is ready
        # The heartbeat only now that we are subscribed (readiness on every node reads it: a
        # producer told "ready" must not publish to nobody), and now rather than a second later.
        self.lease.beat(time.monotonic())
        if self.backoff.failures:
            self.reconnects += 1
            telemetry.REDIS_RECONNECTS.inc()
            log.warning(
                "worker resubscribed to %r after %d failed attempt(s)", self.channel, self.backoff.failures
            )
        else:
            stream = f" and reading stream {self.stream.key!r}" if self.stream else ""
            log.info(
                "worker %s active, subscribed to %s%s (%s; core %s)",
                self.token,
                ", ".join(map(repr, self.channels)),
                stream,
                self.name,
                native.state,
            )
        self.backoff.reset()
        if self._carry:
            batch, self._carry = self._carry, None
            self._process(batch)
        return pubsub

    def _subscribe(self):
        """Subscribe and wait for Redis to confirm: only then is anything published delivered.

        On a cluster the partition's channel is sharded (SSUBSCRIBE on the node that owns its
        slot, where producers SPUBLISH); the unpartitioned channel is plain Pub/Sub, which the
        cluster delivers on every node, so one connection to that node takes both."""
        if self.sharded:
            self._sub_node()
        pubsub = self.sub_client.pubsub()
        if self.sharded:
            pubsub.ssubscribe(self.channel)
            if len(self.channels) > 1:
                pubsub.subscribe(*self.channels[1:])
        else:
            pubsub.subscribe(*self.channels)
        try:
            confirm_subscriptions(pubsub, len(self.channels), SUBSCRIBE_TIMEOUT_S)
        except redis.TimeoutError:
            pubsub.close()
            raise
        if self.sharded:
            _raise_on_sunsubscribe(pubsub)
        else:
            pubsub.ignore_subscribe_messages = True
        return pubsub

    def _sub_node(self) -> None:
        """Cluster: point sub_client at the master that owns the partition's channel now."""
        cluster = self.store.redis
        node = cluster.get_node_from_key(self.channel)
        current = self.sub_client.get_connection_kwargs() if self.sub_client is not None else {}
        if (current.get("host"), current.get("port")) == (node.host, node.port):
            return
        old, self.sub_client = self.sub_client, node_client(cluster, self.channel, socket_timeout=None)
        if self.stream is not None:
            self.stream.use_reader(self.sub_client)
        if old is not None:
            old.close()

    def _open_source(self, pubsub):
        if self.stream is not None:
            return StreamSource(self.stream, pubsub, self.sleep, self.max_batch)
        if self.per_event:
            return pubsub
        reader = PubSubReader(
            pubsub, max_bytes=self.pubsub_buffer_bytes, start_task=self.start_task, sleep=self.sleep
        ).start()
        self.batch.backlog = reader.pending  # the minute's updates are held while more waits
        return PubSubSource(reader, self.batch.max_batch, self.max_batch_bytes)

    def _lost_redis(self, exc: BaseException) -> None:
        self.subscribed = False  # before the backoff sleep: readiness must see it now
        if isinstance(self.source, PubSubSource) and "closed by server" in str(exc).lower():
            self.pubsub_disconnects += 1
            telemetry.PUBSUB_DISCONNECTS.inc()
            log.error(
                "Redis closed the worker's subscription (%s): events published until it "
                "resubscribes are lost. If this happens under bursts, the worker cannot keep up "
                "within Redis's Pub/Sub output buffer limit: use INGEST_TRANSPORT=stream.",
                exc,
            )
        log.warning("worker lost Redis (%s); retrying in %.2fs", exc, self._back_off())

    def _back_off(self) -> float:
        delay = self.backoff.next()
        self.sleep(delay)
        return delay

    def _close(self, pubsub) -> None:
        # The role stays: through a Redis outage the lease is still ours until it expires, and
        # the next turn of the loop takes it again or stands by.
        self.subscribed = False
        source, self.source = self.source, None
        if isinstance(source, StreamSource) and source.carry:
            self._carry = (self._carry or []) + source.carry
        if source is not None and source is not pubsub:
            source.close()
            if isinstance(source, PubSubSource):
                self.pubsub_dropped += source.reader.dropped
                self.batch.backlog = none_waiting
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                log.debug("error closing pubsub", exc_info=True)

    # --- one turn ----------------------------------------------------------------------------
    def pump(self, source) -> int | None:
        """Take what has arrived (waiting only while nothing has), process it all.

        Returns how many messages it processed, or None when this worker lost its lease and
        must stop consuming (another worker is active now); what it had already received is
        stored first, never dropped."""
        if self.per_event:
            return self._pump_per_event(source)
        now = time.monotonic()
        if self.lease.due(now) and not self._keep_lease(now):
            leftover = source.leftover()
            if leftover:
                self._process(leftover)
            self._flush()
            return None
        # With a write in flight, only what has already arrived: an idle wait reads its reply first.
        messages, entries = source.next_batch(0 if self.batch.in_flight else IDLE_WAIT_S)
        if not messages and not entries:
            if self.batch.in_flight:
                self._flush()
                return 0
            self.sleep(0)  # under eventlet a quiet consumer must not hog the hub
            return 0
        started = time.monotonic()
        try:
            self._process(messages, entries, started, getattr(source, "ack_key", None))
        except LeaseLost as exc:
            log.warning(
                "worker %s lost its lease mid-batch (%s); nothing written, back to standby", self.token, exc
            )
            return None
        except redis.RedisError:
            raise  # Redis trouble: back off and retry; stream entries are still pending
        except Exception as exc:
            if not entries or self.batch.written:
                raise  # (once written, the entries are stored and acknowledged: nothing to undo)
            log.exception("a batch of %d stream entries failed; dead-lettering it", len(entries))
            self.batch.dead_letter_all(entries, messages, exc, source.ack_key)
        return len(messages) + len(entries)

    def _pump_per_event(self, pubsub) -> int | None:
        now = time.monotonic()
        if self.lease.due(now) and not self._keep_lease(now):
            return None
        message = next_message(pubsub, IDLE_WAIT_S)
        if message is None:
            self.sleep(0)
            return 0
        self.batch.process_per_event(message["data"])
        return 1

    def _process(self, messages: list, entries=(), started: float | None = None, ack_key=None) -> None:
        try:
            self.batch.process(messages, started, entries, ack_key)
        except LOST:
            self._carry = self.batch.take_unstored() or None  # stream entries are re-read from Redis instead
            raise

    def _settle(self) -> None:
        """Whatever ended the turn: read the replies still in flight before the subscription
        closes, so a stored batch is counted and an unstored one carried to the next turn."""
        if not self.batch.in_flight:
            return
        try:
            self._flush()
        except Exception as exc:
            log.warning("worker %s could not confirm its last writes: %s", self.token, exc)

    def _flush(self) -> None:
        try:
            self.batch.flush()
        except LOST:
            self._carry = self.batch.take_unstored() or None
            raise

    # --- once a second, while active ---------------------------------------------------------
    def _keep_lease(self, now: float) -> bool:
        if not self.lease.keep(now):
            return False
        if self.shares.should_release(self.partition):
            log.info("worker %s hands %s over: more workers share the partitions now", self.token, self.name)
            self.lease.release()
            self.shares.gave_up(self.partition)  # so the next turn stands by instead of retaking it
            return False
        self._trim_history(now)
        self._follow_watchers()
        if self.stream is not None:
            self._stream_housekeeping()
        return True

    def _follow_watchers(self) -> None:
        """Batches of at most MAX_BATCH_LIVE while a web node has clients getting every event
        (Keys.watched), MAX_BATCH otherwise. A backlog written as one batch of thousands holds
        Redis for tens of milliseconds and sends each client a megabyte at once; written in
        smaller batches it flows through Redis and the web process while the next is validated,
        at the cost of some throughput in a burst (Redis merges fewer updates per script)."""
        # (No round trip when the live cap could not make a batch smaller.)
        live = 0 < self.max_batch_live < self.max_batch and self.store.redis.exists(self.watched_key)
        limit = self.max_batch_live if live else self.max_batch
        self.batch.max_batch = limit
        if isinstance(self.source, PubSubSource):
            self.source.max_batch = limit

    def _trim_history(self, now: float) -> None:
        """Keep HISTORY_S of the history stream: once a second, note the seq we have reached and
        trim what was written before the note taken HISTORY_S ago."""
        history_s = self.store.history_s
        if not history_s or self.batch.next_seq is None:
            return
        marks = self._history_marks
        marks.append((now, self.batch.next_seq))
        cut = None
        while marks and now - marks[0][0] >= history_s:
            cut = marks.popleft()[1]
        if cut is not None:
            try:
                self.store.trim_history(cut)
            except redis.ResponseError as exc:
                log.warning("cannot trim the history stream: %s", exc)

    def _stream_housekeeping(self) -> None:
        try:
            info = self.stream.housekeeping(stuck_after_ms=self.lease.ttl_ms)
        except redis.ResponseError as exc:  # e.g. WRONGTYPE: figures are not worth a restart
            log.warning("cannot read the stream's figures: %s", exc)
            return
        if info:
            label = str(self.partition)
            telemetry.STREAM_LENGTH.labels(label).set(info["length"])
            telemetry.STREAM_PENDING.labels(label).set(info["pending"])
            if info["lag"] is not None:
                telemetry.STREAM_LAG.labels(label).set(info["lag"])

    def status(self) -> dict:
        reader = self.source.reader if isinstance(self.source, PubSubSource) else None
        return {
            "partition": self.partition,
            "running": self.running,
            "role": self.role,
            "subscribed": self.subscribed,
            "reconnects": self.reconnects,
            "processed": self.processed,
            "rejected": self.rejected,
            "batches": self.batches,
            "transport": self.transport,
            "pubsub": {
                "buffered": reader.pending() if reader is not None else 0,
                "dropped": self.pubsub_dropped + (reader.dropped if reader is not None else 0),
                "disconnects": self.pubsub_disconnects,
            },
            **({"stream": dict(self.stream.info)} if self.stream is not None else {}),
        }


_SUBSCRIPTION_REPLIES = {"subscribe", "ssubscribe", "unsubscribe", "psubscribe", "punsubscribe"}


def _raise_on_sunsubscribe(pubsub) -> None:
    """A shard subscription ends when its slot moves (failover, reshard): the server sends
    SUNSUBSCRIBE and nothing more arrives on this connection. redis-py's get_message would
    swallow that as a subscription reply, so this pubsub's raises ConnectionError on it instead,
    and the consumer resubscribes on the slot's new owner. (The raw reader, pubsub.py, does
    the same on its own path.) Other subscription replies are skipped as before."""
    real = pubsub.get_message
    pubsub.ignore_subscribe_messages = False

    def get_message(*args, **kwargs):
        message = real(*args, **kwargs)
        if message is None:
            return None
        kind = message["type"]
        if kind == "sunsubscribe":
            raise redis.ConnectionError(f"shard channel {message['channel']!r} moved (SUNSUBSCRIBE)")
        return None if kind in _SUBSCRIPTION_REPLIES else message

    pubsub.get_message = get_message
