"""The Pub/Sub transport's reader: messages off the socket as fast as they arrive, apart from processing.

Redis buffers what a subscriber has not read yet and disconnects it past the Pub/Sub output
buffer limit (32 MB by default), losing everything in flight without a trace. A burst the worker
cannot process at once (a backlog import, producers flushing after an outage) must therefore not
wait in Redis: this reader takes messages off the socket into a bounded buffer of ours, while
the worker processes batches taken from that buffer. Redis's buffer for us stays small.

When the worker truly cannot keep up, what is lost is counted and logged, never silent:
- our buffer full (PUBSUB_BUFFER_BYTES): newer messages are dropped and counted;
- Redis disconnected us anyway: counted as a disconnect; Pub/Sub cannot say how many messages
  went with it (use the stream transport for bursts: it loses nothing, see docs/api.md).

The reader runs as a background task: a real thread when the worker process runs in threading
mode (`pulseboard worker`, started by serve/up), a green thread under eventlet/gevent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import redis

from backend import telemetry
from backend.storage.rawsub import RawSubscription

log = logging.getLogger(__name__)

READ_WAIT_S = 0.25  # longest a read waits before the reader checks whether it should stop


class PubSubReader:
    def __init__(self, pubsub, *, max_bytes: int, start_task, sleep=time.sleep):
        self.pubsub = pubsub
        self.max_bytes = max_bytes
        self._start_task = start_task
        self._sleep = sleep
        self._items: deque = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._task = None
        self.error: BaseException | None = None
        self.dropped = 0
        self._dropping = False

    def start(self) -> PubSubReader:
        self._task = self._start_task(self._run)
        return self

    def stop(self) -> None:
        self._stopping = True
        with self._cond:
            self._cond.notify_all()
        if self._task is not None and hasattr(self._task, "join"):
            self._task.join()

    def _run(self) -> None:
        try:
            raw = RawSubscription.of(self.pubsub)
            if raw is not None:
                self._run_raw(raw)
            else:
                self._run_messages()
        except BaseException as exc:  # handed to the worker, which reconnects or stops
            with self._cond:
                self.error = exc
                self._cond.notify_all()

    def _run_messages(self) -> None:
        while not self._stopping:
            data = self._read(READ_WAIT_S)
            if data is None:
                continue
            items = [data]
            while len(items) < 10_000:  # what else has arrived, in one lock round
                more = self._read(0)
                if more is None:
                    break
                items.append(more)
            self._put(items)

    def _run_raw(self, raw: RawSubscription) -> None:
        """Straight from the socket through hiredis (backend/storage/rawsub.py): every complete
        message of one recv handed over in one lock round."""
        raw.settimeout(READ_WAIT_S)
        while not self._stopping:
            items: list = []
            moved = raw.ready(items)
            if items:
                self._put(items)
            if moved is not None:
                # The shard channel's slot moved to another node (failover, reshard): the worker
                # resubscribes on its new owner once what was read is handed over.
                raise redis.ConnectionError(f"shard channel {moved!r} moved (SUNSUBSCRIBE)")
            raw.receive()

    def _read(self, timeout: float):
        """The next message's data, or None. Waits for readability with the timeout, then reads
        the whole message blocking: a timeout mid-message would cost the connection."""
        conn = self.pubsub.connection
        if conn is None or not conn.can_read(timeout=timeout):
            if timeout == 0:
                return None
            self._sleep(0)
            return None
        message = self.pubsub.get_message(timeout=None)
        return None if message is None else message["data"]

    def _put(self, items: list) -> None:
        size = sum(map(len, items))
        with self._cond:
            if self._bytes + size > self.max_bytes:
                self.dropped += len(items)
                telemetry.PUBSUB_DROPPED.inc(len(items))
                if not self._dropping:
                    self._dropping = True
                    log.error(
                        "Pub/Sub buffer full (%d bytes, PUBSUB_BUFFER_BYTES): dropping incoming events; "
                        "the worker cannot keep up with this burst (use INGEST_TRANSPORT=stream for bursts)",
                        self._bytes,
                    )
                return
            if self._dropping:
                self._dropping = False
                log.warning("Pub/Sub buffer has room again; %d events dropped so far", self.dropped)
            self._items.extend(items)
            self._bytes += size
            telemetry.PUBSUB_BUFFERED.set(self._bytes)
            self._cond.notify()

    def take(self, limit: int, timeout: float, max_bytes: int = 1 << 62) -> list:
        """Up to `limit` messages (and about `max_bytes`, at least one), oldest first, waiting at
        most `timeout` for the first one. Raises what the reader died of once the buffer is
        empty (nothing read is left behind)."""
        with self._cond:
            if not self._items and self.error is None and not self._stopping:
                self._cond.wait(timeout)
            if not self._items:
                if self.error is not None:
                    raise self.error
                return []
            items = self._items
            out = [items.popleft()]
            size = len(out[0])
            while items and len(out) < limit and size + len(items[0]) <= max_bytes:
                data = items.popleft()
                out.append(data)
                size += len(data)
            self._bytes -= size
            telemetry.PUBSUB_BUFFERED.set(self._bytes)
            return out

    def pending(self) -> int:
        return len(self._items)
