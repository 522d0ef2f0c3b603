"""The durable ingest transport (INGEST_TRANSPORT=stream): a Redis Stream read by a consumer group.

Producers XADD ``{"event": <the same JSON text they would PUBLISH>}`` to INGEST_STREAM with
``MAXLEN ~ INGEST_STREAM_MAXLEN``. The lease-holding worker reads it as consumer CONSUMER of group
GROUP and acknowledges a batch's entries (XACK) inside the MULTI/EXEC that stores the batch, so
an entry is acknowledged exactly when its event is stored: a worker that dies before EXEC leaves
its entries pending and the next lease holder re-reads them; one that dies after EXEC has acked
them with the write, so they are never applied twice.

Why these choices:

- One fixed consumer name for every worker: the pending-entries list belongs to a consumer, and a
  new lease holder (failover, restart) must inherit the previous holder's unacknowledged entries.
  It reads them first (XREADGROUP ... 0) and then new ones (>). Only the lease holder reads.
- The group is created at ``0``, not ``$``: entries XADDed before any worker ever ran (or after
  Redis lost the group) are exactly the ones durability is for.
- The worker trims what it has acknowledged (XTRIM MINID ~ once a second), so in steady state the
  stream holds only unprocessed entries; MAXLEN bounds it only while no worker keeps up. The
  stream is Pulseboard's queue: another consumer group hung on it would see only that much.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable

import orjson
import redis

log = logging.getLogger(__name__)

TRANSPORTS = ("pubsub", "stream")
GROUP = "pulseboard"
CONSUMER = "worker"
FIELD = "event"  # the entry field holding the event's JSON text
_FIELD_B = FIELD.encode()


def check_transport(value: str) -> str:
    if value not in TRANSPORTS:
        raise ValueError(f"INGEST_TRANSPORT must be one of {', '.join(TRANSPORTS)}, got {value!r}")
    return value


def xadd_all(pipe, key: str, payloads: Iterable[bytes | str], maxlen: int) -> None:
    """Queue one XADD per payload on `pipe` (a producer's pipeline: one round trip for all)."""
    for payload in payloads:
        pipe.xadd(key, {FIELD: payload}, maxlen=maxlen or None, approximate=True)


class Entry:
    """One stream entry as the worker sees it: its id and either the raw event or why not."""

    __slots__ = ("id", "problem", "raw")

    def __init__(self, entry_id: bytes, fields: dict | None):
        self.id = entry_id
        self.raw = None  # the event's bytes, or for a bad entry what there is to keep of it
        self.problem = None
        if not fields:
            # XREADGROUP returns an entry that is still pending but was deleted from the stream
            # (trimmed by MAXLEN before anyone acknowledged it) with no fields: its event is gone.
            self.raw = b""
            self.problem = "entry was trimmed from the stream before it was processed (MAXLEN)"
        elif _FIELD_B in fields:
            self.raw = fields[_FIELD_B]
        else:
            self.raw = orjson.dumps({_text(k): _text(v) for k, v in fields.items()})
            self.problem = f"stream entry has no {FIELD!r} field"


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class StreamReader:
    """The worker's side of the stream: group upkeep, pending-then-new reads, figures, trimming.

    Reads go through a connection of their own. Between batches it holds an outstanding
    ``XREADGROUP ... BLOCK`` ("armed"), and the worker waits on that socket and the Pub/Sub socket
    together, so both sources are picked up the moment something arrives and an idle worker makes
    about one round trip a second. (A blocking read that is reaped and re-sent every few ms would
    not do: Redis resolves BLOCK timeouts only every 1000/hz ms, 100 ms by default.)"""

    def __init__(self, client: redis.Redis, key: str, reader: redis.Redis):
        self.redis = client
        self.key = key
        self._reader = reader  # socket_timeout=None: a blocked read is not an error
        self._conn = None
        self._armed = False
        self._pending_after: bytes | None = b"0"  # None: pending entries done, reading new ones
        self.info: dict = {}

    @property
    def replaying(self) -> bool:
        return self._pending_after is not None

    @property
    def socket(self):
        """The socket the armed read's reply will arrive on (None when not armed)."""
        return self._conn._sock if self._armed and self._conn is not None else None

    def activate(self) -> None:
        """On taking the lease (or reconnecting): make sure the group exists, replay pending first."""
        self.replay()
        self.ensure_group()

    def replay(self) -> None:
        """Read this consumer's pending entries again before new ones. The armed read is dropped
        first, so that no entry can reach us twice (what it had been given stays pending)."""
        self.close()
        self._pending_after = b"0"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
        self._armed = False

    def use_reader(self, reader: redis.Redis) -> None:
        """Read through `reader` from now on (a cluster's stream moved to another node: the
        consumer points its reads at the slot's new owner)."""
        self.close()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._reader.connection_pool.release(self._conn)
        self._conn = None
        self._reader = reader

    def ensure_group(self) -> None:
        try:
            # MKSTREAM at 0: the group sees every entry the stream holds, including the ones
            # XADDed before it existed.
            self.redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
            log.info("created consumer group %r on stream %r", GROUP, self.key)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _connection(self):
        if self._conn is None:
            self._conn = self._reader.connection_pool.get_connection()
        return self._conn

    def _command(self, start: bytes, count: int, block_ms: int | None) -> None:
        block = ("BLOCK", block_ms) if block_ms is not None else ()
        self._connection().send_command(
            "XREADGROUP", "GROUP", GROUP, CONSUMER, "COUNT", count, *block, "STREAMS", self.key, start
        )

    def read_pending(self, count: int) -> list[Entry]:
        """The next page of this consumer's pending entries; [] (and from then on, new entries
        only) when there are none left."""

        def read():
            self._command(self._pending_after, count, None)
            return self._conn.read_response()

        got = self._reply(read)
        if got is None:
            return []  # the group was recreated, and the replay with it
        if got:
            self._pending_after = got[-1].id
        else:
            self._pending_after = None
        return got

    def arm(self, count: int, block_ms: int) -> None:
        """Send a blocking read for new entries, unless one is outstanding. Not while replaying."""
        if not self._armed and not self.replaying:
            self._command(b">", count, block_ms)
            self._armed = True

    def ready(self) -> bool:
        """Whether the armed read's reply has begun to arrive."""
        return self._armed and self._conn.can_read(0)

    def take(self) -> list[Entry]:
        """The armed read's entries if its reply has arrived, else []."""
        if not self.ready():
            return []
        self._armed = False
        return self._reply(self._conn.read_response) or []

    def _reply(self, read) -> list[Entry] | None:
        """Entries of the reply that `read` returns; None if the group had to be recreated."""
        try:
            reply = read()
        except redis.ResponseError as exc:
            # NOGROUP: Redis lost the group (a restart without persistence, FLUSHALL) or someone
            # deleted the stream; a blocked read can also be cut short when the key goes away.
            text = str(exc)
            if "NOGROUP" not in text and "UNBLOCKED" not in text:
                raise
            log.warning("stream %r lost its consumer group (%s); recreating it", self.key, text)
            self.activate()
            return None
        except BaseException:
            self.close()  # a connection left halfway through a reply is of no further use
            raise
        return _entries(reply)

    def housekeeping(self, stuck_after_ms: int) -> dict:
        """Refresh the stream figures, drop what the group has acknowledged, and re-read pending
        entries that waited longer than `stuck_after_ms`: ones a worker was given and then could
        not store because it had lost the lease meanwhile (after its successor's replay), or
        that some other consumer name holds. XAUTOCLAIM moves them to our consumer first. Two
        round trips; the worker calls it about once a second."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.key)
        pipe.xinfo_groups(self.key)
        pipe.xpending(self.key, GROUP)
        pipe.xautoclaim(self.key, GROUP, CONSUMER, stuck_after_ms, "0-0", count=1000, justid=True)
        try:
            length, groups, pending, stuck = pipe.execute()
        except redis.ResponseError:
            return self.info  # the group is gone: the next read recreates it
        group = next((g for g in groups if g.get("name") in (GROUP, GROUP.encode())), None)
        if group is None:
            return self.info
        lag = group.get("lag")
        self.info = {
            "length": int(length),
            "pending": int(pending["pending"]),
            # entries not yet delivered to the group; None when Redis cannot tell (after deletions)
            "lag": int(lag) if lag is not None else None,
        }
        if stuck:
            log.warning(
                "stream %r had %d entries pending for over %d ms; re-reading them",
                self.key,
                len(stuck),
                stuck_after_ms,
            )
            self.replay()
        # Everything older than the oldest pending entry (or, with none pending, than the last
        # one delivered) has been stored and acknowledged.
        floor = pending["min"] if pending["pending"] else group.get("last-delivered-id")
        if floor and floor not in (b"0-0", "0-0"):
            self.redis.xtrim(self.key, minid=floor, approximate=True)
        return self.info


def _entries(reply) -> list[Entry]:
    """Entries of a raw XREADGROUP reply: None, [[key, entries]] (RESP2) or {key: entries} (RESP3)."""
    if not reply:
        return []
    per_stream = reply.values() if isinstance(reply, dict) else (item[1] for item in reply)
    out = []
    for entries in per_stream:
        for entry_id, flat in entries:
            fields = (
                flat
                if isinstance(flat, dict) or flat is None
                else dict(zip(flat[::2], flat[1::2], strict=True))
            )
            out.append(Entry(entry_id, fields))
    return out
