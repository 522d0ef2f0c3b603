"""Everything Pulseboard reads from and writes to Redis.

The write side is built for throughput: one batch of events is one script, whatever its size
(sequence numbers, recent lists, every aggregate delta, dead letters, counters, acks, history
and the fan-out PUBLISH: scripts.py), applied all or nothing. write_batch() waits for it;
send_batch() and read_batch() split the same script over a connection of its own (pipe()) so
the worker can prepare the next batch meanwhile. Aggregate updates are increments and
compare-and-set min/max inside Redis, so several workers may write the same buckets
concurrently and the result stays exact.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import msgpack
import orjson
import redis

from backend.core.aggregate import RESOLUTIONS, BucketDelta
from backend.core.events import numbered
from backend.core.layout import LATE_WRITE_S
from backend.storage.client import PoolExhausted, connect, node_client
from backend.storage.keys import Keys, Partitioning
from backend.storage.leases import Leases
from backend.storage.pipe import ScriptPipe
from backend.storage.reads import Reads
from backend.storage.scripts import WRITE_BATCH_LUA, encode_deltas

WRITER_NAME = "pulseboard-writer"  # CLIENT LIST name of a worker's write connection (Store.pipe)


class LeaseLost(Exception):
    """A fenced write found the worker lease held by someone else (or expired): nothing was written."""


class Store(Reads, Leases):
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        recent_max: int,
        retention_s: int,
        dead_letter_max: int,
        recent_per_metric: int = 0,
        history_s: int = 0,
        partition: int = 0,
        partitions: int = 1,
        parts: list[Keys] | None = None,
    ):
        self.redis = client
        self.keys = keys
        self.recent_max = recent_max
        self.retention_s = retention_s
        self.dead_letter_max = dead_letter_max
        self.recent_per_metric = recent_per_metric
        self.history_s = history_s
        self.partition = partition  # whose keys `keys` are: events are numbered n * partitions + partition
        self.partitions = partitions
        self.parts = parts or [keys]  # every partition's keys: what readers merge
        self.clock = time.time  # the writer's wall clock: seqs, TTLs and late batches go by it
        self._write = client.register_script(WRITE_BATCH_LUA)
        self._init_reads()
        self._init_leases()

    @classmethod
    def from_config(
        cls, config: Mapping, client: redis.Redis | None = None, partition: int | None = None
    ) -> Store:
        """A store for reading every partition (`partition` None) or writing one partition."""
        parts = Partitioning.from_config(config)
        base = Keys.from_config(config)
        return cls(
            client
            or connect(
                config["REDIS_URL"],
                max_connections=config.get("REDIS_MAX_CONNECTIONS"),
                pool_timeout_s=config.get("REDIS_POOL_TIMEOUT_S"),
                cluster=parts.cluster,
            ),
            base if partition is None else parts.keys(base, partition),
            recent_max=config["RECENT_MAX"],
            retention_s=config["RETENTION_S"],
            dead_letter_max=config["DEAD_LETTER_MAX"],
            recent_per_metric=config["RECENT_PER_METRIC"],
            history_s=config["HISTORY_S"],
            partition=partition or 0,
            partitions=parts.count,
            parts=parts.all_keys(base),
        )

    # --- write side ------------------------------------------------------------------------
    def reserve_seqs(self, n: int) -> int:
        """Atomically reserve `n` sequence numbers; returns the first.

        A new counter starts at the clock in microseconds rather than 0, so seqs keep increasing
        even when Redis loses its data (a restart without persistence): clients deduplicating by
        seq would otherwise drop every new event as already seen. That holds while the average
        rate since the counter was created stays under a million events per second."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.keys.seq, int(time.time() * 1_000_000), nx=True)
        pipe.incrby(self.keys.seq, n)
        return int(pipe.execute()[1]) - n + 1

    def write_batch(
        self,
        events: list[dict],
        deltas: Mapping[tuple[int, int], BucketDelta],
        rejected: list[dict],
        received: int,
        tag_deltas: Mapping[tuple[int, int], BucketDelta] | None = None,
        *,
        ack: tuple[str, str, list[bytes]] | None = None,
        fence: tuple[str, str] | None = None,
        new_metrics: Iterable[str] = (),
        fanout_channel: str | None = None,
    ) -> list[bytes]:
        """Store a batch in one round trip (one script: all or nothing) and number its events.

        `events` is oldest first; each gets its `seq`, and the return value is their JSON text
        with it, oldest first, encoded once here for the recent lists and for the broadcast.
        Only the newest `recent_max` events of the batch (and of each metric, `recent_per_metric`)
        go to Redis: the rest would be trimmed off by the same script anyway.

        `ack` (stream, group, entry ids): XACK those stream entries in the same script, so they
        are acknowledged exactly when their events are stored. `fence` (lease key, token): write
        only while the lease is still ours, raising LeaseLost otherwise: a worker that stalled past
        its lease must not store entries that its successor, having re-read them, stores again.
        `new_metrics`: names to add to the known-metrics set (the cardinality bound).
        `fanout_channel`: publish the batch there from the same script, for the web nodes
        (backend/realtime/fanout.py), instead of returning it; returns [] then."""
        for event in events:
            event.pop("seq", None)  # numbered again by this write, if written before
        keys, args, bodies = self._batch_call(
            events, deltas, rejected, received, tag_deltas, ack, fence, new_metrics, fanout_channel
        )
        first = self._first_seq(self._write(keys=keys, args=args), fence)
        for offset, event in enumerate(events):
            event["seq"] = first + offset * self.partitions
        return [] if fanout_channel else numbered(first, bodies, self.partitions)

    def send_batch(
        self,
        pipe: ScriptPipe,
        events: list[dict],
        deltas: Mapping[tuple[int, int], BucketDelta],
        rejected: list[dict],
        received: int,
        tag_deltas: Mapping[tuple[int, int], BucketDelta] | None = None,
        *,
        new_metrics: Iterable[str] = (),
        fanout_channel: str,
    ) -> None:
        """write_batch() sent on `pipe` without waiting for Redis: the script publishes the
        batch on `fanout_channel` when Redis runs it, and read_batch(pipe) gives its first seq
        afterwards. Unfenced, so not for batches with stream entries to acknowledge."""
        keys, args, _ = self._batch_call(
            events, deltas, rejected, received, tag_deltas, None, None, new_metrics, fanout_channel
        )
        pipe.send(keys, args)

    def read_batch(self, pipe: ScriptPipe) -> int:
        """The first seq of the oldest batch sent on `pipe` whose reply was not read yet."""
        return self._first_seq(pipe.read(), None)

    def pipe(self) -> ScriptPipe:
        """A pipe for send_batch(): a connection of its own (same options as the client's) to
        the node that holds this partition's keys, looked up again after each reset."""

        def new_connection():
            client = (
                self.redis if isinstance(self.redis, redis.Redis) else node_client(self.redis, self.keys.seq)
            )
            pool = client.connection_pool
            return pool.connection_class(**{**pool.connection_kwargs, "client_name": WRITER_NAME})

        return ScriptPipe(new_connection, WRITE_BATCH_LUA)

    @staticmethod
    def _first_seq(reply, fence: tuple[str, str] | None) -> int:
        first = int(reply)
        if first < 0:
            raise LeaseLost(f"the lease {fence[0]!r} is no longer {fence[1]!r}")
        return first

    def _batch_call(
        self, events, deltas, rejected, received, tag_deltas, ack, fence, new_metrics, fanout_channel
    ) -> tuple[list, list, list[bytes]]:
        """The write script's KEYS and ARGV for one batch (scripts.py), and its events' JSON
        (without `seq`: the script numbers them)."""
        bodies = [orjson.dumps(e) for e in events]
        n = len(events)
        # Which events Redis needs: the newest recent_max overall, and the newest of each metric.
        wanted: dict[int, None] = dict.fromkeys(range(max(0, n - self.recent_max), n))
        lists: dict[str, list[int]] = {}
        per_metric = self.recent_per_metric
        if per_metric:
            for offset in range(n - 1, -1, -1):
                metric = events[offset]["metric"]
                group = lists.get(metric)
                if group is None:
                    lists[metric] = [offset]
                elif len(group) < per_metric:
                    group.append(offset)
                else:
                    continue
                wanted[offset] = None
        order = sorted(wanted)
        index_of = {offset: i for i, offset in enumerate(order, start=1)}
        list_keys = []
        listed: list[int] = []
        for metric, offsets in lists.items():
            list_keys.append(self.keys.recent_metric(metric))
            listed.append(len(offsets))
            listed += [index_of[o] for o in reversed(offsets)]  # oldest first: LPUSH leaves newest on top
        # Which events, and which go to which list, travel as two msgpack arguments; the events
        # themselves are the lines of the batch's JSON below. Two arguments per event cost the
        # packing here and the parsing in Redis about 5% of the worker's time per event.
        args: list = [msgpack.packb(order), msgpack.packb(listed)]
        dead = [orjson.dumps(r) for r in rejected[-self.dead_letter_max :]]
        args += dead
        reasons: dict[str, int] = {}
        for item in rejected:
            reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
        for reason, count in reasons.items():
            args += (reason, count)
        stream, group_name, ids = ack if ack is not None else (self.keys.seq, "", [])
        args += ids
        new_metrics = list(new_metrics)
        args += new_metrics
        now = self.clock()
        bucket_keys, ttls, ops = encode_deltas(deltas, self.keys.bucket, self.retention_s, now)
        if tag_deltas:  # top-N counters: their own hashes, so aggregate reads never see them
            tag_keys, tag_ttls, tag_ops = encode_deltas(
                tag_deltas, self.keys.tag_bucket, self.retention_s, now
            )
            bucket_keys += tag_keys
            ttls += tag_ttls
            ops += tag_ops
        header = [
            fence[1] if fence is not None else "",
            n,
            int(now * 1_000_000) // self.partitions,  # seqs stay near the clock in µs
            self.recent_max,
            self.dead_letter_max,
            received,
            group_name,
            self.retention_s,
            len(order),
            len(lists),
            len(dead),
            len(reasons),
            len(ids),
            len(bucket_keys),
            len(new_metrics),
            self.recent_per_metric,
            fanout_channel or "",
            b"\n".join(bodies),
            "1" if self.history_s else "",
            self.partitions,
            self.partition,
            "1" if _writes_late(deltas, now) else "",
        ]
        keys = [
            self.keys.recent,
            self.keys.rejected,
            self.keys.stats,
            self.keys.seq,
            fence[0] if fence is not None else self.keys.worker_lease,
            stream,
            self.keys.metrics,
            self.keys.history,
            *list_keys,
            *bucket_keys,
        ]
        return keys, [*header, *args, *ttls, msgpack.packb(ops)], bodies

    def trim_history(self, min_seq: int) -> None:
        """Drop history entries (batches) that start below `min_seq`; the worker calls it once a
        second with the first seq it wrote HISTORY_S ago."""
        self.redis.xtrim(self.keys.history, minid=f"{min_seq}-0", approximate=True)


def _writes_late(deltas: Mapping[tuple[int, int], object], now: float) -> bool:
    """Whether a batch adds to a bucket that ended more than LATE_WRITE_S ago (readers may
    have settled it: core/layout.py). A minute's own updates can come later than its seconds'
    when the worker held them back (ingest/batch.py)."""
    settled_before = now - LATE_WRITE_S
    return any(start + res < settled_before for res, start in deltas)


__all__ = ["RESOLUTIONS", "LeaseLost", "PoolExhausted", "Store", "connect"]
