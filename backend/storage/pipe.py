"""One connection on which a script is sent without waiting for its reply: the write path's overlap.

A batch's write script runs in Redis (about 5 µs an event, on the other core) while the worker
would otherwise wait for it doing nothing. Sent this way, the worker validates and aggregates the
next batch meanwhile and reads the reply afterwards: Redis executes commands of one connection
in the order they arrive and answers in that order, so the sequence numbers stay in batch order.
Measured in one process on the bench's traffic (batches of 1,500): 38-52k -> 47-67k events/s.

The script goes as EVAL with its text, never EVALSHA: a NOSCRIPT error (after SCRIPT FLUSH, or a
new Redis) would fail one batch while a later one, already sent, might succeed after another
client loaded the script, and store the batches out of order. Redis hashes the text each time
(about 10 µs for ours), which is what that guarantee costs.

The connection belongs to its pipe alone: redis-py's health check (a PING whose reply it reads
at once) would take a script's reply for its own, so it is never run here; connection errors are
raised to the caller, which knows which batches were in flight, and the next send reconnects.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
import redis.connection

try:  # redis-py's own packer wraps this one with a Python pass over every argument
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency (redis[hiredis])
    _hiredis_pack = None


class ScriptPipe:
    def __init__(self, new_connection: Callable[[], redis.connection.AbstractConnection], script: str):
        """`new_connection()` gives an unconnected connection to the node that runs the script
        (on a cluster: the master owning the keys' slot, asked again after each reset)."""
        self._new_connection = new_connection
        self._script = script
        self._conn = None
        self.unread = 0  # replies sent for and not read yet

    def send(self, keys: list, args: list) -> None:
        conn = self._connection()
        if _hiredis_pack is not None:
            # A batch's arguments are bytes, str and int only (no bytearray or memoryview, the
            # one thing redis-py converts first).
            packed = [_hiredis_pack(("EVAL", self._script, len(keys), *keys, *args))]
        else:
            packed = conn.pack_command("EVAL", self._script, len(keys), *keys, *args)
        try:
            conn.send_packed_command(packed, check_health=False)
        except BaseException:
            self.reset()
            raise
        self.unread += 1

    def read(self):
        """The oldest unread reply; raises what Redis answered (a script error), or a
        connection error, after which every reply still unread is lost with the connection."""
        if not self.unread:
            raise RuntimeError("no reply to read")
        try:
            reply = self._conn.read_response()
        except redis.ResponseError:
            self.unread -= 1  # that reply is read; the connection stays in step
            raise
        except BaseException:
            self.reset()
            raise
        self.unread -= 1
        return reply

    def ready(self) -> bool:
        """Whether the oldest unread reply has arrived (reading it would not wait)."""
        try:
            return self._conn.can_read(timeout=0)
        except BaseException:
            self.reset()
            raise

    def reset(self) -> None:
        """Drop the connection (and every reply not read yet); the next send opens another."""
        self.unread = 0
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()

    close = reset

    def _connection(self):
        if self._conn is None:
            self._conn = self._new_connection()
        return self._conn
