"""Per-tag counters (top-N and the breakdown series): accumulate tagged events, apply the tag
deltas to (simulated) Redis hashes, merge them with TagStats, and check against brute force.
Split out of test_aggregate.py, whose helpers it shares."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import numpy as np
import pytest

from backend.core.aggregate import (
    TAG_ALPHA,
    BatchAccumulator,
    MinuteHold,
    TagAdmission,
    apply_delta,
    coarse_bin_key,
    release,
)
from backend.core.events import Event, validate
from backend.core.layout import OTHER, decode_tag_value, encode_tag_value, is_latency_field, parse_tag_name
from backend.core.sketch import Sketch, bin_key, bin_value
from backend.core.window import TagStats, plan_window
from tests.unit.test_aggregate import T0, as_redis

# --- per-tag counters (top-N) ---------------------------------------------------------------------
TAG_VALUES = {
    "endpoint": ["/api/a", "/api/b", "/api/c|pipe", "100%", "k=v", "ünï", "__other__", "/api/d"],
    "region": ["eu", "us"],
}


def make_tagged_events(n: int, seed: int, t0: float = T0, span: float = 150.0) -> list[Event]:
    """Tagged events over a few minutes: awkward tag values, errors, two latency fields on some
    events, a non-latency field, and some events without tags at all."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        endpoint = rng.choice(TAG_VALUES["endpoint"])
        value: dict = {"ms": round(rng.lognormvariate(4, 0.8), 2), "bytes": rng.randint(0, 9000)}
        if i % 3 == 0:
            value["db_ms"] = round(rng.lognormvariate(2, 0.5), 2)
        if i % 13 == 0:
            del value["ms"]  # a latency field, but not the one that counts events in most groups
        if i % 7 == 0:
            value = {"bytes": 5}  # no latency field: counted through the tag lists, not the bins
        obj = {
            "metric": "http" if i % 5 else "rpc",
            "value": value,
            "ts": t0 + rng.uniform(0, span),
            "status": "error" if rng.random() < 0.1 else "ok",
        }
        if i % 11:
            obj["tags"] = {"endpoint": endpoint, "region": rng.choice(TAG_VALUES["region"])}
        out.append(validate(obj, now=t0 + span, retention_s=3600, future_tolerance_s=300))
    return out


def write_tags(events: list[Event], batch: int, max_values: int = 100) -> dict:
    admission = TagAdmission(max_values)
    hashes: dict = {}
    for i in range(0, len(events), batch):
        acc = BatchAccumulator(max_values, admission=admission)
        for ev in events[i : i + batch]:
            acc.add(ev)
        for bucket, delta in acc.tag_deltas().items():
            apply_delta(hashes.setdefault(bucket, {}), delta)
    return hashes


def read_tags(hashes: dict, to_s: int, window_s: int, by: str, metric=None, field="ms") -> dict:
    stats = TagStats(by, metric=metric, field=field)
    for bucket in plan_window(to_s, window_s):
        stats.merge_hash(as_redis(hashes.get(bucket, {})))
    return stats.values


TAGGED = make_tagged_events(6000, seed=21)


def test_tag_counting_is_off_by_default_and_never_changes_the_main_deltas():
    plain, tagged = BatchAccumulator(), BatchAccumulator(100, admission=TagAdmission(100))
    for ev in TAGGED[:2000]:
        plain.add(ev)
        tagged.add(ev)
    assert plain.tag_deltas() == {}
    assert tagged.tag_deltas()
    assert plain.deltas() == tagged.deltas()


@pytest.mark.parametrize("batch", [1, 97, 6000])
@pytest.mark.parametrize(("to_s", "window"), [(T0 + 151, 151), (T0 + 130, 45), (T0 + 121, 61)])
def test_tag_counts_and_errors_are_exact(batch, to_s, window):
    hashes = write_tags(TAGGED, batch)
    for by in ("endpoint", "region"):
        for metric in (None, "http", "rpc"):
            chosen = [
                ev
                for ev in TAGGED
                if "tags" in ev.data
                and to_s - window <= math.floor(ev.ts) < to_s
                and (metric is None or ev.metric == metric)
            ]
            counts: dict = defaultdict(lambda: [0, 0])
            for ev in chosen:
                counts[ev.data["tags"][by]][0] += 1
                counts[ev.data["tags"][by]][1] += ev.error
            got = read_tags(hashes, to_s, window, by, metric)
            assert {v: [c, e] for v, (c, e, _) in got.items() if c} == dict(counts)


def test_tag_p95_is_within_the_coarse_sketch_error():
    hashes = write_tags(TAGGED, 500)
    for field in ("ms", "db_ms"):
        got = read_tags(hashes, T0 + 151, 151, "endpoint", "http", field=field)
        for value, (_, _, bins) in got.items():
            samples = sorted(
                ev.fields[field]
                for ev in TAGGED
                if ev.metric == "http"
                and ev.data.get("tags", {}).get("endpoint") == value
                and field in ev.fields
            )
            assert sum(bins.values()) == len(samples)  # the sketch counts every value once
            exact = float(np.quantile(samples, 0.95, method="inverted_cdf"))
            est = Sketch(bins).quantile(0.95)
            assert abs(est - exact) / exact <= TAG_ALPHA * (1 + 1e-9), (field, value, est, exact)
    # bytes is not latency-like: no per-tag sketch
    assert all(
        not bins for _, _, bins in read_tags(hashes, T0 + 151, 151, "endpoint", field="bytes").values()
    )


def test_minute_tag_bucket_equals_its_seconds():
    hashes = write_tags(TAGGED, 333)
    for start in (T0, T0 + 60):
        merged: dict = {}
        for sec in range(start, start + 60):
            for k, v in hashes.get((1, sec), {}).items():
                merged[k] = merged.get(k, 0) + v
        assert merged == hashes[(60, start)]


def test_tag_values_past_the_limit_count_as_other_consistently_within_a_minute():
    events = [
        validate(
            {
                "metric": "m",
                "ts": T0 + i * 0.5,
                "tags": {"user": f"u{i % 10}"},
                "status": "error" if i % 4 else "ok",
            },
            now=T0 + 200,
            retention_s=3600,
            future_tolerance_s=300,
        )
        for i in range(240)  # two minutes, ten users, in that order
    ]
    hashes = write_tags(events, batch=7, max_values=3)
    for minute in (T0, T0 + 60):
        got = TagStats("user")
        got.merge_hash(as_redis(hashes[(60, minute)]))
        assert sorted(got.values) == sorted(["u0", "u1", "u2", OTHER])  # the first three seen
        assert got.values[OTHER][0] == 120 * 7 // 10
        assert sum(v[0] for v in got.values.values()) == 120
        assert sum(v[1] for v in got.values.values()) == 90
        for sec in range(minute, minute + 60):
            second = TagStats("user")
            second.merge_hash(as_redis(hashes[(1, sec)]))
            assert set(second.values) <= {"u0", "u1", "u2", OTHER}


def test_admission_forgets_old_minutes():
    admission = TagAdmission(1)
    assert admission.admit(T0, "m", "t", "a") == "a"
    assert admission.admit(T0, "m", "t", "b") == OTHER
    assert admission.admit(T0, "m", "other_tag", "b") == "b"
    assert admission.admit(T0 + 60, "m", "t", "b") == "b"  # a new minute starts afresh
    admission.admit(T0 + 60 * 10, "m", "t", "x")
    assert admission.admit(T0, "m", "t", "b") == "b"  # that old minute was forgotten


@pytest.mark.parametrize("value", ["plain", "a|b", "100%", "%7C", "k=v", "ünï", "__other__", "", "|%|"])
def test_tag_value_names_round_trip(value):
    name = f"metric|@tag={encode_tag_value(value)}|c"
    assert name.count("|") == 2
    assert parse_tag_name(name) == ("metric", "tag", value, "c", None, None)
    assert parse_tag_name(f"metric|@tag={encode_tag_value(value)}|ms|b:p12".encode()) == (
        "metric",
        "tag",
        value,
        "b",
        "ms",
        "p12",
    )
    assert decode_tag_value(encode_tag_value(value)) == value
    assert encode_tag_value(value) != OTHER  # a real "__other__" never merges with the overflow


@pytest.mark.parametrize(
    "name", ["m|#c", "m|ms|c", "m|@t|c", "m|@=v|c", "m|@t=v|x", "m|@t=v|ms|b:zz", "|@t=v|c", "m|@t=v|ms|c"]
)
def test_foreign_names_are_not_tag_counters(name):
    assert parse_tag_name(name) is None


def test_coarse_bins_represent_their_values_within_tag_alpha():
    assert 0.05 < TAG_ALPHA < 0.052
    rng = np.random.default_rng(4)
    for x in [*rng.lognormal(0, 4, 2000), 1e-6, 0.5, 1.0, 1e9, *(-rng.lognormal(2, 1, 200))]:
        rep = bin_value(coarse_bin_key(bin_key(float(x))))
        assert abs(rep - x) / abs(x) <= TAG_ALPHA * (1 + 1e-9), x
    assert coarse_bin_key("z") == "z"


def test_latency_like_fields():
    assert [is_latency_field(f) for f in ("ms", "db_ms", "ms_total", "msg", "ums", "x_ms")] == [
        True,
        True,
        False,
        False,
        False,
        True,
    ]


def test_a_minute_held_from_each_batch_and_released_merged_lands_on_the_same_hashes():
    """MinuteHold: a minute's updates (main and per-tag) kept out of each batch's deltas and
    released together give the hashes the batches would have written themselves, and the other
    minutes and every second are written by the batches as before."""
    held_minute = T0 + 60
    own: tuple[dict, dict] = ({}, {})
    held: tuple[dict, dict] = ({}, {})
    holds = []
    admissions = (TagAdmission(3), TagAdmission(3))  # few values: some go to __other__
    for start in range(0, len(TAGGED), 97):
        plain, holding = (BatchAccumulator(3, admission=a) for a in admissions)
        for ev in TAGGED[start : start + 97]:
            plain.add(ev)
            holding.add(ev)
        hold = MinuteHold(held_minute)
        for hashes, deltas in zip(own, (plain.deltas(), plain.tag_deltas()), strict=True):
            for bucket, delta in deltas.items():
                apply_delta(hashes.setdefault(bucket, {}), delta)
        for hashes, deltas in zip(held, (holding.deltas(hold), holding.tag_deltas(hold)), strict=True):
            for bucket, delta in deltas.items():
                apply_delta(hashes.setdefault(bucket, {}), delta)
        holds.append(hold)
    assert all(hold for hold in holds[5:-5])
    for hashes in held:
        assert (60, held_minute) not in hashes
        assert (60, T0) in hashes and (1, held_minute) in hashes
    for hashes, deltas in zip(held, release(holds), strict=True):
        for bucket, delta in deltas.items():
            apply_delta(hashes.setdefault(bucket, {}), delta)
    for mine, theirs in zip(held, own, strict=True):
        assert mine.keys() == theirs.keys()
        for bucket, h in theirs.items():
            assert mine[bucket].keys() == h.keys(), bucket
            for name, value in h.items():  # sums added in another order: equal up to rounding
                assert math.isclose(mine[bucket][name], value, rel_tol=1e-12), (bucket, name)
