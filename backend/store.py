"""Everything Pulseboard reads from and writes to Redis.

The write side is built for throughput: one batch of events costs two round trips whatever its
size (INCRBY for the sequence numbers, then one pipeline with LPUSH+LTRIM of the recent list,
one atomic Lua apply of all aggregate deltas, and the dead letters). Aggregate updates are
increments and compare-and-set min/max inside Redis, so several workers may write the same
buckets concurrently and the result stays exact.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

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
from backend.core.timefmt import iso_ms
from backend.keys import Keys

# KEYS: the bucket hashes. ARGV[1..#KEYS]: each key's TTL in seconds. Then groups of four:
# key index, op (i = HINCRBY, f = HINCRBYFLOAT, n = keep min, x = keep max), field, value.
# Min/max compare as doubles but store the caller's exact text, so they stay exact.
_APPLY_LUA = """
local nkeys = #KEYS
for i = nkeys + 1, #ARGV, 4 do
  local k = KEYS[tonumber(ARGV[i])]
  local op = ARGV[i + 1]
  local f = ARGV[i + 2]
  local v = ARGV[i + 3]
  if op == 'i' then
    redis.call('HINCRBY', k, f, v)
  elseif op == 'f' then
    -- pcall: a sum that would overflow to infinity leaves that one sum as it was instead of
    -- aborting the script halfway through the batch (scripts do not roll back).
    redis.pcall('HINCRBYFLOAT', k, f, v)
  else
    local cur = redis.call('HGET', k, f)
    if not cur or (op == 'n' and tonumber(v) < tonumber(cur)) or (op == 'x' and tonumber(v) > tonumber(cur)) then
      redis.call('HSET', k, f, v)
    end
  end
end
for i = 1, nkeys do
  redis.call('EXPIRE', KEYS[i], ARGV[i])
end
return nkeys
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

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

CLOSED_MINUTES_TTL_S = 5.0  # seconds a merge of a window's closed minutes is reused
AGGREGATE_CACHE_MAX = 256  # (window, metric, second) results kept; cleared wholesale when full
TIMESERIES_CACHE_MAX = 50_000  # closed time-series points kept; cleared wholesale when full
TIMESERIES_CLOSED_TTL_S = 10.0  # seconds a closed step's point is reused


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


def _encode_delta_args(deltas: Mapping[tuple[int, int], BucketDelta], key_of, retention_s: int):
    """KEYS and ARGV of _APPLY_LUA for `deltas`; `key_of(resolution, start)` names each hash."""
    key_names: list[str] = []
    ttls: list[int] = []
    ops: list = []
    for index, ((res, start), delta) in enumerate(deltas.items(), start=1):
        key_names.append(key_of(res, start))
        # A bucket lives for the retention after its interval ends.
        ttls.append(max(1, int(start + res + retention_s - time.time())))
        for field, value in delta.incr.items():
            ops += (index, "i", field, value)
        for field, value in delta.incr_float.items():
            ops += (index, "f", field, repr(float(value)))
        for field, value in delta.mins.items():
            ops += (index, "n", field, repr(float(value)))
        for field, value in delta.maxs.items():
            ops += (index, "x", field, repr(float(value)))
    return key_names, ttls + ops


class LeaseLost(Exception):
    """A fenced write found the worker lease held by someone else (or expired): nothing was written."""


class Store:
    def __init__(
        self, client: redis.Redis, keys: Keys, *, recent_max: int, retention_s: int, dead_letter_max: int
    ):
        self.redis = client
        self.keys = keys
        self.recent_max = recent_max
        self.retention_s = retention_s
        self.dead_letter_max = dead_letter_max
        self._apply = client.register_script(_APPLY_LUA)
        self._aggregate_cache: dict[tuple, dict] = {}
        self._timeseries_cache: dict[tuple, tuple[float, dict]] = {}
        self._closed_minutes: dict[tuple[int, int], tuple[float, WindowStats]] = {}
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)

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
    ) -> None:
        """One round trip for a whole batch, applied all or nothing (MULTI/EXEC), so a worker that
        dies mid-write never leaves half a batch in the aggregates. `events` is oldest first.

        Only the newest `recent_max` events (and dead letters) of a batch are serialized and pushed:
        at high rates the rest would be trimmed off by the same round trip anyway.

        `ack` (stream, group, entry ids): XACK those stream entries in the same transaction, so
        they are acknowledged exactly when their events are stored. `fence` (lease key, token):
        WATCH the lease and write only if it is still ours, raising LeaseLost otherwise. Without
        it a worker that stalled past its lease could store entries that its successor, having
        re-read them as pending, stores again. Costs two more round trips (WATCH, GET)."""
        pipe = self.redis.pipeline(transaction=True)
        try:
            if fence is not None:
                lease_key, token = fence
                pipe.watch(lease_key)
                if pipe.get(lease_key) != token.encode():
                    raise LeaseLost(f"the lease {lease_key!r} is no longer {token!r}")
                pipe.multi()
            self._queue_batch(pipe, events, deltas, rejected, received, tag_deltas)
            if ack is not None:
                stream, group, ids = ack
                pipe.xack(stream, group, *ids)
            pipe.execute()
        except redis.WatchError as exc:
            raise LeaseLost(f"the lease {fence[0]!r} changed during the write") from exc
        finally:
            pipe.reset()

    def _queue_batch(self, pipe, events, deltas, rejected, received, tag_deltas) -> None:
        if events:
            pipe.lpush(self.keys.recent, *(orjson.dumps(e) for e in events[-self.recent_max :]))
            pipe.ltrim(self.keys.recent, 0, self.recent_max - 1)
        if deltas:
            key_names, args = _encode_delta_args(deltas, self.keys.bucket, self.retention_s)
            self._apply(keys=key_names, args=args, client=pipe)
        if tag_deltas:  # top-N counters: their own hashes, so aggregate reads never see them
            key_names, args = _encode_delta_args(tag_deltas, self.keys.tag_bucket, self.retention_s)
            self._apply(keys=key_names, args=args, client=pipe)
        if rejected:
            pipe.lpush(self.keys.rejected, *(orjson.dumps(r) for r in rejected[-self.dead_letter_max :]))
            pipe.ltrim(self.keys.rejected, 0, self.dead_letter_max - 1)
            reasons: dict[str, int] = {}
            for item in rejected:
                reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
            for reason, count in reasons.items():
                pipe.hincrby(self.keys.stats, f"rejected:{reason}", count)
            pipe.hincrby(self.keys.stats, "rejected", len(rejected))
        pipe.hincrby(self.keys.stats, "received", received)
        pipe.hincrby(self.keys.stats, "accepted", len(events))

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
        raw = self.redis.lrange(self.keys.recent, 0, self.recent_max - 1 if (metric or after) else limit - 1)
        out: list[dict] = []
        for item in raw:
            try:
                event = orjson.loads(item)
            except orjson.JSONDecodeError:
                continue  # written by someone else; the list is ours to read, not to trust
            if not isinstance(event, dict):
                continue
            if metric is not None and event.get("metric") != metric:
                continue
            if after is not None and not (isinstance(event.get("seq"), int) and event["seq"] > after):
                continue
            out.append(event)
            if len(out) >= limit:
                break
        return out

    def rejected(self, limit: int) -> list[dict]:
        return [orjson.loads(item) for item in self.redis.lrange(self.keys.rejected, 0, limit - 1)]

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self.keys.stats).items()}

    def _hgetall_many(self, bucket_keys: Iterable[str]) -> list[dict]:
        pipe = self.redis.pipeline(transaction=False)
        for key in bucket_keys:
            pipe.hgetall(key)
        return pipe.execute()

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
        stats = self._window_stats(plan_window(to_s, window_s), now_s=to_s - 1)
        body = stats.to_aggregate(window_s=window_s, from_s=to_s - window_s, to_s=to_s, metric=metric)
        if len(self._aggregate_cache) >= AGGREGATE_CACHE_MAX:
            self._aggregate_cache.clear()
        self._aggregate_cache[key] = body
        return body

    def _window_stats(self, plan: list[tuple[int, int]], now_s: int) -> WindowStats:
        """Merge a window's buckets. The whole minutes that ended before the current second are
        merged once and kept for CLOSED_MINUTES_TTL_S (they change only through late events, which
        therefore show up within that TTL); each call then reads and merges only the ragged
        second-by-second edges. An hour's window costs the edges' ~120 small hashes instead of
        also re-merging 60 full minutes (~100k entries)."""
        closed = [b for b in plan if b[0] == 60 and b[1] + 60 <= now_s]
        if len(closed) < 2:
            return WindowStats.from_hashes(self._hgetall_many(self.keys.bucket(r, s) for r, s in plan))
        key = (closed[0][1], closed[-1][1])
        clock = time.monotonic()
        hit = self._closed_minutes.get(key)
        if hit is None or clock - hit[0] >= CLOSED_MINUTES_TTL_S:
            merged = WindowStats.from_hashes(self._hgetall_many(self.keys.bucket(r, s) for r, s in closed))
            if len(self._closed_minutes) >= 8:
                self._closed_minutes.clear()
            hit = self._closed_minutes[key] = (clock, merged)
        closed_set = set(closed)
        rest = [b for b in plan if b not in closed_set]
        fresh = WindowStats.from_hashes(self._hgetall_many(self.keys.bucket(r, s) for r, s in rest))
        return _combined(hit[1], fresh)

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
                hashes, from_s=from_s, to_s=to_s, step_s=step_s, res=res, metric=metric, field=field
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
