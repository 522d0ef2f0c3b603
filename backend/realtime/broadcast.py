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

import redis

from backend.core.events import numbered
from backend.realtime.fanout import BATCH_ROOM, LEGACY_ROOM, Fanout
from backend.storage.store import Store, connect
from backend.tasks.loop import Backoff, PeriodicTask, Task

log = logging.getLogger(__name__)

WINDOW_ROOM_PREFIX = "win:"
LISTEN_WAIT_S = 1.0  # longest wait for a fan-out message before checking for a stop

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
    again: the busier the node, the fewer, larger deliveries). Reconnects by itself."""

    name = "fan-out listener"

    def __init__(self, socketio, fanout: Fanout, redis_url: str, channel: str, *, backoff_max_s: float):
        super().__init__(socketio.sleep)
        self.socketio = socketio
        self.fanout = fanout
        self.redis_url = redis_url
        self.channel = channel
        self.backoff = Backoff(0.05, backoff_max_s)
        self.subscribed = False

    def loop(self) -> None:
        client = connect(self.redis_url, socket_timeout=None)
        try:
            while not self.stopping:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                try:
                    pubsub.subscribe(self.channel)
                    self.subscribed = True
                    self.backoff.reset()
                    self.redis_ok()
                    while not self.stopping:
                        self._pump(pubsub)
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

    def _pump(self, pubsub) -> None:
        conn = pubsub.connection
        if conn is None or not conn.can_read(timeout=LISTEN_WAIT_S):
            self.socketio.sleep(0)
            return
        encoded: list[bytes] = []
        while True:
            message = pubsub.get_message(timeout=None)
            if message is not None and message.get("type") == "message":
                encoded += decode_fanout_message(message["data"])
            if not conn.can_read(timeout=0):
                break
        if encoded:
            self.fanout.deliver(encoded)


def decode_fanout_message(data: bytes) -> list[bytes]:
    """`<first seq>\n<event JSON without seq>\n...` (the write script's message) -> wire events."""
    head, _, rest = data.partition(b"\n")
    if not rest:
        return []
    return numbered(int(head), rest.split(b"\n"))


class Ticker(PeriodicTask):
    """Once a second: aggregates per window room, generator state, slow clients."""

    name = "ticker"

    def __init__(self, socketio, store: Store, *, interval_s: float, fanout: Fanout | None = None):
        super().__init__(socketio.sleep)
        self.socketio = socketio
        self.fanout = fanout
        self.store = store
        self.interval_s = interval_s
        self._last_generator: dict | None = None

    def step(self) -> None:
        if self.fanout is not None:
            self.fanout.drop_slow_clients()
        self._push_aggregates()
        self._push_generator_state()

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
            body = self.store.aggregate(window_s, now=now)
            # ignore_queue: every node ticks for its own clients; through the message queue each
            # client would get one copy per node.
            self.socketio.emit("aggregate", body, to=window_room(window_s), ignore_queue=True)

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
