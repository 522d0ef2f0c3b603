"""Accumulate -> apply to (simulated) Redis hashes -> merge a window, checked against brute force."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import numpy as np
import pytest

from backend.core.aggregate import BatchAccumulator, BucketDelta, apply_delta
from backend.core.events import Event, validate
from backend.core.layout import RESOLUTIONS, sum_overflow_key
from backend.core.sketch import ALPHA, bin_key
from backend.core.timefmt import iso_ms
from backend.core.window import (
    WindowStats,
    metric_json,
    metric_json_plus,
    plan_window,
    ranked_fields,
    timeseries,
    timeseries_plan,
)

NOW = 1_773_835_531.25
T0 = 1_773_835_200  # a minute boundary
TOL = ALPHA * (1 + 1e-9)


# --- building blocks ----------------------------------------------------------------------------
def make_events(n: int, seed: int, t0: float = T0, span: float = 420.0) -> list[Event]:
    """Skewed, mixed-sign, tied values over several minutes, several metrics and fields."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ts = t0 + float(rng.uniform(0, span))
        kind = i % 5
        status = "error" if rng.random() < 0.07 else "ok"
        if kind == 0:
            obj = {"metric": "latency", "value": {"ms": int(rng.lognormal(5, 1.2))}}
        elif kind == 1:
            obj = {
                "metric": "orders",
                "value": {"amount": round(float(rng.pareto(1.5) + 1) * 20, 2), "status": "c"},
            }
        elif kind == 2:
            # temperature-ish: negatives, zeros and a second field on the same metric
            temp = float(rng.normal(0, 15)) if rng.random() < 0.9 else 0.0
            obj = {"metric": "sensor", "value": {"temp": temp, "ms": float(rng.lognormal(1, 2))}}
        elif kind == 3:
            obj = {"metric": "page_views"}
        else:
            obj = {"metric": "sensor", "value": float(rng.lognormal(0, 1))}
        obj.update(ts=ts, status=status)
        out.append(validate(obj, now=t0 + span, retention_s=3600, future_tolerance_s=300))
    return out


def write(events: list[Event], batch: int, hashes: dict | None = None) -> dict:
    """One worker: batches of `batch` events, each batch's deltas applied like the store does."""
    hashes = {} if hashes is None else hashes
    for i in range(0, len(events), batch):
        acc = BatchAccumulator()
        for ev in events[i : i + batch]:
            acc.add(ev)
        for bucket, delta in acc.deltas().items():
            apply_delta(hashes.setdefault(bucket, {}), delta)
    return hashes


def as_redis(h: dict) -> dict[bytes, bytes]:
    """What redis-py's HGETALL returns: bytes names, numbers as text (floats round-trip via repr)."""
    return {k.encode(): (repr(v) if isinstance(v, float) else str(v)).encode() for k, v in h.items()}


def read_window(hashes: dict, to_s: int, window_s: int, metric: str | None = None) -> dict:
    plan = plan_window(to_s, window_s)
    stats = WindowStats.from_hashes(as_redis(hashes.get(b, {})) for b in plan)
    return stats.to_aggregate(window_s=window_s, from_s=to_s - window_s, to_s=to_s, metric=metric)


def brute(events: list[Event], from_s: int, to_s: int):
    """metric -> (count, errors, {field: [values]}) for events whose second is in [from_s, to_s)."""
    out: dict = {}
    for ev in events:
        if from_s <= math.floor(ev.ts) < to_s:
            m = out.setdefault(ev.metric, [0, 0, defaultdict(list)])
            m[0] += 1
            m[1] += ev.error
            for name, x in ev.fields.items():
                m[2][name].append(x)
    return out


def nearest_rank(values: list[float], q: float) -> float:
    return float(np.quantile(values, q, method="inverted_cdf"))


def assert_close_rel(est: float, true: float) -> None:
    if abs(true) < 1e-9:
        assert abs(est) < 1e-9 * (1 + ALPHA) or est == 0.0, (est, true)
    else:
        assert abs(est - true) <= TOL * abs(true), (est, true)


def check_against_brute(body: dict, events: list[Event], from_s: int, to_s: int, metric=None) -> None:
    truth = brute(events, from_s, to_s)
    if metric is not None:
        truth = {k: t for k, t in truth.items() if k == metric}
    window = to_s - from_s
    assert body["window_seconds"] == window
    assert body["from"] == iso_ms(from_s) and body["to"] == iso_ms(to_s)
    assert body["aggregate"] == {k: t[0] for k, t in truth.items()}
    assert set(body["metrics"]) == set(truth)
    total_c = sum(t[0] for t in truth.values())
    total_e = sum(t[1] for t in truth.values())
    assert body["total"]["count"] == total_c and body["total"]["errors"] == total_e
    assert body["total"]["rate_per_sec"] == pytest.approx(total_c / window, rel=1e-5)
    assert body["total"]["error_rate"] == pytest.approx(total_e / total_c if total_c else 0.0, rel=1e-5)
    for name, (count, errors, fields) in truth.items():
        m = body["metrics"][name]
        assert m["count"] == count and m["errors"] == errors
        assert m["error_rate"] == pytest.approx(errors / count, rel=1e-5)
        assert m["rate_per_sec"] == pytest.approx(count / window, rel=1e-5)
        assert set(m["fields"]) == set(fields)
        for fname, values in fields.items():
            f = m["fields"][fname]
            assert f["count"] == len(values)
            assert math.isclose(f["sum"], math.fsum(values), rel_tol=1e-9, abs_tol=1e-9)
            assert f["min"] == min(values) and f["max"] == max(values)
            assert math.isclose(f["avg"], math.fsum(values) / len(values), rel_tol=1e-9, abs_tol=1e-9)
            for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
                assert min(values) <= f[label] <= max(values)
                assert_close_rel(f[label], nearest_rank(values, q))


EVENTS = make_events(6000, seed=11)
HASHES = write(EVENTS, batch=700)
END = T0 + 421


# --- the write side ------------------------------------------------------------------------------
def test_single_event_delta_names_and_values():
    ev = validate(
        {"metric": "latency", "value": {"ms": 412}, "ts": T0 + 61.7, "status": "error"},
        now=NOW,
        retention_s=3600,
        future_tolerance_s=300,
    )
    acc = BatchAccumulator()
    acc.add(ev)
    deltas = acc.deltas()
    assert set(deltas) == {(1, T0 + 61), (60, T0 + 60)}
    bk = bin_key(412.0)
    for delta in deltas.values():
        assert delta == BucketDelta(
            incr={"latency|#c": 1, "latency|#e": 1, "latency|ms|c": 1, f"latency|ms|b:{bk}": 1},
            incr_float={"latency|ms|s": 412.0},
            mins={"latency|ms|mn": 412.0},
            maxs={"latency|ms|mx": 412.0},
        )


def test_pure_counts_and_no_error_field_when_no_errors():
    acc = BatchAccumulator()
    for i in range(5):
        acc.add(
            validate({"metric": "pv", "ts": T0 + i * 0.1}, now=NOW, retention_s=3600, future_tolerance_s=300)
        )
    deltas = acc.deltas()
    assert deltas[(1, T0)] == BucketDelta(incr={"pv|#c": 5})
    assert deltas[(60, T0)] == BucketDelta(incr={"pv|#c": 5})


def test_deltas_cover_both_resolutions_with_aligned_starts():
    acc = BatchAccumulator()
    for ev in EVENTS[:500]:
        acc.add(ev)
    deltas = acc.deltas()
    assert {res for res, _ in deltas} == set(RESOLUTIONS)
    for res, start in deltas:
        assert start % res == 0
    seconds = {math.floor(ev.ts) for ev in EVENTS[:500]}
    assert {s for r, s in deltas if r == 1} == seconds
    assert {s for r, s in deltas if r == 60} == {s - s % 60 for s in seconds}
    total = sum(n for (r, _), d in deltas.items() if r == 60 for k, n in d.incr.items() if k.endswith("|#c"))
    assert total == 500
    assert len(acc) == 500


def test_deltas_is_repeatable_and_does_not_consume_the_batch():
    # The roll-up to minutes must copy, not alias, the per-second state it merges.
    acc = BatchAccumulator()
    for ev in EVENTS[:2000]:
        acc.add(ev)
    first = acc.deltas()
    assert acc.deltas() == first


def test_buckets_use_the_floor_of_ts():
    acc = BatchAccumulator()
    acc.add(Event({}, -0.5, "m", {}, False))
    acc.add(Event({}, 119.999, "m", {}, False))
    acc.add(Event({}, 120.0, "m", {}, False))
    assert sorted(acc.deltas()) == [(1, -1), (1, 119), (1, 120), (60, -60), (60, 60), (60, 120)]


def test_minute_bucket_equals_merge_of_its_seconds():
    for minute in range(T0, END, 60):
        coarse = WindowStats.from_hashes([as_redis(HASHES.get((60, minute), {}))])
        fine = WindowStats.from_hashes(as_redis(HASHES.get((1, s), {})) for s in range(minute, minute + 60))
        a = coarse.to_aggregate(window_s=60, from_s=minute, to_s=minute + 60)
        b = fine.to_aggregate(window_s=60, from_s=minute, to_s=minute + 60)
        assert a["aggregate"] == b["aggregate"] and a["total"] == b["total"]
        for name in a["metrics"]:
            for fname, fa in a["metrics"][name]["fields"].items():
                fb = b["metrics"][name]["fields"][fname]
                assert math.isclose(fa.pop("sum"), fb.pop("sum"), rel_tol=1e-12, abs_tol=1e-9)
                assert math.isclose(fa.pop("avg"), fb.pop("avg"), rel_tol=1e-12, abs_tol=1e-9)
                assert fa == fb


def test_two_workers_write_the_same_totals_as_one():
    rng = random.Random(5)
    first, second = [], []
    for ev in EVENTS:
        (first if rng.random() < 0.5 else second).append(ev)
    shared: dict = {}
    write(first, batch=333, hashes=shared)
    write(second, batch=1234, hashes=shared)
    assert shared.keys() == HASHES.keys()
    for bucket, h in HASHES.items():
        assert shared[bucket].keys() == h.keys()
        for k, x in h.items():
            if k.endswith("|s"):
                assert math.isclose(shared[bucket][k], x, rel_tol=1e-12, abs_tol=1e-9)
            else:
                assert shared[bucket][k] == x, (bucket, k)
    for window in (60, 300, 421):
        a, b = read_window(shared, END, window), read_window(HASHES, END, window)
        assert a["aggregate"] == b["aggregate"] and a["total"] == b["total"]
        check_against_brute(a, EVENTS, END - window, END)


def test_batch_order_does_not_matter():
    shuffled = EVENTS[:]
    random.Random(9).shuffle(shuffled)
    other = write(shuffled, batch=5000)
    for bucket, h in HASHES.items():
        assert {k: x for k, x in other[bucket].items() if not k.endswith("|s")} == {
            k: x for k, x in h.items() if not k.endswith("|s")
        }


# --- the read side -------------------------------------------------------------------------------
@pytest.mark.parametrize("window", [1, 2, 59, 60, 61, 119, 125, 300, 421, 600])
def test_window_aggregate_matches_brute_force(window):
    check_against_brute(read_window(HASHES, END, window), EVENTS, END - window, END)


@pytest.mark.parametrize("to_s", [T0 + 37, T0 + 60, T0 + 181, T0 + 399])
def test_windows_ending_mid_minute(to_s):
    for window in (30, 90, 150):
        check_against_brute(read_window(HASHES, to_s, window), EVENTS, to_s - window, to_s)


def test_metric_filter_limits_everything_including_total():
    for metric in ("sensor", "latency", "page_views"):
        body = read_window(HASHES, END, 421, metric=metric)
        assert list(body["aggregate"]) == [metric]
        check_against_brute(body, EVENTS, END - 421, END, metric=metric)
    body = read_window(HASHES, END, 421, metric="nope")
    assert body["aggregate"] == {} and body["metrics"] == {}
    assert body["total"] == {"count": 0, "errors": 0, "error_rate": 0.0, "rate_per_sec": 0.0}


def test_aggregate_body_shape_is_exact():
    body = read_window(HASHES, END, 300)
    assert list(body) == ["window_seconds", "from", "to", "aggregate", "metrics", "total"]
    assert set(body["total"]) == {"count", "errors", "error_rate", "rate_per_sec"}
    for m in body["metrics"].values():
        assert set(m) == {"count", "errors", "error_rate", "rate_per_sec", "fields"}
        for f in m["fields"].values():
            assert set(f) == {"count", "sum", "sum_overflow", "avg", "min", "max", "p50", "p95", "p99"}
    assert set(body["metrics"]["sensor"]["fields"]) == {"temp", "ms", "value"}
    assert body["metrics"]["page_views"]["fields"] == {}


def test_empty_window():
    body = WindowStats.from_hashes([{}, {}]).to_aggregate(window_s=60, from_s=T0, to_s=T0 + 60)
    assert body == {
        "window_seconds": 60,
        "from": iso_ms(T0),
        "to": iso_ms(T0 + 60),
        "aggregate": {},
        "metrics": {},
        "total": {"count": 0, "errors": 0, "error_rate": 0.0, "rate_per_sec": 0.0},
    }


def test_bytes_and_str_hashes_read_the_same():
    plan = plan_window(END, 421)
    from_bytes = WindowStats.from_hashes(as_redis(HASHES.get(b, {})) for b in plan)
    from_str = WindowStats.from_hashes(
        {k.decode(): v.decode() for k, v in as_redis(HASHES.get(b, {})).items()} for b in plan
    )
    from_numbers = WindowStats.from_hashes(HASHES.get(b, {}) for b in plan)
    kw = {"window_s": 421, "from_s": END - 421, "to_s": END}
    assert from_bytes.to_aggregate(**kw) == from_str.to_aggregate(**kw) == from_numbers.to_aggregate(**kw)


def test_foreign_hash_entries_are_ignored():
    h = as_redis(HASHES[(60, T0)])
    clean = WindowStats.from_hashes([h]).to_aggregate(window_s=60, from_s=T0, to_s=T0 + 60)
    h.update(
        {
            b"junk": b"1",
            b"latency|#x": b"5",
            b"latency|ms|zz": b"5",
            b"latency|ms|c|extra": b"5",
            b"|#c": b"5",
            b"latency|#c2": b"not a number",
            b"ghost|#c": b"not a number",
            b"ghost|f|mn": b"",
            b"ghost|f|b:p1": b"1.5",
            b"latency|ms|b:q7": b"3",
            b"latency|ms|b:": b"3",
            b"latency|ms|b:p": b"3",
        }
    )
    dirty = WindowStats.from_hashes([h]).to_aggregate(window_s=60, from_s=T0, to_s=T0 + 60)
    assert dirty == clean


def test_percentiles_clamped_to_exact_min_and_max():
    # One value: the bin representative is up to 1% off, but min == max pins the answer exactly.
    acc = BatchAccumulator()
    acc.add(
        validate(
            {"metric": "m", "value": 1000.0, "ts": T0}, now=NOW, retention_s=3600, future_tolerance_s=300
        )
    )
    h: dict = {}
    apply_delta(h, acc.deltas()[(1, T0)])
    f = WindowStats.from_hashes([h]).to_aggregate(window_s=1, from_s=T0, to_s=T0 + 1)["metrics"]["m"][
        "fields"
    ]["value"]
    assert f == {
        "count": 1,
        "sum": 1000.0,
        "sum_overflow": False,
        "avg": 1000.0,
        "min": 1000.0,
        "max": 1000.0,
        "p50": 1000.0,
        "p95": 1000.0,
        "p99": 1000.0,
    }


def test_a_row_of_base_plus_fresh_is_the_row_of_their_merge():
    """metric_json_plus (an hour's base kept sorted, a second added per request) renders what
    merging a copy of the base with the fresh state renders, for fields either side has."""
    rng = random.Random(11)

    def state(n_events: int, fields: list[str], t: int) -> WindowStats:
        acc = BatchAccumulator()
        for _ in range(n_events):
            value = {f: rng.choice([rng.lognormvariate(2, 2), -rng.uniform(0, 50), 0.0]) for f in fields}
            obj = {"metric": "m", "value": value, "ts": t, "status": rng.choice(["ok", "error"])}
            acc.add(validate(obj, now=NOW, retention_s=3600, future_tolerance_s=300))
        h: dict = {}
        for (res, _), delta in acc.deltas().items():
            if res == 1:
                apply_delta(h, delta)
        return WindowStats.from_hashes([h])

    for trial in range(60):
        base = state(rng.randrange(1, 300), ["ms", "bytes"], T0).metrics["m"]
        fresh = state(rng.randrange(1, 20), rng.choice([["ms"], ["ms", "rows"], ["rows"]]), T0 + 1).metrics[
            "m"
        ]
        merged = base.copy()
        merged.merge(fresh)
        want = metric_json(merged, 60)
        assert metric_json_plus(base, ranked_fields(base), fresh, 60) == want, trial
        assert metric_json(base, 60) != want  # the fresh part counts


def test_apply_delta_keeps_min_and_max():
    h = {"m|f|mn": 5.0, "m|f|mx": 5.0, "m|#c": 2}
    apply_delta(h, BucketDelta(incr={"m|#c": 3}, mins={"m|f|mn": 7.0}, maxs={"m|f|mx": 9.0}))
    assert h == {"m|f|mn": 5.0, "m|f|mx": 9.0, "m|#c": 5}
    apply_delta(h, BucketDelta(incr_float={"m|f|s": 1.5}, mins={"m|f|mn": -1.0}, maxs={"m|f|mx": 2.0}))
    assert h == {"m|f|mn": -1.0, "m|f|mx": 9.0, "m|#c": 5, "m|f|s": 1.5}


# --- planning --------------------------------------------------------------------------------------
def test_plan_window_covers_every_second_exactly_once():
    rng = random.Random(1)
    cases = [(T0 + a, w) for a in (0, 1, 59, 60, 61) for w in (0, 1, 59, 60, 61, 119, 120, 121, 3600)]
    cases += [(T0 + rng.randrange(0, 7200), rng.randrange(0, 3601)) for _ in range(300)]
    for to_s, window in cases:
        plan = plan_window(to_s, window)
        covered = [s for res, start in plan for s in range(start, start + res)]
        assert sorted(covered) == list(range(to_s - window, to_s)), (to_s, window)
        assert covered == sorted(covered)  # oldest first
        for res, start in plan:
            assert res in RESOLUTIONS and start % res == 0
        # whole minutes are read as minutes: never 60 or more second buckets in one minute
        seconds = [start for res, start in plan if res == 1]
        assert len(seconds) <= 118
        assert len(plan) <= 118 + window // 60


def test_plan_window_rejects_negative_window():
    with pytest.raises(ValueError):
        plan_window(T0, -1)


@pytest.mark.parametrize(
    ("to_s", "window", "step", "res"),
    [
        (T0 + 60, 300, 5, 1),
        (T0 + 120, 600, 60, 60),
        (T0 + 120, 3600, 120, 60),
        (T0 + 30, 300, 60, 1),
        (T0 + 7, 7, 1, 1),
    ],
)
def test_timeseries_plan(to_s, window, step, res):
    got_res, starts = timeseries_plan(to_s, window, step)
    assert got_res == res
    assert starts == list(range(to_s - window, to_s, res))


# --- time series ---------------------------------------------------------------------------------
def run_timeseries(to_s: int, window: int, step: int, metric=None, field=None) -> dict:
    res, starts = timeseries_plan(to_s, window, step)
    hashes = {s: as_redis(HASHES[(res, s)]) for s in starts if (res, s) in HASHES}
    return timeseries(
        hashes, from_s=to_s - window, to_s=to_s, step_s=step, res=res, metric=metric, field=field
    )


@pytest.mark.parametrize(
    ("to_s", "window", "step"),
    [(T0 + 420, 420, 5), (T0 + 420, 420, 60), (T0 + 480, 480, 120), (T0 + 300, 300, 1), (T0 + 425, 425, 25)],
)
@pytest.mark.parametrize(
    ("metric", "field"), [(None, None), ("sensor", "ms"), (None, "ms"), ("latency", None), ("sensor", "temp")]
)
def test_timeseries_points_match_brute_force(to_s, window, step, metric, field):
    body = run_timeseries(to_s, window, step, metric, field)
    from_s = to_s - window
    assert {k: body[k] for k in ("window_seconds", "step_seconds", "metric", "field")} == {
        "window_seconds": window,
        "step_seconds": step,
        "metric": metric,
        "field": field,
    }
    assert body["from"] == iso_ms(from_s) and body["to"] == iso_ms(to_s)
    assert [p["t"] for p in body["points"]] == [iso_ms(t) for t in range(from_s, to_s, step)]
    for p, t in zip(body["points"], range(from_s, to_s, step), strict=True):
        truth = brute(EVENTS, t, t + step)
        if metric is not None:
            truth = {k: x for k, x in truth.items() if k == metric}
        count = sum(x[0] for x in truth.values())
        errors = sum(x[1] for x in truth.values())
        values = [v for x in truth.values() for v in x[2].get(field, [])] if field else []
        assert p["count"] == count and p["errors"] == errors
        assert p["rate_per_sec"] == pytest.approx(count / step, rel=1e-5)
        assert p["error_rate"] == pytest.approx(errors / count if count else 0.0, rel=1e-5)
        if not values:
            assert p["avg"] is p["p50"] is p["p95"] is p["p99"] is None
            continue
        assert math.isclose(p["avg"], math.fsum(values) / len(values), rel_tol=1e-9, abs_tol=1e-9)
        for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert_close_rel(p[label], nearest_rank(values, q))


def test_timeseries_empty_steps_are_zero():
    body = timeseries({}, from_s=T0, to_s=T0 + 30, step_s=10, res=1, metric=None, field="ms")
    assert body["points"] == [
        {
            "t": iso_ms(t),
            "count": 0,
            "rate_per_sec": 0.0,
            "errors": 0,
            "error_rate": 0.0,
            "avg": None,
            "p50": None,
            "p95": None,
            "p99": None,
        }
        for t in (T0, T0 + 10, T0 + 20)
    ]


def test_timeseries_ignores_buckets_outside_the_range():
    h = as_redis(HASHES[(1, T0 + 5)])
    body = timeseries(
        {T0 - 1: h, T0 + 5: h, T0 + 30: h}, from_s=T0, to_s=T0 + 30, step_s=10, res=1, metric=None, field=None
    )
    counts = [p["count"] for p in body["points"]]
    assert counts[0] == sum(int(v) for k, v in h.items() if k.endswith(b"|#c")) > 0
    assert counts[1:] == [0, 0]


def test_timeseries_rejects_step_not_multiple_of_res():
    with pytest.raises(ValueError):
        timeseries({}, from_s=T0, to_s=T0 + 60, step_s=30, res=60, metric=None, field=None)


def _sum_stats(hashes: list[dict]) -> dict:
    return WindowStats.from_hashes(hashes).to_aggregate(window_s=2, from_s=T0, to_s=T0 + 2)["metrics"]["m"][
        "fields"
    ]["value"]


def test_a_sum_that_overflows_is_flagged_not_a_wrong_number():
    """1.7e308 + 1.7e308 - 1.7e308 once read as 0.0: the writer skipped the overflowing add."""
    h: dict = {}
    for x in (1.7e308, 1.7e308, -1.7e308):
        apply_delta(h, BucketDelta(incr={"m|#c": 1, "m|value|c": 1}, incr_float={"m|value|s": x}))
    assert h[sum_overflow_key("m|value|s")] == 1  # the marker the store's writer must set
    f = _sum_stats([h])
    assert f["sum_overflow"] is True and f["sum"] is None and f["avg"] is None
    assert f["count"] == 3


def test_overflow_marker_survives_merging_with_other_buckets():
    flagged = {"m|#c": b"1", "m|value|c": b"1", "m|value|s": b"1.7e308", "m|value|so": b"1"}
    plain = {"m|#c": b"1", "m|value|c": b"1", "m|value|s": b"-1.7e308"}
    for order in ([flagged, plain], [plain, flagged]):
        f = _sum_stats(order)
        assert f["sum_overflow"] is True and f["sum"] is None


def test_finite_bucket_sums_adding_past_the_float_range_are_flagged():
    a = {"m|#c": b"1", "m|value|c": b"1", "m|value|s": b"1.7e308"}
    f = _sum_stats([a, dict(a)])
    assert f["sum_overflow"] is True and f["sum"] is None
    assert _sum_stats([a])["sum"] == 1.7e308 and _sum_stats([a])["sum_overflow"] is False


def test_timeseries_avg_is_null_when_the_sum_overflowed():
    h = {"m|#c": b"1", "m|value|c": b"1", "m|value|s": b"1.7e308", "m|value|so": b"1"}
    point = timeseries({T0: h}, from_s=T0, to_s=T0 + 1, step_s=1, res=1, metric="m", field="value")["points"][
        0
    ]
    assert point["count"] == 1 and point["avg"] is None


def test_a_wide_hash_merged_in_parts_equals_one_merge_and_pauses_between_parts():
    from backend.core.window import WindowStats, merge_in_parts

    rnd = random.Random(7)
    events = [
        validate(
            {
                "metric": f"m{i % 50}",
                "value": {f"f{j}": rnd.lognormvariate(3, 2) for j in range(8)},
                "ts": 960 + i % 60,
            },
            now=1020,
            retention_s=3600,
            future_tolerance_s=300,
        )
        for i in range(3000)
    ]
    (h,) = [as_redis(h) for (res, _), h in write(events, batch=500).items() if res == 60]
    assert len(h) > 4 * 1000
    whole = WindowStats.from_hashes([h])
    pauses = []
    parts = WindowStats()
    merge_in_parts(parts, h, lambda: pauses.append(1), 1000)
    assert len(pauses) == -(-len(h) // 1000) - 1
    window = {"window_s": 60, "from_s": 960, "to_s": 1020}
    assert parts.to_aggregate(**window) == whole.to_aggregate(**window)
    assert whole.to_aggregate(**window)["total"]["count"] == 3000


def test_a_reset_window_refilled_from_a_grown_hash_equals_a_fresh_merge():
    from backend.core.window import WindowStats

    rnd = random.Random(3)
    events = [
        validate(
            {
                "metric": f"m{i % 7}",
                "value": {"ms": rnd.lognormvariate(3, 1)},
                "ts": 960 + i % 60,
                "status": "ok",
            },
            now=1020,
            retention_s=3600,
            future_tolerance_s=300,
        )
        for i in range(2000)
    ]
    window = {"window_s": 60, "from_s": 960, "to_s": 1020}
    reused = WindowStats()
    hashes: dict = {}
    for i in range(0, 2000, 400):  # the current minute's hash as it grows, read after each batch
        write(events[i : i + 400], batch=400, hashes=hashes)
        (h,) = [as_redis(h) for (res, _), h in hashes.items() if res == 60]
        reused.reset()
        reused.merge_hash(h)
        copy = reused.copy()
        assert copy.to_aggregate(**window) == WindowStats.from_hashes([h]).to_aggregate(**window)
        assert copy.to_aggregate(**window)["total"]["count"] == i + 400
    reused.reset()  # the copy is independent of the state it was taken from
    assert copy.to_aggregate(**window)["total"]["count"] == 2000
