"""Where a worker's batches come from: one source per transport behind one `next_batch()`.

Natural batching in every source: take what has already arrived (up to MAX_BATCH), waiting only
while nothing has, and never on a timer for more. At low rates a batch is one event; under load
messages pile up while the previous batch is written and the next one grows by itself.
"""

from __future__ import annotations

import selectors

from backend.ingest.pubsub import PubSubReader
from backend.ingest.stream import Entry, StreamReader

# Stream transport: how long the armed XREADGROUP blocks. An idle worker re-sends it about this
# often; the wait itself ends as soon as an entry or a Pub/Sub message arrives.
STREAM_BLOCK_MS = 1000


def next_message(pubsub, timeout: float):
    """The next Pub/Sub message, waiting at most `timeout` for one to start arriving.

    redis-py's get_message(timeout=t) also applies t to reading the rest of a message that has
    only partly arrived, so a large message straddling two reads raises TimeoutError and costs a
    reconnect (and the messages in flight). Wait for readability with the timeout, then read the
    whole message blocking."""
    conn = pubsub.connection
    if conn is None:
        return pubsub.get_message(timeout=timeout)
    if not conn.can_read(timeout=timeout):
        return None
    return pubsub.get_message(timeout=None)


class PubSubSource:
    """The channel, read by a PubSubReader into our own bounded buffer (see ingest/pubsub.py)."""

    def __init__(self, reader: PubSubReader, max_batch: int, max_batch_bytes: int):
        self.reader = reader
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes

    def next_batch(self, wait_s: float) -> tuple[list, list[Entry]]:
        return self.reader.take(self.max_batch, wait_s, self.max_batch_bytes), []

    def leftover(self) -> list:
        """What has already arrived, without waiting: stored before the worker stands down."""
        return self.reader.take(self.max_batch, 0, self.max_batch_bytes)

    def close(self) -> None:
        self.reader.stop()


class StreamSource:
    """The stream (a consumer group) and the channel together, one batch mixing both.

    First this consumer's pending entries, page by page (a previous lease holder's, or ours from
    before a reconnect). Then: wait on the Pub/Sub socket and an armed XREADGROUP BLOCK together,
    so neither source is polled, and take what both have. The stream entries of a failed batch
    stay pending in Redis and are re-read from there; Pub/Sub messages exist only in `carry`."""

    def __init__(self, stream: StreamReader, pubsub, sleep, max_batch: int):
        self.stream = stream
        self.pubsub = pubsub
        self.sleep = sleep
        self.max_batch = max_batch
        self.carry: list = []

    @property
    def ack_key(self) -> str:
        return self.stream.key

    def next_batch(self, wait_s: float) -> tuple[list, list[Entry]]:
        stream = self.stream
        if stream.replaying:
            entries = stream.read_pending(self.max_batch)
        else:
            stream.arm(self.max_batch, STREAM_BLOCK_MS)
            self._wait(wait_s)
            entries = stream.take()
        messages = self._drain(self.max_batch - len(entries))
        if entries or messages:
            try:
                stream.arm(self.max_batch, STREAM_BLOCK_MS)  # Redis gathers the next while we work
            except Exception:
                self.carry = messages  # the entries stay pending in Redis; these exist only here
                raise
        return messages, entries

    def leftover(self) -> list:
        return []  # entries stay pending for the next holder; messages wait in the socket

    def close(self) -> None:
        self.stream.close()  # entries an armed read was given stay pending

    def _drain(self, limit: int) -> list:
        """Pub/Sub messages already waiting, without blocking."""
        out = []
        try:
            while len(out) < limit:
                message = next_message(self.pubsub, 0)
                if message is None:
                    break
                out.append(message["data"])
        except Exception:
            self.carry = out  # what we took off the socket exists nowhere else
            raise
        return out

    def _wait(self, timeout: float) -> None:
        """Until a Pub/Sub message or the armed stream read's reply arrives, at most `timeout`."""
        conn = self.pubsub.connection
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
