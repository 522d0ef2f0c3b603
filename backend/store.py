"""Everything Pulseboard reads from and writes to Redis.

The write side is built for throughput: one batch of events costs two round trips whatever its
size (INCRBY for the sequence numbers, then one pipeline with LPUSH+LTRIM of the recent list,
one atomic Lua apply of all aggregate deltas, and the dead letters). Aggregate updates are
increments and compare-and-set min/max inside Redis, so several workers may write the same
buckets concurrently and the result stays exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping

import msgpack
import orjson
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from backend.config import Config
from backend.core.aggregate import (
    RESOLUTIONS,
    BucketDelta,
    WindowStats,
    merge_field,
    plan_window,
    timeseries,
    timeseries_plan,
)
from backend.core.events import numbered
from backend.core.timefmt import iso_ms
from backend.keys import Keys
from backend.offload import pause

# The whole batch in one script: one round trip, applied all or nothing (a script runs to the end
# once Redis has it, whatever happens to the worker that sent it), sequence numbers included.
#
# KEYS: 1 recent list, 2 dead-letter list, 3 stats hash, 4 seq counter, 5 lease, 6 stream,
#       7 known-metrics set, 8 history stream, then the per-metric recent lists, then the buckets.
# ARGV: a header of counts, then sections in this order (see _BatchArgs):
#   [1] fence token ('' = no fence)  [2] events in the batch  [3] seq seed  [4] recent max
#   [5] dead-letter max  [6] received  [7] stream group  [8] retention-ish TTL of metric lists
#   [9] #pieces  [10] #metric lists  [11] #dead letters  [12] #reasons  [13] #acks  [14] #buckets
#   [15] #new metrics  [16] per-metric recent max  [17] fan-out channel ('' = none)
#   [18] the batch's events' JSON without seq, newline-separated, published on [17] after the
#        first seq and a newline: web nodes number the events themselves (first + offset)
#   [19] '1': also append [18] to the history stream as entry <first seq>-0 (resync after gaps)
#   pieces: (offset in batch, event JSON without its leading '{') ...  (oldest first)
#   metric lists: (#pieces of this list, piece index ...) per list, KEYS order
#   dead letters (JSON) ... ; reasons: (reason, count) ... ; ack ids ... ; new metric names ...
#   buckets: TTLs (one per bucket), then ONE argument: a msgpack array of groups of four,
#     bucket index, op, field, value (op: i = HINCRBY, f = HINCRBYFLOAT, n = keep min,
#     x = keep max). One msgpack blob instead of four arguments per op: a batch of late events
#     has ~60 ops an event, and packing them as separate arguments cost more than the script.
# Returns the batch's first seq, or -1 when the fence token no longer holds the lease.
_WRITE_BATCH_LUA = """
local token = ARGV[1]
if token ~= '' and redis.call('GET', KEYS[5]) ~= token then
  return -1
end
local nevents = tonumber(ARGV[2])
local first = 0
if nevents > 0 then
  -- A new counter starts at the clock (microseconds), so seqs keep increasing even when Redis
  -- loses its data: clients deduplicating by seq would otherwise drop new events as seen.
  redis.call('SET', KEYS[4], ARGV[3], 'NX')
  first = redis.call('INCRBY', KEYS[4], nevents) - nevents + 1
end
local npieces, nlists, ndead = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local nreasons, nacks, nbuckets = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local nnew = tonumber(ARGV[15])
local i = 20
local pieces = {}
for p = 1, npieces do
  pieces[p] = '{"seq":' .. string.format('%d', first + tonumber(ARGV[i])) .. ',' .. ARGV[i + 1]
  i = i + 2
end
local function push(key, items, limit)
  for c = 1, #items, 1000 do
    redis.call('LPUSH', key, unpack(items, c, math.min(c + 999, #items)))
  end
  redis.call('LTRIM', key, 0, limit - 1)
end
if npieces > 0 then
  local recent_max = tonumber(ARGV[4])
  local from = math.max(1, npieces - recent_max + 1)
  local newest = {}
  for p = from, npieces do newest[#newest + 1] = pieces[p] end
  push(KEYS[1], newest, recent_max)
end
local per_metric = tonumber(ARGV[16])
for l = 1, nlists do
  local n = tonumber(ARGV[i])
  local items = {}
  for p = 1, n do items[p] = pieces[tonumber(ARGV[i + p])] end
  i = i + n + 1
  local key = KEYS[8 + l]
  push(key, items, per_metric)
  redis.call('EXPIRE', key, ARGV[8])
end
if ndead > 0 then
  local items = {}
  for d = 1, ndead do items[d] = ARGV[i + d - 1] end
  i = i + ndead
  push(KEYS[2], items, tonumber(ARGV[5]))
end
local rejected = 0
for r = 1, nreasons do
  local n = tonumber(ARGV[i + 1])
  redis.call('HINCRBY', KEYS[3], 'rejected:' .. ARGV[i], n)
  rejected = rejected + n
  i = i + 2
end
if rejected > 0 then redis.call('HINCRBY', KEYS[3], 'rejected', rejected) end
redis.call('HINCRBY', KEYS[3], 'received', ARGV[6])
redis.call('HINCRBY', KEYS[3], 'accepted', nevents)
for c = 0, nacks - 1, 1000 do
  redis.call('XACK', KEYS[6], ARGV[7], unpack(ARGV, i + c, i + math.min(c + 999, nacks - 1)))
end
i = i + nacks
for c = 0, nnew - 1, 1000 do
  redis.call('SADD', KEYS[7], unpack(ARGV, i + c, i + math.min(c + 999, nnew - 1)))
end
i = i + nnew
local base = 8 + nlists
local ttl_at = i
i = i + nbuckets
local ops = cmsgpack.unpack(ARGV[i])
for j = 1, #ops, 4 do
  local k = KEYS[base + ops[j]]
  local op = ops[j + 1]
  local f = ops[j + 2]
  local v = ops[j + 3]
  if op == 'i' then
    redis.call('HINCRBY', k, f, v)
  elseif op == 'f' then
    -- A sum that overflows a double is flagged (field <sum field>o) instead of aborting the
    -- batch halfway (a script does not roll back); readers report it as an overflow.
    local r = redis.pcall('HINCRBYFLOAT', k, f, v)
    if type(r) == 'table' and r.err then
      redis.call('HSET', k, f .. 'o', '1')
    end
  else
    local cur = redis.call('HGET', k, f)
    if not cur or (op == 'n' and tonumber(v) < tonumber(cur)) or (op == 'x' and tonumber(v) > tonumber(cur)) then
      redis.call('HSET', k, f, v)
    end
  end
end
for b = 1, nbuckets do
  redis.call('EXPIRE', KEYS[base + b], ARGV[ttl_at + b - 1])
end
if ARGV[19] == '1' and nevents > 0 then
  -- pcall: an id not above the last one (two workers racing through a failover) skips the
  -- entry instead of failing the batch after its other writes.
  redis.pcall('XADD', KEYS[8], string.format('%d', first) .. '-0', 'e', ARGV[18])
end
if ARGV[17] ~= '' and nevents > 0 then
  redis.call('PUBLISH', ARGV[17], string.format('%d', first) .. '\\n' .. ARGV[18])
end
return first
"""

# Compare-and-extend / compare-and-delete, so a worker can never renew or drop another's lease.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
  return 1
end
return 0
"""

# Take the lease over from a holder known to be dead (compare-and-set on its token).
_TAKEOVER_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

READ_CHUNK = 16  # bucket hashes per round trip of a window read
HISTORY_PAGE = 100  # history entries (batches) read per round trip
CLOSED_MINUTES_TTL_S = 5.0  # seconds a merge of a window's closed minutes is reused
AGGREGATE_CACHE_MAX = 256  # (window, metric, second) results kept; cleared wholesale when full
TIMESERIES_CACHE_MAX = 50_000  # closed time-series points kept; cleared wholesale when full
TIMESERIES_CLOSED_TTL_S = 10.0  # seconds a closed step's point is reused


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry_seq(entry_id) -> int:
    return int(_text(entry_id).partition("-")[0])


def _history_events(entry_id, fields) -> list[dict]:
    blob = fields.get(b"e") or fields.get("e") or b""
    if not blob:
        return []
    return [orjson.loads(e) for e in numbered(_entry_seq(entry_id), blob.split(b"\n"))]


def _merge_cooperatively(hashes: list) -> WindowStats:
    """WindowStats of many bucket hashes, letting the loop run between them. (Not in a native
    thread: with several wide queries at once, threads holding the GIL made every socket write
    of the loop wait for it, and deliveries crawled; one hash at a time keeps them flowing.)"""
    stats = WindowStats()
    for i, h in enumerate(hashes):
        if i:
            pause()
        stats.merge_hash(h)
    return stats


def _combined_with(closed: WindowStats, live_hash) -> WindowStats:
    return _combined(closed, WindowStats.from_hashes([live_hash]))


def _combined(a: WindowStats, b: WindowStats) -> WindowStats:
    """A new WindowStats holding a + b, leaving both untouched (a is a cached merge)."""
    out = WindowStats()
    for source in (a, b):
        for name, (count, errors, fields) in source.metrics.items():
            m = out.metrics.setdefault(name, [0, 0, {}])
            m[0] += count
            m[1] += errors
            for fname, f in fields.items():
                merge_field(m[2].setdefault(fname, [0, 0.0, None, None, {}]), f)
    return out


class PoolExhausted(redis.ConnectionError):
    """Every pooled connection stayed busy for the pool's wait timeout: the node is overloaded
    (answered 503 with Retry-After), not Redis down."""


class _BlockingPool(redis.BlockingConnectionPool):
    # redis-py raises a bare ConnectionError("No connection available.") for a wait that timed
    # out, indistinguishable by type from Redis being down; callers answer the two differently.
    def get_connection(self, *args, **kwargs):
        try:
            return super().get_connection(*args, **kwargs)
        except redis.ConnectionError as exc:
            if str(exc) == "No connection available.":
                raise PoolExhausted(
                    f"all {self.max_connections} Redis connections busy for {self.timeout}s"
                ) from exc
            raise


def connect(
    url: str, *, max_connections: int | None = None, pool_timeout_s: float | None = None, **kwargs
) -> redis.Redis:
    """A client with timeouts, so a dead Redis shows up as an error instead of a hang.

    The pool blocks (up to `pool_timeout_s`, then PoolExhausted) instead of failing at once when
    every connection is busy: redis-py's default pool raises MaxConnectionsError immediately at
    100, which turned a burst of slow reads into 500s. A command that fails with a connection
    error is retried once on a fresh connection after a short backoff: after a Redis restart every
    pooled connection is dead, and the first use of each would otherwise fail. (The retry can
    repeat a command whose reply was lost mid-flight; fenced writes are not retried: redis-py
    refuses to retry a pipeline that WATCHes.) Timeouts are not retried: they already waited."""
    options = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": 5.0,
        "health_check_interval": 15,
        "retry_on_timeout": False,
        "retry": Retry(
            ExponentialBackoff(cap=0.5, base=0.05), retries=1, supported_errors=(redis.ConnectionError,)
        ),
    }
    options.update(kwargs)
    pool = _BlockingPool.from_url(
        url,
        max_connections=max_connections or Config.REDIS_MAX_CONNECTIONS,
        timeout=pool_timeout_s if pool_timeout_s is not None else Config.REDIS_POOL_TIMEOUT_S,
        **options,
    )
    return redis.Redis(connection_pool=pool)


def _encode_deltas(deltas: Mapping[tuple[int, int], BucketDelta], key_of, retention_s: int, base: int):
    """Bucket key names, their TTLs and the ops of the write script for `deltas`; bucket indexes
    start after `base` (the buckets already encoded); `key_of(resolution, start)` names each hash."""
    key_names: list[str] = []
    ttls: list[int] = []
    ops: list = []
    now = time.time()
    for index, ((res, start), delta) in enumerate(deltas.items(), start=base + 1):
        key_names.append(key_of(res, start))
        # A bucket lives for the retention after its interval ends.
        ttls.append(max(1, int(start + res + retention_s - now)))
        for field, value in delta.incr.items():
            ops += (index, "i", field, value)
        for field, value in delta.incr_float.items():
            ops += (index, "f", field, repr(float(value)))
        for field, value in delta.mins.items():
            ops += (index, "n", field, repr(float(value)))
        for field, value in delta.maxs.items():
            ops += (index, "x", field, repr(float(value)))
    return key_names, ttls, ops


class LeaseLost(Exception):
    """A fenced write found the worker lease held by someone else (or expired): nothing was written."""


class Store:
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
    ):
        self.redis = client
        self.keys = keys
        self.recent_max = recent_max
        self.retention_s = retention_s
        self.dead_letter_max = dead_letter_max
        self.recent_per_metric = recent_per_metric
        self.history_s = history_s
        self._write = client.register_script(_WRITE_BATCH_LUA)
        self._aggregate_cache: dict[tuple, dict] = {}
        self._timeseries_cache: dict[tuple, tuple[float, dict]] = {}
        self._closed_minutes: dict[tuple[int, int], tuple[float, WindowStats]] = {}
        self._computing: dict[tuple[int, int], threading.Event] = {}
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._takeover = client.register_script(_TAKEOVER_LUA)

    @classmethod
    def from_config(cls, config: Mapping, client: redis.Redis | None = None) -> Store:
        return cls(
            client
            or connect(
                config["REDIS_URL"],
                max_connections=config.get("REDIS_MAX_CONNECTIONS"),
                pool_timeout_s=config.get("REDIS_POOL_TIMEOUT_S"),
            ),
            Keys.from_config(config),
            recent_max=config["RECENT_MAX"],
            retention_s=config["RETENTION_S"],
            dead_letter_max=config["DEAD_LETTER_MAX"],
            recent_per_metric=config["RECENT_PER_METRIC"],
            history_s=config["HISTORY_S"],
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
        (backend/fanout.py), instead of returning it; returns [] then."""
        for e in events:
            e.pop("seq", None)  # numbered below, once stored
        bodies = [orjson.dumps(e) for e in events]
        n = len(events)
        # Which events Redis needs: the newest recent_max overall, and the newest of each metric.
        wanted: dict[int, None] = dict.fromkeys(range(max(0, n - self.recent_max), n))
        lists: dict[str, list[int]] = {}
        if self.recent_per_metric:
            for offset in range(n - 1, -1, -1):
                group = lists.setdefault(events[offset]["metric"], [])
                if len(group) < self.recent_per_metric:
                    group.append(offset)
                    wanted[offset] = None
        order = sorted(wanted)
        index_of = {offset: i for i, offset in enumerate(order, start=1)}
        args: list = []
        for offset in order:
            args += (offset, bodies[offset][1:])
        list_keys = []
        for metric, offsets in lists.items():
            list_keys.append(self.keys.recent_metric(metric))
            args.append(len(offsets))
            args += (index_of[o] for o in reversed(offsets))  # oldest first: LPUSH leaves newest on top
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
        bucket_keys, ttls, ops = _encode_deltas(deltas, self.keys.bucket, self.retention_s, 0)
        if tag_deltas:  # top-N counters: their own hashes, so aggregate reads never see them
            tag_keys, tag_ttls, tag_ops = _encode_deltas(
                tag_deltas, self.keys.tag_bucket, self.retention_s, len(bucket_keys)
            )
            bucket_keys += tag_keys
            ttls += tag_ttls
            ops += tag_ops
        header = [
            fence[1] if fence is not None else "",
            n,
            int(time.time() * 1_000_000),
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
            b"\n".join(bodies) if (fanout_channel or self.history_s) else "",
            "1" if self.history_s else "",
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
        first = int(self._write(keys=keys, args=[*header, *args, *ttls, msgpack.packb(ops)]))
        if first < 0:
            raise LeaseLost(f"the lease {fence[0]!r} is no longer {fence[1]!r}")
        for offset, event in enumerate(events):
            event["seq"] = first + offset
        return [] if fanout_channel else numbered(first, bodies)

    def acquire_lease(self, token: str, ttl_ms: int) -> bool:
        """Take the worker lease if free (or already ours); also marks a worker alive."""
        taken = self.redis.set(self.keys.worker_lease, token, nx=True, px=ttl_ms)
        return bool(taken) or self.renew_lease(token, ttl_ms)

    def renew_lease(self, token: str, ttl_ms: int) -> bool:
        """Extend the lease if we still hold it, and refresh the heartbeat, in one round trip."""
        return bool(
            self._renew(
                keys=[self.keys.worker_lease, self.keys.worker_heartbeat],
                args=[token, ttl_ms, f"{time.time():.3f}"],
            )
        )

    def lease_holder(self) -> str | None:
        holder = self.redis.get(self.keys.worker_lease)
        return holder.decode() if holder is not None else None

    def take_over_lease(self, dead_token: str, token: str, ttl_ms: int) -> bool:
        """Replace `dead_token` (a holder known to be dead) by ours, if it still holds the lease."""
        return bool(self._takeover(keys=[self.keys.worker_lease], args=[dead_token, token, ttl_ms]))

    def report_worker(self, token: str, status: dict) -> None:
        """Publish a worker's status for /api/health (any node); stale entries are pruned by readers."""
        self.redis.hset(self.keys.workers, token, orjson.dumps({**status, "reported": time.time()}))

    def workers(self, stale_after_s: float) -> list[dict]:
        """The workers that reported within `stale_after_s`; forgets the others."""
        raw = self.redis.hgetall(self.keys.workers)
        now = time.time()
        out, stale = [], []
        for token, body in raw.items():
            try:
                status = orjson.loads(body)
            except orjson.JSONDecodeError:
                status = {}
            if now - float(status.get("reported", 0)) > stale_after_s:
                stale.append(token)
            else:
                out.append(status)
        if stale:
            self.redis.hdel(self.keys.workers, *stale)
        return sorted(out, key=lambda w: (w.get("role") != "active", w.get("token", "")))

    def release_lease(self, token: str) -> None:
        self._release(keys=[self.keys.worker_lease], args=[token])

    def worker_alive(self) -> bool:
        return bool(self.redis.exists(self.keys.worker_heartbeat))

    # --- read side -------------------------------------------------------------------------
    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def recent(self, limit: int, metric: str | None = None, after: int | None = None) -> list[dict]:
        """Newest first. For one metric, its own list (which holds quiet metrics' events long
        after the global list moved on) together with what the global list has of it."""
        if metric is not None and self.recent_per_metric:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lrange(self.keys.recent_metric(metric), 0, self.recent_per_metric - 1)
            pipe.lrange(self.keys.recent, 0, self.recent_max - 1)
            own, everything = pipe.execute()
            raw = own + everything
        else:
            raw = self.redis.lrange(
                self.keys.recent, 0, self.recent_max - 1 if (metric or after) else limit - 1
            )
        out: dict[object, dict] = {}
        for item in raw:
            try:
                event = orjson.loads(item)
            except orjson.JSONDecodeError:
                continue  # written by someone else; the list is ours to read, not to trust
            if not isinstance(event, dict):
                continue
            if metric is not None and event.get("metric") != metric:
                continue
            seq = event.get("seq")
            if after is not None and not (isinstance(seq, int) and seq > after):
                continue
            out.setdefault(seq if isinstance(seq, int) else id(event), event)
        events = list(out.values())
        if metric is not None and self.recent_per_metric:
            events.sort(key=lambda e: e["seq"] if isinstance(e.get("seq"), int) else -1, reverse=True)
        return events[:limit]

    def trim_history(self, min_seq: int) -> None:
        """Drop history entries (batches) that start below `min_seq`; the worker calls it once a
        second with the first seq it wrote HISTORY_S ago."""
        self.redis.xtrim(self.keys.history, minid=f"{min_seq}-0", approximate=True)

    def history_after(self, after: int, limit: int, metric: str | None = None, *, oldest_first: bool) -> dict:
        """Events with seq > `after` (of `metric`) from the history stream: the oldest `limit`
        of them in ascending order (`next_after` pages on), or the newest `limit`, newest first.
        `complete`: the answer holds every such event, none is older than the history."""
        key = self.keys.history
        pipe = self.redis.pipeline(transaction=False)
        pipe.xrevrange(key, f"{after}-0", "-", count=1)  # the batch holding after + 1, if any
        pipe.xrange(key, "-", "+", count=1)
        pipe.get(self.keys.seq)
        holding, oldest, last_seq = pipe.execute()
        oldest_seq = _entry_seq(oldest[0][0]) if oldest else None
        # Nothing stored since `after`, or the history reaches back to it: no event is missing.
        covered = (last_seq is None or int(last_seq) <= after) or (
            oldest_seq is not None and oldest_seq <= after + 1
        )
        wanted = (
            (lambda e: e["seq"] > after)
            if metric is None
            else (lambda e: e["seq"] > after and e.get("metric") == metric)
        )
        out: list[dict] = []
        if oldest_first:
            start = holding[0][0] if holding else "-"
            read, step = self.redis.xrange, (lambda entry_id: "(" + _text(entry_id))
            args = lambda st: (key, st, "+")  # noqa: E731
        else:
            start = "+"
            read, step = self.redis.xrevrange, (lambda entry_id: "(" + _text(entry_id))
            args = lambda st: (key, st, _text(holding[0][0]) if holding else "-")  # noqa: E731
        exhausted = False
        while len(out) <= limit:
            page = read(*args(start), count=HISTORY_PAGE)
            for entry_id, fields in page:
                events = [e for e in _history_events(entry_id, fields) if wanted(e)]
                out += events if oldest_first else reversed(events)
            if len(page) < HISTORY_PAGE:
                exhausted = True
                break
            start = step(page[-1][0])
        more = len(out) > limit or not exhausted
        out = out[:limit]
        return {
            "events": out,
            "complete": covered and not more,
            "oldest_seq": oldest_seq,
            "next_after": out[-1]["seq"] if out and more and oldest_first else None,
        }

    def rejected(self, limit: int) -> list[dict]:
        return [orjson.loads(item) for item in self.redis.lrange(self.keys.rejected, 0, limit - 1)]

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self.keys.stats).items()}

    def _hgetall_many(self, bucket_keys: Iterable[str]) -> list[dict]:
        """HGETALL of many hashes, READ_CHUNK per round trip, letting the loop run between the
        chunks: parsing a wide window's replies is C work that holds the loop while it runs, and
        a whole hour of wide minutes in one pipeline held every client's events for seconds."""
        keys = list(bucket_keys)
        out: list[dict] = []
        for i in range(0, len(keys), READ_CHUNK):
            if i:
                pause()
            pipe = self.redis.pipeline(transaction=False)
            for key in keys[i : i + READ_CHUNK]:
                pipe.hgetall(key)
            out += pipe.execute()
        return out

    def aggregate(self, window_s: int, metric: str | None = None, now: float | None = None) -> dict:
        """The window ending with the current second.

        The result is shared by everyone asking for the same window in the same second while no
        batch has been written since (the worker bumps the `received` counter with every batch):
        the tick and any number of REST callers then cost one merge, and nobody reads stale data."""
        to_s = int(now if now is not None else time.time()) + 1  # include the current second
        version = self.redis.hget(self.keys.stats, "received")
        key = (window_s, metric, to_s, version)
        cached = self._aggregate_cache.get(key)
        if cached is not None:
            return cached
        stats = self._window_stats(to_s, window_s)
        body = stats.to_aggregate(window_s=window_s, from_s=to_s - window_s, to_s=to_s, metric=metric)
        if len(self._aggregate_cache) >= AGGREGATE_CACHE_MAX:
            self._aggregate_cache.clear()
        self._aggregate_cache[key] = body
        return body

    def _window_stats(self, to_s: int, window_s: int) -> WindowStats:
        """Merge the buckets of [to_s - window_s, to_s), reading as little live data as possible.

        Everything before the current minute is closed (it changes only through late events):
        its edge seconds and whole minutes are merged once per second of the clock and kept for
        CLOSED_MINUTES_TTL_S, so late events show up within that. The current minute is read as
        its one minute bucket, which the worker updates with every batch (it holds the current
        minute's events so far, including any stamped later in it). So a query while events
        arrive costs one small hash read and a merge, whatever the window."""
        from_s = to_s - window_s
        current = (to_s - 1) // 60 * 60  # the minute holding the window's last second
        if from_s >= current:  # a window inside the current minute: its seconds
            return _merge_cooperatively(
                self._hgetall_many(self.keys.bucket(1, sec) for sec in range(from_s, to_s))
            )
        key = (from_s, current)
        clock = time.monotonic()
        hit = self._closed_minutes.get(key)
        if hit is None or clock - hit[0] >= CLOSED_MINUTES_TTL_S:
            busy = self._computing.get(key)
            if busy is not None:
                # Another request is merging this very window (single flight): wait for it, or
                # keep the answer it is refreshing, rather than merge a wide hour per request.
                if hit is None:
                    busy.wait()
                    hit = self._closed_minutes.get(key)
            else:
                done = self._computing[key] = threading.Event()
                try:
                    plan = plan_window(current, current - from_s)
                    hashes = self._hgetall_many(self.keys.bucket(r, st) for r, st in plan)
                    merged = _merge_cooperatively(hashes)
                    if len(self._closed_minutes) >= 16:
                        self._closed_minutes.clear()
                    hit = self._closed_minutes[key] = (clock, merged)
                finally:
                    del self._computing[key]
                    done.set()
            if hit is None:  # the read we waited for failed; its caller reports why
                raise redis.ConnectionError("a concurrent read of this window failed; retry")
        live = self.redis.hgetall(self.keys.bucket(60, current))
        return _combined_with(hit[1], live)

    def timeseries(
        self, window_s: int, step_s: int, metric: str | None, field: str | None, now: float | None = None
    ) -> dict:
        """Points per step. A step that ended more than a second ago is closed: its point is kept
        for TIMESERIES_CLOSED_TTL_S and reused, so a dashboard's reload or a second chart costs
        the open step only. (An event stamped into a closed step shows up within that TTL.)"""
        now_s = int(now if now is not None else time.time())
        to_s = now_s + 1
        to_s -= to_s % step_s  # align steps so consecutive calls share boundaries
        to_s += step_s
        from_s = to_s - window_s
        res, _ = timeseries_plan(to_s, window_s, step_s)
        clock = time.monotonic()
        cache = self._timeseries_cache
        points: dict[int, dict] = {}
        missing: list[int] = []
        for step_start in range(from_s, to_s, step_s):
            hit = cache.get((metric, field, res, step_s, step_start))
            if hit is not None and clock - hit[0] < TIMESERIES_CLOSED_TTL_S:
                points[step_start] = hit[1]
            else:
                missing.append(step_start)
        if missing:
            starts = [b for step_start in missing for b in range(step_start, step_start + step_s, res)]
            hashes = dict(
                zip(starts, self._hgetall_many(self.keys.bucket(res, b) for b in starts), strict=True)
            )
            fresh = timeseries(
                hashes,
                from_s=from_s,
                to_s=to_s,
                step_s=step_s,
                res=res,
                metric=metric,
                field=field,
            )["points"]
            if len(cache) >= TIMESERIES_CACHE_MAX:
                cache.clear()
            for step_start in missing:
                point = fresh[(step_start - from_s) // step_s]
                points[step_start] = point
                if step_start + step_s < now_s:  # closed
                    cache[(metric, field, res, step_s, step_start)] = (clock, point)
        return {
            "window_seconds": window_s,
            "step_seconds": step_s,
            "from": iso_ms(from_s),
            "to": iso_ms(to_s),
            "metric": metric,
            "field": field,
            "points": [points[step_start] for step_start in range(from_s, to_s, step_s)],
        }


__all__ = ["RESOLUTIONS", "LeaseLost", "PoolExhausted", "Store", "connect"]
