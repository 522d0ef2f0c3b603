"""A Pub/Sub subscription read straight from its socket through hiredis.

redis-py's `get_message` costs several microseconds of Python a message, plus a readiness check
(a green `select` under eventlet) for each: the largest cost of a busy subscriber, and of an
idle web node at low rates, where every batch is a message of its own. Here one `recv` takes
whatever has arrived (up to RECV_BYTES) and hiredis cuts every complete message out of it, with
no per-message wrapping. Used by the worker's reader (backend/ingest/pubsub.py) and the web
node's fan-out listener (backend/realtime/broadcast.py).
"""

from __future__ import annotations

import redis

RECV_BYTES = 1 << 20  # bytes per socket read at most
_MESSAGE_TYPES = (b"message", b"smessage")  # what carries data: classic and sharded Pub/Sub

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - another redis-py layout: then hiredis says False
    _NOT_ENOUGH_DATA = False


class RawSubscription:
    """The socket and hiredis reader of a subscribed `redis.client.PubSub`."""

    def __init__(self, sock, reader):
        self._sock = sock
        self._gets = reader.gets
        self._feed = reader.feed

    @classmethod
    def of(cls, pubsub) -> RawSubscription | None:
        """The subscription's raw parts, or None without hiredis (callers then use get_message).
        RESP2 replies and RESP3 push notifications both come out of hiredis as a list:
        [b"message", channel, data]."""
        conn = pubsub.connection
        reader = getattr(getattr(conn, "_parser", None), "_reader", None)
        sock = getattr(conn, "_sock", None)
        if reader is None or sock is None or not hasattr(reader, "gets"):
            return None
        return cls(sock, reader)

    def settimeout(self, timeout_s: float) -> None:
        """How long receive() waits for data at most."""
        self._sock.settimeout(timeout_s)

    def ready(self, out: list) -> bytes | None:
        """Append the data of every complete message read so far to `out`. Returns the channel
        of a SUNSUBSCRIBE when one came (the server dropped a shard subscription because its slot
        moved: nothing more arrives here), else None. Other replies (a PONG, a subscribe
        confirmation) carry no data and are skipped."""
        gets = self._gets
        reply = gets()
        # hiredis answers "no complete reply yet" with False, or with the marker the reader was
        # created with (redis-py passes its own).
        while reply is not False and reply is not _NOT_ENOUGH_DATA:
            # isinstance, not `type(reply) is list`: under RESP3 hiredis hands pushes over as
            # hiredis.PushNotification, a list subclass.
            if isinstance(reply, list) and reply:
                if len(reply) == 3 and reply[0] in _MESSAGE_TYPES:
                    out.append(reply[2])
                elif reply[0] == b"sunsubscribe":
                    return reply[1]
            reply = gets()
        return None

    def receive(self) -> bool:
        """Read what has arrived, waiting up to the socket's timeout: False when nothing came in
        that time. Raises redis.ConnectionError when the server closed the connection."""
        try:
            chunk = self._sock.recv(RECV_BYTES)
        except TimeoutError:
            return False
        if not chunk:
            raise redis.ConnectionError("Connection closed by server.")
        self._feed(chunk)
        return True
