"""Socket.IO fan-out: batched `metrics`, legacy per-event `metric`, and the once-a-second tick.

Rooms: every client starts in `legacy` (the original design's one `metric` message per event).
A client that sends `subscribe {"mode": "batch", "window": W}` moves to `batch` and `win:W`.
The tick computes each distinct window once per second, not once per client, and pushes it to
that window's room. The tick runs in every web process (it only reads Redis), so with several
nodes each serves its own clients; events reach all nodes through the Socket.IO message queue.
"""

from __future__ import annotations

import logging
import time

import redis

from backend.store import Store

log = logging.getLogger(__name__)

LEGACY_ROOM = "legacy"
BATCH_ROOM = "batch"
WINDOW_ROOM_PREFIX = "win:"
LEGACY_PRESENCE_TTL_S = 3


def window_room(window_s: int) -> str:
    return f"{WINDOW_ROOM_PREFIX}{window_s}"


def local_rooms(socketio) -> dict:
    """Rooms of the default namespace on this process, name -> members."""
    return socketio.server.manager.rooms.get("/", {})


def room_has_members(socketio, room: str) -> bool:
    return bool(local_rooms(socketio).get(room))


class Broadcaster:
    """Emits processed batches. With a message queue the rooms live on other nodes, so presence
    of legacy clients is read from a Redis key the nodes refresh instead of the local rooms."""

    def __init__(self, socketio, store: Store, *, message_queue: bool):
        self.socketio = socketio
        self.store = store
        self.message_queue = message_queue
        self._legacy_checked = 0.0
        self._legacy_remote = False

    def _has_legacy(self) -> bool:
        if room_has_members(self.socketio, LEGACY_ROOM):
            return True
        if not self.message_queue:
            return False
        now = time.monotonic()
        if now - self._legacy_checked > 1.0:
            self._legacy_checked = now
            try:
                self._legacy_remote = bool(self.store.redis.exists(self.store.keys.legacy_clients))
            except redis.RedisError:
                self._legacy_remote = True  # unknown: deliver rather than drop
        return self._legacy_remote

    def publish(self, events: list[dict]) -> None:
        if self.message_queue or room_has_members(self.socketio, BATCH_ROOM):
            self.socketio.emit("metrics", events, to=BATCH_ROOM)
        if self._has_legacy():
            for event in events:
                self.socketio.emit("metric", event, to=LEGACY_ROOM)


class Ticker:
    """Once a second: aggregates per window room, generator state, legacy presence."""

    def __init__(
        self, socketio, store: Store, *, interval_s: float, message_queue: bool, max_pending: int = 100
    ):
        self.socketio = socketio
        self.max_pending = max_pending
        self.dropped_slow_clients = 0
        self.store = store
        self.interval_s = interval_s
        self.message_queue = message_queue
        self.running = False
        self._stopping = False
        self._last_generator: dict | None = None
        self._redis_down = False

    def stop(self) -> None:
        self._stopping = True

    def run(self) -> None:
        self.running = True
        next_at = time.monotonic()
        try:
            while not self._stopping:
                next_at += self.interval_s
                self.tick()
                self.socketio.sleep(max(0.0, next_at - time.monotonic()))
                if time.monotonic() - next_at > self.interval_s:
                    next_at = time.monotonic()  # fell behind (e.g. Redis timeout): don't burst
        finally:
            self.running = False

    def tick(self) -> None:
        self._drop_slow_clients()
        try:
            self._push_aggregates()
            self._push_generator_state()
            if self.message_queue and room_has_members(self.socketio, LEGACY_ROOM):
                self.store.redis.set(self.store.keys.legacy_clients, "1", ex=LEGACY_PRESENCE_TTL_S)
            if self._redis_down:
                log.info("ticker: Redis is back")
            self._redis_down = False
        except redis.RedisError as exc:
            if not self._redis_down:
                log.warning("ticker: Redis unavailable (%s)", exc)
            self._redis_down = True
        except Exception:
            log.exception("ticker error")

    def _drop_slow_clients(self) -> None:
        """Disconnect clients that stopped reading: their send queue would otherwise grow forever.

        Closing leaves the client's rooms at once, so nothing more is queued for it; what is already
        queued (at most max_pending packets) is freed when the blocked TCP send times out."""
        for eio_sid, sock in list(self.socketio.server.eio.sockets.items()):
            if sock.closed:
                continue  # already dropped: its writer unblocks when the TCP send times out
            pending = sock.queue.qsize()
            if pending > self.max_pending:
                self.dropped_slow_clients += 1
                log.warning("dropping slow client %s: %d packets waiting to be sent", eio_sid, pending)
                try:
                    sock.close(wait=False, abort=True)
                except Exception:
                    log.debug("error closing slow client %s", eio_sid, exc_info=True)

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
