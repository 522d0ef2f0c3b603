"""The ingest worker process: one consumer per partition (ingest/consumer.py), at most its share.

With INGEST_PARTITIONS=1 (the default) this is one consumer: exactly one worker consumes at a
time and the others are hot standbys. With P partitions, N worker processes split them (about
P / N each, see ingest/shares.py) and move them when one joins, leaves or dies. The process
reports itself (id, partitions held, figures) about once a second for /api/health on any node.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from backend import telemetry
from backend.core import native
from backend.ingest.consumer import Consumer
from backend.ingest.lease import HEARTBEAT_EVERY_S, new_token
from backend.ingest.shares import Shares
from backend.storage.store import Store
from backend.tasks.loop import Task, start_thread

log = logging.getLogger(__name__)

STOP_WAIT_S = 5.0  # longest a stopping worker waits for its consumers to finish their batches


class Worker(Task):
    name = "worker"

    def __init__(self, config, broadcaster, sleep=time.sleep, start_task=None):
        super().__init__(sleep)
        self.start_task = start_task or (lambda target: start_thread(target, "ingest"))
        self.token = new_token()
        self.partitions = config["INGEST_PARTITIONS"]
        self.shares = Shares(self.partitions)
        self.store = Store.from_config(config)  # every partition's keys; the workers' reports
        self.stale_after_s = max(config["LEASE_TTL_MS"] / 1000.0, 2 * HEARTBEAT_EVERY_S)
        self.consumers = [
            Consumer(
                config,
                broadcaster,
                sleep,
                self.start_task,
                partition=k,
                token=self.token,
                shares=self.shares,
            )
            for k in range(self.partitions)
        ]
        self._report_lock = threading.Lock()
        self.shares.on_change = self._report

    # --- what the rest of the process reads --------------------------------------------------
    @property
    def role(self) -> str:
        if any(c.role == "active" for c in self.consumers):
            return "active"
        return self.consumers[0].role if not self.running else "standby"

    @property
    def leader(self) -> bool:
        """Whether this process runs the once-a-second alert evaluation: partition 0's holder."""
        return self.consumers[0].role == "active"

    @property
    def subscribed(self) -> bool:
        return any(c.subscribed for c in self.consumers)

    processed = property(lambda self: sum(c.processed for c in self.consumers))
    rejected = property(lambda self: sum(c.rejected for c in self.consumers))
    batches = property(lambda self: sum(c.batches for c in self.consumers))

    # --- the loop ----------------------------------------------------------------------------
    def loop(self) -> None:
        for consumer in self.consumers:
            self.start_task(consumer.run)
        try:
            while not self.stopping:
                self._count_live_workers()
                self._report()
                self._sleep_unless_stopped(HEARTBEAT_EVERY_S)
        finally:
            for consumer in self.consumers:
                consumer.stop()
            deadline = time.monotonic() + STOP_WAIT_S
            while any(c.running for c in self.consumers) and time.monotonic() < deadline:
                self.sleep(0.02)

    def _sleep_unless_stopped(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            self.sleep(min(0.1, seconds))

    def _count_live_workers(self) -> None:
        try:
            live = self.store.workers(stale_after_s=self.stale_after_s)
        except redis.RedisError as exc:
            self.redis_failed(exc)
            return
        self.redis_ok()
        tokens = {w.get("token") for w in live} | {self.token}
        self.shares.set_live_workers(len(tokens))

    def _report(self) -> None:
        # Consumers report from their own threads when they take or hand over a partition: one
        # at a time, so the last report written (and the gauge) is the newest state, not a stale
        # snapshot that lost a race.
        with self._report_lock:
            status = self.status()
            telemetry.PARTITIONS_HELD.set(len(status["partitions"]))
            try:
                self.store.report_worker(self.token, status)
            except redis.RedisError as exc:
                log.debug("cannot report the worker's status: %s", exc)

    def status(self) -> dict:
        consumers = [c.status() for c in self.consumers]
        held = sorted(c["partition"] for c in consumers if c["role"] == "active")
        first = consumers[0]
        return {
            "running": self.running,
            "role": self.role,
            "token": self.token,
            "partitions": held,
            "subscribed": self.subscribed,
            "reconnects": sum(c["reconnects"] for c in consumers),
            "processed": self.processed,
            "rejected": self.rejected,
            "batches": self.batches,
            "transport": first["transport"],
            "core": native.state,  # compiled (mypyc), or pure Python and why
            "pubsub": {
                key: sum(c["pubsub"][key] for c in consumers)
                for key in ("buffered", "dropped", "disconnects")
            },
            **({"stream": first["stream"]} if "stream" in first and self.partitions == 1 else {}),
            **({"by_partition": consumers} if self.partitions > 1 else {}),
        }
