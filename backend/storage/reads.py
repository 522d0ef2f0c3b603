"""The read side: recent events, the history stream, dead letters, and windowed aggregates and
time series merged from the bucket hashes with as little live data read as possible."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import orjson
import redis
from cachetools import LRUCache

from backend.core.events import numbered
from backend.core.layout import OPEN_GRACE_S
from backend.core.sketch import RankedBins
from backend.core.state import MetricState, merge_states
from backend.core.window import (
    WindowStats,
    aggregate_json,
    merge_in_parts,
    metric_json,
    metric_json_plus,
    ranked_fields,
    series_json,
    timeseries,
    timeseries_plan,
)
from backend.storage.keys import Keys
from backend.web.offload import pause

log = logging.getLogger(__name__)

READ_CHUNK = 16  # most bucket hashes per round trip of a window read
READ_FIELDS = 20_000  # hash fields per round trip a window read aims at (wide hashes: fewer keys)
MERGE_PART = 4_096  # hash fields merged between two turns of the loop
# Aggregate rows (up to 32 fields with percentiles each) rendered between two turns of the loop.
ROWS_PART = 16
HISTORY_PAGE = 100  # history entries (batches) read per round trip
CLOSED_MINUTES_TTL_S = 5.0  # seconds a merge of a window's closed minutes is reused
CLOSED_MINUTES_MAX = 32  # closed merges kept (a window has two: its whole minutes, its first seconds)
CLOSED_SECONDS_MAX = 240  # parsed second buckets kept (a window's first minute needs up to 59)
# Seconds the late counters must stay still before the current minute's settled seconds are
# trusted again: a backlog or an import writes late batches back to back.
LATE_CALM_S = 1.0
AGGREGATE_CACHE_MAX = 256  # (window, metric, second) results kept (least recently used go)
TIMESERIES_CACHE_MAX = 50_000  # closed time-series points kept; cleared wholesale when full
TIMESERIES_CLOSED_TTL_S = 10.0  # seconds a closed step's point is reused


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry_seq(entry_id) -> int:
    return int(_text(entry_id).partition("-")[0])


def _history_events(entry_id, fields, stride: int = 1) -> list[dict]:
    blob = fields.get(b"e") or fields.get("e") or b""
    if not blob:
        return []
    return [orjson.loads(e) for e in numbered(_entry_seq(entry_id), blob.split(b"\n"), stride)]


def _listed_events(raw: list, metric: str | None, after: int | None) -> list[dict]:
    """The events of recent-list items, in list order: those of `metric`, with a seq above
    `after`, each seq once (a metric's own list repeats what the global list has)."""
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
    return list(out.values())


def _time_order(event: dict) -> tuple:
    """Events of several partitions in time order: their `ts`, then seq."""
    seq = event.get("seq")
    return (str(event.get("ts", "")), seq if isinstance(seq, int) else -1)


def _merge_cooperatively(hashes: list) -> WindowStats:
    """WindowStats of many bucket hashes, letting the loop run between hashes and between parts
    of MERGE_PART fields. (Not in a native thread: with several wide queries at once, threads
    holding the GIL made every socket write of the loop wait for it, and deliveries crawled. A
    wide minute hash, tens of thousands of fields, merged in one go held every client's events
    for 100-300 ms.)"""
    stats = WindowStats()
    for i, h in enumerate(hashes):
        if i:
            pause()
        merge_in_parts(stats, h, pause, MERGE_PART)
    return stats


class _OpenSeconds:
    """The open seconds' hashes (the current second, and the one before for OPEN_GRACE_S)
    parsed into state, with the names resolved once per second: they repeat from one read to
    the next (the hashes only grow), and resolving them was most of a parse. A wide second
    (more than MERGE_PART fields) is merged afresh, in parts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one read at a time resets and refills the shared state
        self._keys: tuple = ()
        self._stats = WindowStats()

    def parse(self, keys: tuple, hashes: list[dict]) -> WindowStats:
        if sum(map(len, hashes)) > MERGE_PART:
            return _merge_cooperatively(hashes)
        with self._lock:
            if keys != self._keys:
                self._keys, self._stats = keys, WindowStats()
            else:
                self._stats.reset()
            for h in hashes:
                self._stats.merge_hash(h)
            return self._stats.copy()


class _Prefix:
    """The merge of the current minute's settled seconds, [minute, upto), made while the
    writers' `late` counters read `late`."""

    __slots__ = ("late", "minute", "stats", "upto")

    def __init__(self, minute: int, upto: int, stats: WindowStats, late: tuple) -> None:
        self.minute, self.upto, self.stats, self.late = minute, upto, stats, late


_UNSETTLED = object()  # _minute_prefix: late writes lately; read the current minute whole


class _Closed:
    """The merge of a window's closed minutes, and the aggregate rows rendered from it so far
    (each metric's once, when a request first needs it without live data to add)."""

    __slots__ = ("at", "exact", "rows", "stats")

    def __init__(self, at: float, stats: WindowStats, exact: tuple | None = None) -> None:
        self.at = at
        self.stats = stats
        # The writers' late counters when it was read, if every second of it had settled by
        # then: it stays exact while they do not move (None: it is only good for the TTL).
        self.exact = exact
        self.rows: dict[tuple[str, int], dict] = {}

    def fresh(self, clock: float, late: tuple) -> bool:
        return (self.exact is not None and self.exact == late) or clock - self.at < CLOSED_MINUTES_TTL_S

    def row(self, name: str, window_s: int) -> dict:
        key = (name, window_s)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = metric_json(self.stats.metrics[name], window_s)
        return row


class _Base:
    """The part of a window that changes at most once a second: its closed minutes (a _Closed,
    shared from second to second), its ragged first minute (`edge`) and the current minute's
    settled seconds (`prefix`). Each metric's merge of them is made once, when a request first
    needs it, with its fields' bins sorted (RankedBins) and each untouched metric's row
    rendered once; a request then adds only the open seconds to the metrics they touch
    (metric_json_plus), without copying or re-sorting the base."""

    __slots__ = ("closed", "edge", "prefix", "ranked", "rows", "states")

    def __init__(self, closed: _Closed, edge: WindowStats | None, prefix: WindowStats | None) -> None:
        self.closed = closed
        self.edge = edge
        self.prefix = prefix
        self.states: dict[str, MetricState | None] = {}
        self.ranked: dict[str, dict[str, RankedBins]] = {}
        self.rows: dict[tuple[str, int], dict] = {}

    def names(self) -> set[str]:
        names = set(self.closed.stats.metrics)
        for part in (self.edge, self.prefix):
            if part is not None:
                names.update(part.metrics)
        return names

    def state(self, name: str) -> MetricState | None:
        """The metric's base state, shared: never add to it."""
        if name in self.states:
            return self.states[name]
        state = self.closed.stats.metrics.get(name)
        parts = self._parts(name)
        if parts:
            # C-level dict copies of the closed minutes, then one Python merge per part
            state = MetricState() if state is None else state.copy()
            for part in parts:
                state.merge(part)
        self.states[name] = state
        return state

    def ranked_fields(self, name: str) -> dict[str, RankedBins]:
        out = self.ranked.get(name)
        if out is None:
            state = self.state(name)
            out = self.ranked[name] = {} if state is None else ranked_fields(state)
        return out

    def row(self, name: str, window_s: int) -> dict:
        if not self._parts(name):
            return self.closed.row(name, window_s)  # rendered once per closed merge, not per second
        key = (name, window_s)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = metric_json(self.state(name), window_s)
        return row

    def _parts(self, name: str) -> list[MetricState]:
        return [
            m
            for m in (p.metrics.get(name) for p in (self.edge, self.prefix) if p is not None)
            if m is not None
        ]


def _aggregate_rows(base: _Base, live: WindowStats, window_s: int, metric: str | None) -> dict:
    """Rows of base + live: a metric the live seconds do not touch reuses its rendered base
    row; a touched one is rendered from its base state and sorted bins plus the live state.
    Over wide data (thousands of metrics) the loop runs between parts of ROWS_PART rows."""
    if metric is not None:
        names = [metric] if metric in live.metrics or base.state(metric) is not None else []
    else:
        names = sorted(base.names().union(live.metrics))
    rows = {}
    for i, name in enumerate(names):
        if i and not i % ROWS_PART:
            pause()
        fresh = live.metrics.get(name)
        if fresh is None:
            rows[name] = base.row(name, window_s)
            continue
        own = base.state(name)
        if own is None:
            rows[name] = metric_json(fresh, window_s)
        else:
            rows[name] = metric_json_plus(own, base.ranked_fields(name), fresh, window_s)
    return rows


class Reads:
    """Mixed into Store: every read, on the store's client and keys, with the caches they share."""

    redis: redis.Redis
    keys: Keys
    recent_max: int
    recent_per_metric: int
    parts: list[Keys]
    partitions: int

    def _init_reads(self) -> None:
        # cachetools caches are not thread-safe (a put that evicts while another thread reads
        # can raise), and the threading async mode serves requests on native threads: every
        # access to one holds _cache_lock. (Under eventlet/gevent it is a green lock, never
        # contended: no access yields.)
        self._cache_lock = threading.Lock()
        self._aggregate_cache: LRUCache[tuple, dict] = LRUCache(AGGREGATE_CACHE_MAX)
        # Closed points: step key -> (stored at, point). A plain dict, cleared when full, not a
        # cachetools.TTLCache: it is read once per step of every call (up to MAX_POINTS), and a
        # TTLCache hit costs ~1.2 us against ~0.07 us (scripts/cache_bench.py), which made a
        # fully cached 3,600-point call 15.7 ms instead of 10.0 ms (360 points: 1.8 vs 1.2 ms).
        self._timeseries_cache: dict[tuple, tuple[float, dict]] = {}
        # (merged at, merge): not a TTLCache, because an expired merge is still served while
        # another request refreshes it (see _window_parts).
        self._closed_minutes: LRUCache[tuple[int, int, int], _Closed] = LRUCache(CLOSED_MINUTES_MAX)
        self._computing: dict[tuple, threading.Event] = {}  # single flights: key -> done
        self._open_seconds = _OpenSeconds()
        self._prefix: _Prefix | None = None  # the current minute's settled seconds, merged
        # The writers' late counters as last seen (None: not yet), and since when (wall clock).
        self._late: tuple[tuple | None, float] = (None, -math.inf)
        # Parsed settled seconds (a window's ragged first minute, the current minute's running
        # merge): second -> (stats, the late counters when read; None if not settled then).
        self._closed_seconds: LRUCache[int, tuple[WindowStats, tuple | None]] = LRUCache(CLOSED_SECONDS_MAX)
        # A window's base by its first second (_Base: its closed merges, per-metric states, rows).
        self._bases: LRUCache[int, _Base] = LRUCache(CLOSED_MINUTES_MAX)

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def recent(self, limit: int, metric: str | None = None, after: int | None = None) -> list[dict]:
        """Newest first. For one metric, its own list (which holds quiet metrics' events long
        after the global list moved on) together with what the global list has of it."""
        if len(self.parts) > 1:
            return self._recent_of_partitions(limit, metric, after)
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
        events = _listed_events(raw, metric, after)
        if metric is not None and self.recent_per_metric:
            events.sort(key=lambda e: e["seq"] if isinstance(e.get("seq"), int) else -1, reverse=True)
        return events[:limit]

    def _recent_of_partitions(self, limit: int, metric: str | None, after: int | None) -> list[dict]:
        """Every partition's recent lists, newest first by event time (seqs of different
        partitions do not say which came first). `after` applies per partition (see history)."""
        pipe = self.redis.pipeline(transaction=False)
        for keys in self.parts:
            pipe.lrange(keys.recent, 0, self.recent_max - 1)
            if metric is not None and self.recent_per_metric:
                pipe.lrange(keys.recent_metric(metric), 0, self.recent_per_metric - 1)
        raw = [item for items in pipe.execute() for item in items]
        return sorted(_listed_events(raw, metric, after), key=_time_order, reverse=True)[:limit]

    def history_after_partitions(
        self, afters: dict[int, int], limit: int, metric: str | None = None, *, oldest_first: bool
    ) -> dict:
        """history_after over every partition: for each, the events after its seq in `afters`
        (its whole history when it has none there), merged in time order. `next_after` is then
        one seq per partition (a dict) to page on, `complete` whether nothing was left out."""
        pages = {
            k: self.history_after(afters.get(k, 0), limit, metric, oldest_first=oldest_first, partition=k)
            for k in range(len(self.parts))
        }
        merged = sorted(
            (e for page in pages.values() for e in page["events"]), key=_time_order, reverse=not oldest_first
        )
        kept = merged[:limit]
        cut = len(merged) > limit
        complete = not cut and all(p["complete"] for p in pages.values())
        next_after = None
        if oldest_first and not complete:
            newest = dict(afters)
            for e in kept:
                k = e["seq"] % len(self.parts)
                newest[k] = max(newest.get(k, 0), e["seq"])
            next_after = {k: newest.get(k, 0) for k in range(len(self.parts))}
        return {"events": kept, "complete": complete, "oldest_seq": None, "next_after": next_after}

    def history_after(
        self, after: int, limit: int, metric: str | None = None, *, oldest_first: bool, partition: int = 0
    ) -> dict:
        """Events with seq > `after` (of `metric`) from the history stream: the oldest `limit`
        of them in ascending order (`next_after` pages on), or the newest `limit`, newest first.
        `complete`: the answer holds every such event, none is older than the history."""
        part = self.parts[partition]  # with several partitions, each has its own history and seq
        key = part.history
        pipe = self.redis.pipeline(transaction=False)
        pipe.xrevrange(key, f"{after}-0", "-", count=1)  # the batch holding after + 1, if any
        pipe.xrange(key, "-", "+", count=1)
        pipe.get(part.seq)
        holding, oldest, last_seq = pipe.execute()
        oldest_seq = _entry_seq(oldest[0][0]) if oldest else None
        # Nothing stored since `after`, or the history reaches back to it: no event is missing.
        # (The counter counts this partition's events; event n of it has seq n * P + partition.)
        stride = self.partitions
        covered = (last_seq is None or int(last_seq) * stride + partition <= after) or (
            oldest_seq is not None and oldest_seq <= after + stride
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
                events = [e for e in _history_events(entry_id, fields, self.partitions) if wanted(e)]
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
        if len(self.parts) == 1:
            return [orjson.loads(item) for item in self.redis.lrange(self.keys.rejected, 0, limit - 1)]
        pipe = self.redis.pipeline(transaction=False)
        for keys in self.parts:
            pipe.lrange(keys.rejected, 0, limit - 1)
        items = [orjson.loads(item) for raw in pipe.execute() for item in raw]
        return sorted(items, key=lambda d: d.get("time", ""), reverse=True)[:limit]

    def stats(self) -> dict[str, int]:
        """Lifetime counters, summed over the partitions."""
        pipe = self.redis.pipeline(transaction=False)
        for keys in self.parts:
            pipe.hgetall(keys.stats)
        out: dict[str, int] = {}
        for h in pipe.execute():
            for k, v in h.items():
                out[k.decode()] = out.get(k.decode(), 0) + int(v)
        return out

    def _bucket_keys(self, res: int, start: int) -> list[str]:
        """The bucket of this interval in every partition (each partition writes its own)."""
        return [keys.bucket(res, start) for keys in self.parts]

    def _hgetall_many(self, bucket_keys: Iterable[str]) -> list[dict]:
        """HGETALL of many hashes, letting the loop run between round trips: parsing a wide
        window's replies is C work that holds the loop while it runs, and a whole hour of wide
        minutes in one pipeline held every client's events for seconds. A round trip takes up to
        READ_CHUNK hashes, fewer while they are wide (about READ_FIELDS fields each trip),
        starting from two: the first wide reply then holds the loop for one hash or two, not 16."""
        keys = list(bucket_keys)
        out: list[dict] = []
        i, chunk = 0, min(2, READ_CHUNK)
        while i < len(keys):
            if i:
                pause()
            pipe = self.redis.pipeline(transaction=False)
            for key in keys[i : i + chunk]:
                pipe.hgetall(key)
            replies = pipe.execute()
            out += replies
            i += len(replies)
            per_hash = max(1, sum(map(len, replies)) // len(replies))
            chunk = max(1, min(READ_CHUNK, chunk * 2, READ_FIELDS // per_hash))
        return out

    def aggregate(self, window_s: int, metric: str | None = None, now: float | None = None) -> dict:
        """The window ending with the current second.

        The result is shared by everyone asking for the same window in the same second while no
        batch has been written since (the worker bumps the `received` counter with every batch):
        the tick and any number of REST callers then cost one merge, and nobody reads stale data."""
        now = time.time() if now is None else now
        to_s = int(now) + 1  # include the current second
        # The second before the current one stays open for OPEN_GRACE_S: a batch read just
        # before it closed may still be on its way to Redis.
        open_from = to_s - 1 if now - (to_s - 1) >= OPEN_GRACE_S else to_s - 2
        # The open seconds are read with the counters, in one round trip: they are what a
        # request reads unless late writes make it read the minute whole (_window_parts), and
        # a cached answer makes them a small read for nothing.
        open_keys = self._open_keys(to_s, window_s, open_from)
        pipe = self.redis.pipeline(transaction=False)
        for keys in self.parts:
            pipe.hmget(keys.stats, "received", "late")
        for key in open_keys:
            pipe.hgetall(key)
        replies = pipe.execute()
        counters = replies[: len(self.parts)]
        open_hashes = replies[len(self.parts) :]
        version = tuple(c[0] for c in counters)
        late = tuple(c[1] for c in counters)
        key = (window_s, metric, to_s, version, late)
        with self._cache_lock:
            cached = self._aggregate_cache.get(key)
        if cached is not None:
            return cached
        from_s = to_s - window_s
        base, live, current = self._window_parts(
            to_s, window_s, open_from, (late, now), (open_keys, open_hashes)
        )
        if base is None:
            body = live.to_aggregate(window_s=window_s, from_s=from_s, to_s=to_s, metric=metric)
        else:
            rows = _aggregate_rows(base, live, window_s, metric)
            body = aggregate_json(rows, window_s=window_s, from_s=from_s, to_s=to_s)
        if current:  # not a previous merge served while it is refreshed: shareable until a write
            with self._cache_lock:
                self._aggregate_cache[key] = body
        return body

    def _open_keys(self, to_s: int, window_s: int, open_from: int) -> tuple[str, ...]:
        """The buckets _window_parts adds to its base while the current minute's seconds are
        settled: the open seconds, from `open_from` on (none for a window that starts inside
        the current minute: it is read whole)."""
        current = (to_s - 1) // 60 * 60
        if to_s - window_s > current:
            return ()
        return tuple(k for sec in range(max(open_from, current), to_s) for k in self._bucket_keys(1, sec))

    def _window_parts(
        self,
        to_s: int,
        window_s: int,
        open_from: int,
        late_at: tuple[tuple, float],
        open_seconds: tuple[tuple[str, ...], list[dict]],
    ) -> tuple[_Base | None, WindowStats, bool]:
        """The buckets of [to_s - window_s, to_s) as a base that changes at most once a second
        and the live part to add to it, reading as little live data as possible (base None:
        the window lies inside the current minute, and the live part is all of it), and
        whether the closed parts are current (False: one is served while it is refreshed).

        Everything before the current minute is closed (it changes only through late writes,
        which the writers count: `late_at`, the counters and when they were read; core/layout.py).
        Its whole minutes are merged once per minute of the clock and the merge is kept while
        the counters do not move; when they do, it is refreshed aside at most every
        CLOSED_MINUTES_TTL_S (so late events show up within that) while the previous merge is
        served. As the window slides second by second, the hour's merge is reused and only its
        ragged first minute (up to 59 second buckets, each parsed once) is merged per second.
        The current minute's seconds before `open_from` are settled: each is parsed once as it
        settles and added to the minute's running merge, which stays exact while the counters
        do not move. Only the open seconds are read per request, so a query while events
        arrive costs one or two small hash reads and rows of them added to the base, whatever
        the window: `open_seconds`, their keys (Reads._open_keys) and hashes, read with the
        counters. While late writes come in, the current minute is read whole per request
        instead, as its one minute bucket (exact, and what every request read before)."""
        from_s = to_s - window_s
        current = (to_s - 1) // 60 * 60  # the minute holding the window's last second
        if from_s > current:  # a window inside the current minute, from a later second: its seconds
            return (
                None,
                _merge_cooperatively(
                    self._hgetall_many(k for sec in range(from_s, to_s) for k in self._bucket_keys(1, sec))
                ),
                True,
            )
        first = -(-from_s // 60) * 60  # the first whole minute
        minutes = self._closed_part(
            (60, first, current),
            lambda: self._merge_plan([(60, m) for m in range(first, current, 60)]),
            late_at,
            current,
        )
        edge = None
        parts = [minutes]
        if from_s < first:
            parts.append(
                self._closed_part(
                    (1, from_s, first),
                    # exact: a merge kept while the counters are still must not hold a second
                    # parsed before they last moved
                    lambda: self._merge_seconds(from_s, first, late_at),
                    late_at,
                    first,
                )
            )
            edge = parts[-1].stats
        clock = time.monotonic()
        current_parts = all(part.fresh(clock, late_at[0]) for part in parts)  # none served stale
        open_keys, hashes = open_seconds  # read with the counters (Reads.aggregate)
        prefix = self._minute_prefix(current, max(open_from, current), late_at)
        if prefix is _UNSETTLED:
            open_keys = tuple(self._bucket_keys(60, current))
            prefix, hashes = None, self._hgetall_many(open_keys)
        with self._cache_lock:
            base = self._bases.get(from_s)
            if (
                base is None
                or base.closed is not minutes
                or base.edge is not edge
                or base.prefix is not prefix
            ):
                base = self._bases[from_s] = _Base(minutes, edge, prefix)
        return base, self._open_seconds.parse(open_keys, hashes), current_parts

    def _minute_prefix(
        self, minute: int, upto: int, late_at: tuple[tuple, float]
    ) -> WindowStats | object | None:
        """The merge of the settled seconds [minute, upto) of the current minute (None when
        there are none), kept and extended by each second as it settles: one second's hash
        parsed and merged a second instead of the whole minute's hash per request. _UNSETTLED
        while the `late` counters have moved in the last LATE_CALM_S: a late write may have
        added to a settled second, so the caller reads the whole minute. Rebuilt from seconds
        read since the counters last moved once they are still.

        (A writer whose clock is more than the margin between LATE_WRITE_S and OPEN_GRACE_S
        behind the reader's can add to a settled second unseen: the minute then shows it once
        it has closed and is read as a whole.)"""
        if upto <= minute:
            return None
        late, now = late_at
        with self._cache_lock:
            hit = self._prefix
            if late != self._late[0]:
                # Since when they are still; the first ones seen are trusted at once (what
                # is in Redis now is read now).
                self._late = (late, now if self._late[0] is not None else -math.inf)
            still_since = self._late[1]
        if hit is not None and hit.minute == minute and hit.late == late:
            if hit.upto == upto:
                return hit.stats
            if hit.upto < upto:
                stats = hit.stats.copy()  # the previous second's bases may still read the old one
                merge_states(stats.metrics, self._merge_seconds(hit.upto, upto, late_at).metrics)
                prefix = _Prefix(minute, upto, stats, late)
            else:  # a request that started before the last one settled a second
                return self._merge_seconds(minute, upto, late_at)
        elif now - still_since < LATE_CALM_S:
            return _UNSETTLED
        else:
            prefix = _Prefix(minute, upto, self._merge_seconds(minute, upto, late_at), late)
        with self._cache_lock:
            self._prefix = prefix
        return prefix.stats

    def _merge_plan(self, plan: list[tuple[int, int]]) -> WindowStats:
        """The merge of the buckets `plan`, (res, start) pairs."""
        return _merge_cooperatively(self._hgetall_many(k for r, st in plan for k in self._bucket_keys(r, st)))

    def _merge_seconds(self, from_s: int, to_s: int, late_at: tuple[tuple, float]) -> WindowStats:
        """The merge of the settled seconds [from_s, to_s), each second's hash parsed once and
        kept (a window's ragged first minute loses a second every second, and parsing its up to
        59 second hashes again each time cost 20-80 ms a second at 1,000 events/s; adding up
        parsed states costs a fraction of that). A parsed second is reused while the writers'
        late counters (`late_at`: the counters, read at that wall time) have not moved since it
        settled and was read: a merge kept for as long must not hold one parsed before."""
        late, now = late_at
        parsed: dict[int, WindowStats] = {}
        with self._cache_lock:
            for sec in range(from_s, to_s):
                hit = self._closed_seconds.get(sec)
                if hit is not None and hit[1] == late:
                    parsed[sec] = hit[0]
        missing = [sec for sec in range(from_s, to_s) if sec not in parsed]
        if missing:
            n = len(self.parts)
            read = self._hgetall_many(k for sec in missing for k in self._bucket_keys(1, sec))
            for i, sec in enumerate(missing):
                stats = parsed[sec] = _merge_cooperatively(read[i * n : (i + 1) * n])
                settled = now >= sec + 1 + OPEN_GRACE_S
                with self._cache_lock:
                    self._closed_seconds[sec] = (stats, late if settled else None)
        out = WindowStats()
        for i, sec in enumerate(range(from_s, to_s)):
            if i:
                pause()
            merge_states(out.metrics, parsed[sec].metrics)
        return out

    def _closed_part(
        self, key: tuple, build: Callable[[], WindowStats], late_at: tuple[tuple, float], end: int
    ) -> _Closed:
        """The merge `build` makes of seconds before `end`, cached under `key`. Kept while the
        writers' late counters do not move (if every second of it had settled when it was
        read), and otherwise for CLOSED_MINUTES_TTL_S; then it is refreshed aside, in its own
        task, while it is still served: a wide hour merged again every few seconds held one
        request in several hundred for 150-250 ms. Single flight: while one request or task
        merges it, the others wait for that merge (or keep serving the one it refreshes)."""
        late, now = late_at
        exact = late if now >= end + OPEN_GRACE_S else None
        clock = time.monotonic()
        with self._cache_lock:
            hit = self._closed_minutes.get(key)
        if hit is not None and hit.fresh(clock, late):
            return hit
        busy = self._computing.get(key)
        if hit is not None:
            if busy is None:
                self._refresh_aside(key, build, exact)
            return hit
        if busy is not None:
            busy.wait()
            with self._cache_lock:
                hit = self._closed_minutes.get(key)
        else:
            with self._flight(key):
                hit = _Closed(clock, build(), exact)
                with self._cache_lock:
                    self._closed_minutes[key] = hit
        if hit is None:  # the read we waited for failed; its caller reports why
            raise redis.ConnectionError("a concurrent read of this window failed; retry")
        return hit

    def _refresh_aside(self, key: tuple, build: Callable[[], WindowStats], exact: tuple | None) -> None:
        """Merge `key` again in a task of its own (a green thread under eventlet and gevent,
        which patch threading), marked as in flight until it is stored."""
        done = self._computing[key] = threading.Event()

        def refresh() -> None:
            try:
                fresh = _Closed(time.monotonic(), build(), exact)
                with self._cache_lock:
                    self._closed_minutes[key] = fresh
            except redis.RedisError:
                log.warning("refreshing a closed part of a window failed; its previous merge is served")
            finally:
                if self._computing.get(key) is done:
                    del self._computing[key]
                done.set()

        threading.Thread(target=refresh, name="pulseboard-refresh", daemon=True).start()

    @contextlib.contextmanager
    def _flight(self, key: tuple) -> Iterator[None]:
        """Mark `key` as being computed by this request while the block runs: others find its
        event in _computing and wait for it instead of doing the same work (single flight)."""
        done = self._computing[key] = threading.Event()
        try:
            yield
        finally:
            if self._computing.get(key) is done:
                del self._computing[key]
            done.set()

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
        cache = self._timeseries_cache
        flight = ("series", metric, field, res, step_s)

        def look() -> tuple[float, dict[int, dict], list[int]]:
            clock = time.monotonic()
            points: dict[int, dict] = {}
            missing: list[int] = []
            for step_start in range(from_s, to_s, step_s):
                hit = cache.get((metric, field, res, step_s, step_start))
                if hit is not None and clock - hit[0] < TIMESERIES_CLOSED_TTL_S:
                    points[step_start] = hit[1]
                else:
                    missing.append(step_start)
            return clock, points, missing

        clock, points, missing = look()
        if len(missing) > 1 and (busy := self._computing.get(flight)) is not None:
            # Another request is merging closed steps (single flight): those it finds are cached
            # when it is done, so wait for it instead of reading them all again.
            busy.wait()
            clock, points, missing = look()
        # (the open step alone: nothing for others to wait for)
        with self._flight(flight) if len(missing) > 1 else contextlib.nullcontext():
            self._series_missing(
                points, missing, clock, from_s=from_s, to_s=to_s, now_s=now_s, res=res,
                step_s=step_s, metric=metric, field=field,
            )  # fmt: skip
        return series_json(
            from_s=from_s,
            to_s=to_s,
            step_s=step_s,
            metric=metric,
            field=field,
            points=[points[step_start] for step_start in range(from_s, to_s, step_s)],
        )

    def _series_missing(
        self, points: dict, missing: list[int], clock: float, *, from_s: int, to_s: int, now_s: int,
        res: int, step_s: int, metric: str | None, field: str | None,
    ) -> None:  # fmt: skip
        """Merge the `missing` steps into `points`, caching the closed ones."""
        if not missing:
            return
        cache = self._timeseries_cache
        starts = [b for step_start in missing for b in range(step_start, step_start + step_s, res)]
        n = len(self.parts)
        read = self._hgetall_many(k for b in starts for k in self._bucket_keys(res, b))
        hashes = [(starts[i // n], h) for i, h in enumerate(read)]
        fresh = timeseries(
            hashes,
            from_s=from_s,
            to_s=to_s,
            step_s=step_s,
            res=res,
            metric=metric,
            field=field,
            pause=pause,
            part=MERGE_PART,
        )["points"]
        if len(cache) >= TIMESERIES_CACHE_MAX:
            cache.clear()
        for step_start in missing:
            point = fresh[(step_start - from_s) // step_s]
            points[step_start] = point
            if step_start + step_s < now_s:  # closed
                cache[(metric, field, res, step_s, step_start)] = (clock, point)
