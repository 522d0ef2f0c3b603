"""Redis and worker state, pushed to the dashboard as it changes (Socket.IO event `status`).

``{"redis": "up"|"down", "worker": "up"|"down", "since": "<ISO time of the last change>"}``,
sent to a client when it connects and to every client of this node on each change. The page
learned of an outage from a 15 s health poll before, so a short one showed nothing.

Checked every STATUS_CHECK_S by a background task of its own, on a Redis connection of its own
with short timeouts: the shared client waits up to 5 s on a stalled Redis, and the tick may be
stuck in such a wait exactly when an outage should be reported. Each node reports what it sees
(emits use ignore_queue: with a message queue every node would otherwise send its copy to all).
"""

from __future__ import annotations

import logging
import time

import redis

from backend.core.timefmt import iso_ms
from backend.storage.store import Store, connect
from backend.tasks.loop import PeriodicTask

log = logging.getLogger(__name__)

STATUS_CHECK_S = 0.5  # an outage reaches the page within this plus the Redis timeouts below
PING_TIMEOUT_S = 0.5
EXTENSION_KEY = "pulseboard.status"


class StatusMonitor(PeriodicTask):
    name = "status"

    def __init__(self, socketio, store: Store, *, interval_s: float = STATUS_CHECK_S, clock=time.time):
        super().__init__(socketio.sleep)
        self.socketio = socketio
        self.store = store
        self.interval_s = interval_s
        self.clock = clock
        self.redis_up: bool | None = None
        self.worker_up: bool | None = None
        self.since = clock()
        self.changes = 0

    @classmethod
    def from_config(cls, socketio, config) -> StatusMonitor:
        client = connect(
            config["REDIS_URL"],
            socket_timeout=PING_TIMEOUT_S,
            socket_connect_timeout=PING_TIMEOUT_S,
            health_check_interval=0,
            cluster=bool(config.get("REDIS_CLUSTER", False)),
        )
        return cls(socketio, Store.from_config(config, client=client))

    def payload(self) -> dict:
        return {
            "redis": "up" if self.redis_up else "down",
            "worker": "up" if self.worker_up else "down",
            "since": iso_ms(self.since),
        }

    def check(self) -> bool:
        """Look once; emit `status` to everyone on this node when something changed. True then."""
        redis_up = self.store.ping()
        worker_up = False
        if redis_up:
            try:
                worker_up = self.store.worker_alive()
            except redis.RedisError:
                redis_up = False
        if (redis_up, worker_up) == (self.redis_up, self.worker_up):
            return False
        first = self.redis_up is None
        self.redis_up, self.worker_up = redis_up, worker_up
        self.since = self.clock()
        self.changes += 1
        if not first or not (redis_up and worker_up):
            log.info("status: redis %s, worker %s", *(("up" if x else "down") for x in (redis_up, worker_up)))
        self.socketio.emit("status", self.payload(), ignore_queue=True)
        return True

    def step(self) -> None:
        self.check()


def start(app, socketio) -> StatusMonitor:
    """Start the monitor once per process (beside the tick)."""
    monitor = app.extensions.get(EXTENSION_KEY)
    if monitor is None:
        monitor = app.extensions[EXTENSION_KEY] = StatusMonitor.from_config(socketio, app.config)
        socketio.start_background_task(monitor.run)
    return monitor


def current(app) -> dict | None:
    """What a client that just connected is told (None where no monitor runs)."""
    monitor = app.extensions.get(EXTENSION_KEY)
    if monitor is None or monitor.redis_up is None:
        return None
    return monitor.payload()
