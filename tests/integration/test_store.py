"""The Redis store on a real server: atomic batch writes, concurrent writers, edge values."""

from __future__ import annotations

import copy
import threading
import time

import orjson
import pytest
import redis

from backend.core.aggregate import BatchAccumulator, BucketDelta
from backend.core.events import validate
from backend.core.layout import LATE_WRITE_S
from backend.core.window import WindowStats, plan_window
from backend.storage import reads
from backend.storage.keys import Keys
from backend.storage.store import Store, connect


@pytest.fixture
def store(redis_url, names):
    s = Store(
        connect(redis_url),
        Keys(prefix=names["KEY_PREFIX"], recent=names["RECENT_KEY"]),
        recent_max=50,
        retention_s=3600,
        dead_letter_max=10,
    )
    yield s
    s.redis.close()


def write(store: Store, events: list[dict], now: float) -> None:
    acc = BatchAccumulator()
    datas = []
    first = store.reserve_seqs(len(events))
    for i, obj in enumerate(events):
        ev = validate(obj, now=now, retention_s=3600, future_tolerance_s=300)
        ev.data["seq"] = first + i
        acc.add(ev)
        datas.append(ev.data)
    store.write_batch(datas, acc.deltas(), [], received=len(events))


def test_concurrent_writers_keep_aggregates_exact(store, redis_url, names):
    now = time.time()
    per_writer = 2_000

    def writer(offset: int) -> None:
        own = Store(connect(redis_url), store.keys, recent_max=50, retention_s=3600, dead_letter_max=10)
        for start in range(0, per_writer, 100):
            write(
                own,
                [{"metric": "m", "value": {"v": offset + i}, "ts": now} for i in range(start, start + 100)],
                now,
            )
        own.redis.close()

    threads = [threading.Thread(target=writer, args=(k * 100_000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    body = store.aggregate(60, now=now)
    field = body["metrics"]["m"]["fields"]["v"]
    values = [k * 100_000 + i for k in range(4) for i in range(per_writer)]
    assert body["aggregate"] == {"m": 4 * per_writer}
    assert field["count"] == len(values)
    assert field["sum"] == sum(values)
    assert field["min"] == min(values)
    assert field["max"] == max(values)
    assert store.redis.llen(store.keys.recent) == 50  # trimmed to recent_max
    seqs = [orjson.loads(x)["seq"] for x in store.redis.lrange(store.keys.recent, 0, -1)]
    assert len(set(seqs)) == len(seqs)


def test_a_batch_larger_than_the_recent_list_keeps_its_newest_events(store):
    now = time.time()
    write(store, [{"metric": "big", "value": i} for i in range(120)], now)
    kept = [orjson.loads(x)["value"] for x in store.redis.lrange(store.keys.recent, 0, -1)]
    assert kept == list(range(119, 69, -1))  # newest first, recent_max = 50
    assert store.stats()["accepted"] == 120


def test_lists_get_each_event_whole_and_numbered_when_the_batch_has_more_than_they_keep(store):
    """The script cuts the events the lists keep out of the batch's newline-separated JSON: the
    newest recent_max overall and the newest recent_per_metric of each metric, skipping the
    others, with strings that hold braces, commas, quotes and escaped newlines."""
    store.recent_per_metric = 7
    now = time.time()
    metrics = ["a", "b", "c"]
    events = [
        {"metric": metrics[i % 3] if i < 100 else "a", "value": {"v": i, "note": f'x}},{{"id":\n{i}'}}
        for i in range(120)
    ]
    events[5]["metric"] = "rare"  # its only event is old: kept in its own list alone
    write(store, events, now)

    def listed(key):
        return [orjson.loads(x) for x in store.redis.lrange(key, 0, -1)]

    recent = listed(store.keys.recent)
    assert [e["value"]["v"] for e in recent] == list(range(119, 69, -1))
    first = recent[-1]["seq"] - 70  # seqs follow the batch's order
    for e in recent:
        assert e["seq"] == first + e["value"]["v"]
        assert e["value"]["note"] == f'x}},{{"id":\n{e["value"]["v"]}'
    per = {m: listed(store.keys.recent_metric(m)) for m in ["a", "b", "c", "rare"]}
    assert [e["value"]["v"] for e in per["a"]] == list(range(119, 112, -1))
    assert [e["value"]["v"] for e in per["b"]] == [97, 94, 91, 88, 85, 82, 79]
    assert [e["value"]["v"] for e in per["c"]] == [98, 95, 92, 89, 86, 83, 80]
    assert [(e["value"]["v"], e["seq"]) for e in per["rare"]] == [(5, first + 5)]


def test_overflowing_sum_does_not_abort_the_rest_of_the_batch(store):
    now = time.time()
    write(
        store,
        [
            {"metric": "huge", "value": 1.5e308},
            {"metric": "huge", "value": 1.5e308},
            {"metric": "small", "value": 2},
        ],
        now,
    )
    body = store.aggregate(60, now=now + 1)
    assert body["aggregate"] == {"huge": 2, "small": 1}
    assert body["metrics"]["huge"]["fields"]["value"]["max"] == 1.5e308
    assert body["metrics"]["small"]["fields"]["value"]["sum"] == 2


def test_aggregate_is_shared_until_a_batch_is_written(store):
    now = float(int(time.time()))
    write(store, [{"metric": "c", "ts": now}], now)
    first = store.aggregate(10, now=now)
    assert store.aggregate(10, now=now + 0.5) is first  # same second, no new data: one computation
    write(store, [{"metric": "c", "ts": now}], now)
    assert store.aggregate(10, now=now + 0.5)["aggregate"] == {"c": 2}  # never stale
    assert store.aggregate(10, now=now + 1) is not first


def test_buckets_expire_after_the_retention(store):
    now = time.time()
    write(store, [{"metric": "ttl"}], now)
    keys = store.redis.keys(store.keys.prefix + "agg:*")
    assert len(keys) == 2  # one per resolution
    for key in keys:
        ttl = store.redis.ttl(key)
        assert 3600 - 5 <= ttl <= 3600 + 60 + 5


def test_lease_is_exclusive_and_renewable_only_by_its_holder(store):
    assert store.acquire_lease("a", 1000)
    assert not store.acquire_lease("b", 1000)
    assert store.renew_lease("a", 1000)
    assert not store.renew_lease("b", 1000)
    assert store.worker_alive()
    store.release_lease("b")  # not b's to release
    assert not store.acquire_lease("b", 1000)
    store.release_lease("a")
    assert store.acquire_lease("b", 1000)


def test_timeseries_reuses_closed_steps_and_recomputes_the_open_one(store):
    now = float(int(time.time()))
    write(store, [{"metric": "ts", "value": {"ms": 10}, "ts": now - 30}] * 3, now)
    first = store.timeseries(60, 5, "ts", "ms", now=now)
    assert sum(p["count"] for p in first["points"]) == 3
    write(store, [{"metric": "ts", "value": {"ms": 20}, "ts": now}] * 2, now)
    second = store.timeseries(60, 5, "ts", "ms", now=now)
    assert sum(p["count"] for p in second["points"]) == 5  # the open step is always read fresh
    closed = [p for p in second["points"] if p["count"] == 3]
    assert len(closed) == 1 and closed[0] is next(p for p in first["points"] if p["count"] == 3)
    assert store._timeseries_cache  # closed steps were kept
    assert [p["t"] for p in second["points"]] == [p["t"] for p in first["points"]]


def brute(store: Store, window_s: int, at: float) -> dict:
    """The window's aggregate merged from its bucket hashes from scratch, with no cache."""
    plan = plan_window(int(at) + 1, window_s)
    hashes = [store.redis.hgetall(store.keys.bucket(r, s)) for r, s in plan]
    return WindowStats.from_hashes(hashes).to_aggregate(
        window_s=window_s, from_s=int(at) + 1 - window_s, to_s=int(at) + 1
    )


def same(got: dict, want: dict) -> None:
    got, want = copy.deepcopy(got), copy.deepcopy(want)  # `got` may be the store's shared result
    # Float sums may differ in the last bits with the order of addition; all else is exact.
    for m in want["metrics"]:
        for fname, f in want["metrics"][m]["fields"].items():
            g = got["metrics"][m]["fields"][fname]
            assert g.pop("sum") == pytest.approx(f.pop("sum"), rel=1e-12)
            assert g.pop("avg") == pytest.approx(f.pop("avg"), rel=1e-12)
    assert got == want


def test_long_window_merges_cached_closed_minutes_exactly(store):
    import random

    rnd = random.Random(5)
    now = float(int(time.time()))
    if (now + 1) % 60 == 0:  # a window ending on a whole minute has no ragged first minute to merge
        now -= 1
    events = [
        {
            "metric": rnd.choice(["a", "b"]),
            "value": {"ms": rnd.lognormvariate(3, 1)},
            "status": rnd.choice(["ok", "ok", "error"]),
            "ts": now - rnd.uniform(0, 1790),
        }
        for _ in range(3000)
    ]
    for i in range(0, len(events), 500):
        write(store, events[i : i + 500], now)

    same(store.aggregate(1800, now=now), brute(store, 1800, now))
    assert store._closed_minutes  # the closed minutes were merged once and kept
    write(store, [{"metric": "a", "value": {"ms": 1.0}, "ts": now}], now)  # the current second: always fresh
    same(store.aggregate(1800, now=now), brute(store, 1800, now))
    assert (
        store.aggregate(1800, now=now)["aggregate"]["a"] == sum(1 for e in events if e["metric"] == "a") + 1
    )
    # A metric only the current minute has, beside ones it does not touch now (their base rows)
    # and one it does (a copy of its base with the live state added); the base is not changed.
    write(store, [{"metric": "new", "value": {"ms": 2.0}, "ts": now}, {"metric": "b", "ts": now}], now)
    same(store.aggregate(1800, now=now), brute(store, 1800, now))
    write(store, [{"metric": "new", "ts": now}], now)
    same(store.aggregate(1800, now=now), brute(store, 1800, now))


def test_the_current_minutes_settled_seconds_are_merged_as_they_settle(store, monkeypatch):
    """Per request only the open seconds are read; the current minute's earlier seconds are
    merged once, and the running merge grows by each second as it settles. A late write (into
    a second that may have settled) sends readers back to the whole minute's hash until the
    writers are still for LATE_CALM_S, then the merge is rebuilt from freshly read seconds.
    Writer and reader share a simulated clock (`store.clock`, `now`)."""
    minute = int(time.time()) // 60 * 60 - 120  # a whole minute of the recent past, as "now"

    def write_at(events: list[dict], at: float) -> None:
        store.clock = lambda: at
        write(store, events, at)

    def read_at(at: float) -> dict:
        got = store.aggregate(300, now=at)
        same(got, brute(store, 300, at))
        return got

    merged: list[tuple[int, int]] = []  # the stretches of this minute's seconds merged
    merge_seconds = store._merge_seconds

    def watched(from_s: int, to_s: int, late_at: tuple) -> object:
        if from_s >= minute:
            merged.append((from_s - minute, to_s - minute))
        return merge_seconds(from_s, to_s, late_at)

    monkeypatch.setattr(store, "_merge_seconds", watched)

    history = [{"metric": "a", "value": {"ms": 3.0 + i}, "ts": minute - 200 + i} for i in range(150)]
    current = [
        {
            "metric": "a" if i % 3 else "b",
            "value": {"ms": 1.0 + i % 40},
            "ts": minute + i % 30,
            "status": "ok",
        }
        for i in range(300)
    ]
    # The counters as first seen are trusted at once. (A shorter window: the closed minutes of
    # this one would be kept for CLOSED_MINUTES_TTL_S without what is written next.)
    store.aggregate(120, now=minute + 29.4)
    before = store._prefix
    assert before is not None
    write_at(history + current, minute + 29.5)  # late: most of it is for seconds long gone
    read_at(minute + 29.6)
    assert store._prefix is before  # neither used nor rebuilt: the minute was read whole
    read_at(minute + 29.6 + reads.LATE_CALM_S)
    first = store._prefix  # still for LATE_CALM_S: the settled seconds are merged now
    assert (first.minute, first.upto) == (minute, minute + 30)

    # A second later second 30 has settled: the merge grows by it and is not rebuilt.
    write_at([{"metric": "b", "value": {"ms": 77.0}, "ts": minute + 31}], minute + 31.6)
    merged.clear()
    read_at(minute + 31.6)
    assert store._prefix.upto == minute + 31 and merged == [(30, 31)]

    # Within OPEN_GRACE_S of a new second the one before is still read live: an event for it
    # written just after it closed (not late yet) counts at once.
    just_after = minute + 32 + LATE_WRITE_S / 2
    read_at(just_after)
    write_at([{"metric": "a", "value": {"ms": 500.0}, "ts": minute + 31}], just_after)
    assert read_at(just_after)["metrics"]["a"]["fields"]["ms"]["max"] == 500.0
    assert store._prefix.upto == minute + 31

    # A late event in a settled second counts at once (the minute is read whole again), and
    # is in the merge rebuilt when the writers have been still for LATE_CALM_S.
    write_at([{"metric": "b", "value": {"ms": 1e6}, "ts": minute + 5}], just_after)
    assert read_at(just_after)["metrics"]["b"]["fields"]["ms"]["max"] == 1e6
    later = just_after + reads.LATE_CALM_S + 0.5
    merged.clear()
    assert read_at(later)["metrics"]["b"]["fields"]["ms"]["max"] == 1e6
    assert store._prefix.upto == int(later) and merged == [(0, int(later) - minute)]  # rebuilt, not extended


def test_a_live_aggregate_reads_redis_in_one_round_trip(store, monkeypatch):
    """While nothing is late, a request that finds new data (no cached answer) reads the
    counters and the open seconds together: one round trip, whatever the window (60 s at a
    minute's last second included: it merges the minute's settled seconds once, not 60 second
    buckets per request)."""
    minute = int(time.time()) // 60 * 60 - 120
    sent = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):
        sent.append(command)
        return send(self, command, check_health)

    def write_at(events: list[dict], at: float) -> None:
        store.clock = lambda: at
        write(store, events, at)

    # Late when written, and seen first: trusted at once.
    write_at([{"metric": "a", "value": {"ms": 1.0 + i}, "ts": minute - 300 + i} for i in range(300)], minute)
    written = 0
    # The last second of a minute too: a 60 s window is then the current minute exactly.
    for k, (window, at) in enumerate(((300, minute + 20.6), (3600, minute + 20.6), (60, minute + 59.6))):
        newest = 10.0 ** (k + 3)  # larger than anything before: the new write is the max
        for sec in range(written, int(at) - minute):  # each second's events as it happens: nothing late
            write_at([{"metric": "a", "value": {"ms": 2.0}, "ts": minute + sec}], minute + sec + 0.1)
        written = int(at) - minute
        store.clock = lambda at=at: at
        store.aggregate(window, now=at)  # the closed minutes and settled seconds, merged once
        write(store, [{"metric": "a", "value": {"ms": newest}, "ts": int(at)}], at)
        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
        sent.clear()
        got = store.aggregate(window, now=at)
        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", send)
        assert len(sent) == 1, (window, sent)
        assert got["metrics"]["a"]["fields"]["ms"]["max"] == newest  # the new write is in
        same(got, brute(store, window, at))


def test_closed_minutes_are_kept_while_nothing_is_late_and_refreshed_aside_when_something_is(
    store, monkeypatch
):
    """A window's closed minutes are merged once and kept, past CLOSED_MINUTES_TTL_S, while
    the writers write nothing late; a late write makes the next read serve the previous merge
    while a task merges them again, and the reads after it see the late event."""
    minute = int(time.time()) // 60 * 60 - 120
    at = minute + 30.5
    store.clock = lambda: at
    write(
        store, [{"metric": "a", "value": {"ms": 1.0 + i}, "ts": minute - 500 + i * 3} for i in range(150)], at
    )
    key = (60, minute - 540, minute)
    first = store.aggregate(600, now=at)
    same(first, brute(store, 600, at))
    merged = store._closed_minutes[key]
    monkeypatch.setattr(reads, "CLOSED_MINUTES_TTL_S", 0.0)  # any merge is past its TTL now
    store.aggregate(600, now=at + 0.1)
    assert store._closed_minutes[key] is merged and not store._computing  # nothing late: kept

    write(store, [{"metric": "a", "value": {"ms": 1e6}, "ts": minute - 120}], at)  # late, in a closed minute
    stale = store.aggregate(600, now=at + 0.2)
    assert stale["metrics"]["a"]["fields"]["ms"]["max"] < 1e6  # the previous merge, served at once
    refreshing = store._computing.get(key)
    if refreshing is not None:
        assert refreshing.wait(10)
    assert store._closed_minutes[key] is not merged
    got = store.aggregate(600, now=at + 0.3)
    same(got, brute(store, 600, at + 0.3))
    assert got["metrics"]["a"]["fields"]["ms"]["max"] == 1e6


def test_a_late_write_into_a_windows_first_seconds_is_read_again_not_taken_from_the_cache(store, monkeypatch):
    """Parsed seconds are reused only while the late counters are as they were when each was
    read: the next first-minute merge after a late write reads the seconds again."""
    minute = int(time.time()) // 60 * 60 - 120
    at = minute + 30.5
    store.clock = lambda: at
    write(store, [{"metric": "a", "value": {"ms": 1.0 + i}, "ts": minute - 100 + i} for i in range(60)], at)
    store.aggregate(120, now=at)  # the first ragged minute's seconds parsed and kept
    write(store, [{"metric": "a", "value": {"ms": 1e6}, "ts": minute - 70}], at)  # late, into one of them
    monkeypatch.setattr(reads, "CLOSED_MINUTES_TTL_S", 0.0)
    got = store.aggregate(120, now=at + 1)  # the window slid: its first minute is merged again
    same(got, brute(store, 120, at + 1))
    assert got["metrics"]["a"]["fields"]["ms"]["max"] == 1e6


def test_a_batch_counts_as_late_only_when_it_adds_to_a_second_ended_more_than_late_write_s_ago(store):
    second = int(time.time())

    def write_at(ts: float, at: float) -> int:
        store.clock = lambda: at
        write(store, [{"metric": "m", "ts": ts}], at)
        return store.stats().get("late", 0)

    assert write_at(second + 0.9, second + 0.95) == 0  # its own second
    assert write_at(second + 0.9, second + 1 + LATE_WRITE_S / 2) == 0  # just after it ended
    assert write_at(second + 0.9, second + 1 + LATE_WRITE_S * 2) == 1  # late
    assert write_at(second - 3000, second + 1) == 2  # a backfill


def test_held_minute_updates_written_after_the_minute_ended_count_as_late(store):
    """The worker may write a minute's updates after its seconds' (held back under load,
    ingest/batch.py): written more than LATE_WRITE_S after the minute ended, readers may have
    merged that minute already, so the batch counts as late."""
    minute = int(time.time()) // 60 * 60 - 60
    delta = BucketDelta(incr={"m|#c": 1})

    def write_at(at: float) -> int:
        store.clock = lambda: at
        store.write_batch([], {(60, minute): delta}, [], received=0)
        return store.stats().get("late", 0)

    assert write_at(minute + 59.9) == 0
    assert write_at(minute + 60 + LATE_WRITE_S / 2) == 0
    assert write_at(minute + 60 + LATE_WRITE_S * 2) == 1
