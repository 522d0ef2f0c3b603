"""Socket.IO fan-out of stored batches, and the once-a-second tick.

Rooms: every client starts in `legacy` (the original design's one `metric` message per event).
A client that sends `subscribe {"mode": "batch", "window": W}` moves to `batch` and `win:W`.

A stored batch reaches the clients in one of two ways (backend/realtime/fanout.py delivers it):
- the worker runs in this web process and no other node serves clients: directly;
- otherwise (MESSAGE_QUEUE, e.g. the worker in a process of its own): the worker's write
  script PUBLISHes the batch on one channel, and every web node's FanoutListener delivers it to
  its own clients. One message per batch, not per event or per client.

The tick computes each distinct window once per second, not once per client, and pushes it to
that window's room. It runs in every web process (it only reads Redis), so with several nodes
each serves its own clients.
"""

from __future__ import annotations

import logging
import time

import orjson
import redis

from backend.core.events import numbered
from backend.realtime.fanout import BATCH_ROOM, LEGACY_ROOM, Fanout
from backend.storage.client import confirm_subscriptions
from backend.storage.rawsub import RawSubscription
from backend.storage.store import Store, connect
from backend.tasks.loop import Backoff, PeriodicTask, Task

log = logging.getLogger(__name__)

WINDOW_ROOM_PREFIX = "win:"
LISTEN_WAIT_S = 1.0  # longest wait for a fan-out message before checking for a stop
SUBSCRIBE_TIMEOUT_S = 5.0  # longest wait for Redis to confirm the fan-out SUBSCRIBE
CATCH_UP_MAX = 10_000  # events a reconnected listener delivers from the history, at most
CATCH_UP_DEDUPE_S = 10.0  # how long after a catch-up live messages are checked for repeats

__all__ = ["BATCH_ROOM", "LEGACY_ROOM", "Broadcaster", "FanoutListener", "Ticker", "window_room"]


def window_room(window_s: int) -> str:
    return f"{WINDOW_ROOM_PREFIX}{window_s}"


def local_rooms(socketio) -> dict:
    """Rooms of the default namespace on this process, name -> members."""
    return socketio.server.manager.rooms.get("/", {})


class Broadcaster:
    """The worker's side: where stored batches go.

    `channel` set: the store's write script publishes each batch there (for every web node's
    FanoutListener) and publish() has nothing left to do. Otherwise publish() hands the batch
    to this process's Fanout."""

    def __init__(self, fanout: Fanout | None, *, channel: str | None):
        self.fanout = fanout
        self.channel = channel

    def publish(self, encoded: list[bytes]) -> None:
        if self.channel is None and self.fanout is not None:
            self.fanout.deliver(encoded)


class FanoutListener(Task):
    """A web node's side of the fan-out channel: the batches any worker stored, to our clients.

    Takes every message already waiting and delivers them as one batch (natural batching
    again: the busier the node, the fewer, larger deliveries). Reconnects by itself, and then
    delivers from the history stream what was stored while it was away (Pub/Sub keeps nothing
    for an absent subscriber): its clients see no gap when Redis or the connection blinks."""

    name = "fan-out listener"

    def __init__(
        self,
        socketio,
        fanout: Fanout,
        redis_url: str,
        channel: str,
        *,
        backoff_max_s: float,
        store: Store | None = None,
    ):
        super().__init__(socketio.sleep)
        self.socketio = socketio
        self.fanout = fanout
        self.redis_url = redis_url
        self.channel = channel
        self.store = store
        self.backoff = Backoff(0.05, backoff_max_s)
        self.subscribed = False
        self.last_seq: dict[int, int] = {}  # partition -> newest seq delivered
        self._dedupe_until = 0.0  # after a catch-up, live messages may repeat what it delivered
        self.caught_up = 0  # events delivered from the history after reconnects

    def loop(self) -> None:
        client = connect(self.redis_url, socket_timeout=None)
        try:
            while not self.stopping:
                pubsub = client.pubsub()
                try:
                    self._subscribe(pubsub)
                    self.subscribed = True
                    self.backoff.reset()
                    self.redis_ok()
                    self._catch_up()
                    self._listen(pubsub)
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    self.redis_failed(exc)
                    self.subscribed = False
                    self.sleep(self.backoff.next())
                except Exception:
                    self.subscribed = False
                    log.exception("fan-out listener error; restarting")
                    self.sleep(self.backoff.next())
                finally:
                    self.subscribed = False
                    try:
                        pubsub.close()
                    except Exception:
                        log.debug("error closing the fan-out subscription", exc_info=True)
        finally:
            client.close()

    def _subscribe(self, pubsub) -> None:
        """Subscribe and wait for the confirmation: the catch-up that follows must not miss what
        is stored between its read and the subscription."""
        pubsub.subscribe(self.channel)
        confirm_subscriptions(pubsub, 1, SUBSCRIBE_TIMEOUT_S)
        pubsub.ignore_subscribe_messages = True

    def _catch_up(self) -> None:
        """What was stored since the newest event we delivered, per partition, from the history."""
        if self.store is None or not self.last_seq:
            return
        events: list[dict] = []
        for partition, after in sorted(self.last_seq.items()):
            while len(events) < CATCH_UP_MAX:
                page = self.store.history_after(after, CATCH_UP_MAX, oldest_first=True, partition=partition)
                events += page["events"]
                if page["next_after"] is None:
                    break
                after = page["next_after"]
        if not events:
            return
        events = events[:CATCH_UP_MAX]
        for event in events:
            self._note(event["seq"], event["seq"])
        self._dedupe_until = time.monotonic() + CATCH_UP_DEDUPE_S
        self.caught_up += len(events)
        log.info("fan-out listener delivered %d event(s) stored while it was away", len(events))
        self.fanout.deliver([orjson.dumps(e) for e in events])

    def _note(self, first: int, last: int) -> None:
        partition = first % self.stride
        if last > self.last_seq.get(partition, -1):
            self.last_seq[partition] = last

    @property
    def stride(self) -> int:
        return self.store.partitions if self.store is not None else 1

    def _fresh(self, data: bytes) -> list[bytes]:
        """A fan-out message's events, without those a catch-up delivered already."""
        first, stride, bodies = parse_fanout_message(data)
        if not bodies:
            return []
        if self._dedupe_until and time.monotonic() < self._dedupe_until:
            seen = self.last_seq.get(first % stride)
            if seen is not None and first <= seen:
                skip = (seen - first) // stride + 1
                bodies, first = bodies[skip:], first + skip * stride
                if not bodies:
                    return []
        self._note(first, first + (len(bodies) - 1) * stride)
        return numbered(first, bodies, stride)

    def _listen(self, pubsub) -> None:
        """Deliver until stopped: every message that has arrived, as one batch. Read straight
        from the socket through hiredis where it can (one green recv per wake, not a readiness
        check and a get_message per message: about 0.5 ms of this loop's time per message)."""
        raw = RawSubscription.of(pubsub)
        if raw is None:
            while not self.stopping:
                self._pump(pubsub)
            return
        raw.settimeout(LISTEN_WAIT_S)
        while not self.stopping:
            messages: list = []
            raw.ready(messages)
            self._deliver(messages)
            try:
                raw.receive()
            except redis.ConnectionError:
                if self.stopping:  # stopped, and the embedded Redis went first: nothing to report
                    return
                raise

    def _pump(self, pubsub) -> None:
        """One wake of the listener without hiredis: what has arrived, through get_message."""
        conn = pubsub.connection
        if conn is None or not conn.can_read(timeout=LISTEN_WAIT_S):
            self.socketio.sleep(0)
            return
        messages: list = []
        while True:
            message = pubsub.get_message(timeout=None)
            if message is not None and message.get("type") == "message":
                messages.append(message["data"])
            if not conn.can_read(timeout=0):
                break
        self._deliver(messages)

    def _deliver(self, messages: list[bytes]) -> None:
        """The events of fan-out messages that arrived together, delivered as one batch."""
        encoded: list[bytes] = []
        for data in messages:
            encoded += self._fresh(data)
        if encoded:
            self.fanout.deliver(encoded)


def parse_fanout_message(data: bytes) -> tuple[int, int, list[bytes]]:
    """`<first seq>[,<stride>]\n<event JSON without seq>\n...` (the write script's message) ->
    (first seq, stride, bodies). The stride (INGEST_PARTITIONS) is there only when above 1."""
    head, _, rest = data.partition(b"\n")
    if not rest:
        return 0, 1, []
    first, _, stride = head.partition(b",")
    return int(first), int(stride) if stride else 1, rest.split(b"\n")


def decode_fanout_message(data: bytes) -> list[bytes]:
    """The wire events of a fan-out message."""
    first, stride, bodies = parse_fanout_message(data)
    return numbered(first, bodies, stride) if bodies else []


# Keys.watched outlives a tick or two that come late, not a web node that went away.
WATCHED_TTL_MS = 3000


class Ticker(PeriodicTask):
    """Once a second: aggregates per window room, generator state, slow clients."""

    name = "ticker"

    def __init__(
        self,
        socketio,
        store: Store,
        *,
        interval_s: float,
        fanout: Fanout | None = None,
        reads=None,
    ):
        super().__init__(socketio.sleep)
        self.socketio = socketio
        self.fanout = fanout
        self.store = store
        # The read process (backend/web/readproxy.py), when there is one: a window's merge runs
        # there, and this loop goes on delivering while it waits for the answer.
        self.reads = reads
        self.interval_s = interval_s
        self._last_generator: dict | None = None

    def step(self) -> None:
        if self.fanout is not None:
            self.fanout.drop_slow_clients()
        self._note_watched()
        self._push_aggregates()
        self._push_generator_state()

    def _note_watched(self) -> None:
        """Tell the worker that someone watches live (Keys.watched): it then writes smaller
        batches, trading some of a burst's throughput for latency (MAX_BATCH_LIVE)."""
        rooms = local_rooms(self.socketio)
        if rooms.get(BATCH_ROOM) or rooms.get(LEGACY_ROOM):
            self.store.redis.set(self.store.keys.watched, "1", px=WATCHED_TTL_MS)

    tick = PeriodicTask.guarded_step  # one tick, as the loop runs it

    def windows(self) -> list[int]:
        out = []
        for name, members in list(local_rooms(self.socketio).items()):
            if members and isinstance(name, str) and name.startswith(WINDOW_ROOM_PREFIX):
                out.append(int(name[len(WINDOW_ROOM_PREFIX) :]))
        return sorted(out)

    def _push_aggregates(self) -> None:
        now = time.time()
        for window_s in self.windows():
            body = self._aggregate(window_s, now)
            # ignore_queue: every node ticks for its own clients; through the message queue each
            # client would get one copy per node.
            self.socketio.emit("aggregate", body, to=window_room(window_s), ignore_queue=True)

    def _aggregate(self, window_s: int, now: float) -> dict:
        if self.reads is not None:
            raw = self.reads.fetch("/api/metrics/aggregate", f"window={window_s}")
            if raw is not None:
                return orjson.loads(raw)
        return self.store.aggregate(window_s, now=now)

    def _push_generator_state(self) -> None:
        state = generator_state(self.store)
        # `published` moves every second while the generator runs; one small emit per tick keeps
        # the dashboard's count live (it showed the count at start until something else changed).
        comparable = {k: v for k, v in state.items() if k != "updated"}
        if comparable != self._last_generator:
            self._last_generator = comparable
            self.socketio.emit("generator", state, ignore_queue=True)


def generator_state(store: Store) -> dict:
    """What the dashboard shows of the built-in generator: its own last report, if it is alive."""
    raw = store.redis.hgetall(store.keys.generator_status)
    if not raw:
        return {"available": False, "running": False, "rate": 0.0, "profile": None, "published": 0}
    status = {k.decode(): v.decode() for k, v in raw.items()}
    return {
        "available": True,
        "running": status.get("running") == "1",
        "rate": float(status.get("rate") or 0.0),
        "profile": status.get("profile"),
        "published": int(float(status.get("published") or 0)),
    }
