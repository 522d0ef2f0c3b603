"""generator.traffic (pure event model) and the pure policy of generator.pacing and generator.publisher."""

from __future__ import annotations

import itertools
import math
import re
import statistics
import time
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest

from generator import traffic
from generator.pacing import Pacer, sleep_until
from generator.publisher import MAX_DOUBLINGS, Generator, Summary
from generator.traffic import MIXED_MIX, ROUTES, TrafficModel, diurnal_factor, iso_utc

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
METRIC_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
ISO_NAIVE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$")


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def sanity_problems(event: dict) -> list[str]:
    """The wire contract, checked independently of the model's own code."""
    problems = []
    allowed = {"metric", "value", "ts", "tags", "source", "status", "id"}
    if not {"metric", "value", "ts"} <= event.keys():
        problems.append(f"missing keys: {event.keys()}")
    if event.keys() - allowed:
        problems.append(f"unexpected keys: {event.keys() - allowed}")
    if not (isinstance(event.get("metric"), str) and METRIC_RE.match(event["metric"])):
        problems.append(f"bad metric {event.get('metric')!r}")
    value = event.get("value")
    if isinstance(value, dict):
        if not value:
            problems.append("empty value")
        for k, v in value.items():
            if not isinstance(k, str) or not (_is_number(v) or isinstance(v, str | bool)):
                problems.append(f"bad value field {k!r}: {v!r}")
    elif not _is_number(value):
        problems.append(f"bad value {value!r}")
    ts = event.get("ts")
    if isinstance(ts, str):
        if not ISO_NAIVE_RE.match(ts):
            problems.append(f"bad ISO ts {ts!r}")
    elif not (_is_number(ts) and ts > 1e9):
        problems.append(f"bad ts {ts!r}")
    if "tags" in event:
        tags = event["tags"]
        if not isinstance(tags, dict) or len(tags) > 16:
            problems.append(f"bad tags {tags!r}")
        elif not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in tags.items()):
            problems.append(f"non-string tags {tags!r}")
    if "source" in event and not (isinstance(event["source"], str) and event["source"]):
        problems.append(f"bad source {event['source']!r}")
    if "status" in event and event["status"] not in ("ok", "error"):
        problems.append(f"bad status {event['status']!r}")
    if "id" in event and not (isinstance(event["id"], str) and event["id"]):
        problems.append(f"bad id {event['id']!r}")
    return problems


def http(events):
    return [e for e in events if e["metric"] == "http_request"]


def server_error_share(events) -> float:
    reqs = http(events)
    return sum(e["tags"]["status_code"].startswith("5") for e in reqs) / len(reqs)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- mixed profile ---------------------------------------------------------------------------------


def test_mixed_profile_mix_matches_configured_shares():
    model = TrafficModel("mixed", seed=7, burst_every_s=0)
    events = model.events(50_000, T0, T0 + 600)
    counts = Counter(e["metric"] for e in events)
    assert set(counts) == set(MIXED_MIX)
    for metric, permille in MIXED_MIX.items():
        # 0.01 absolute is > 4 standard deviations for every share at n=50k.
        assert counts[metric] / 50_000 == pytest.approx(permille / 1000, abs=0.01), metric
    assert counts["http_request"] > counts["page_views"] > counts["signups"]


def test_every_event_passes_the_wire_contract_including_during_incidents():
    # Short mean gap so this hour of simulated traffic contains plenty of incidents of both kinds.
    model = TrafficModel("mixed", seed=11, burst_every_s=30)
    events = model.events(50_000, T0, T0 + 3600)
    assert model.incidents_started >= 20
    bad = [(e, p) for e in events if (p := sanity_problems(e))]
    assert bad == []
    for e in events:
        assert e["source"] == "generator"
        assert isinstance(e["ts"], float)
        assert isinstance(e["tags"], dict)
        assert orjson.loads(orjson.dumps(e)) == e
    assert len({e["id"] for e in events}) == len(events)


def test_http_request_shape_and_status_follows_status_code():
    events = http(TrafficModel("mixed", seed=3, burst_every_s=0).events(20_000, T0, T0 + 60))
    endpoints = {r.endpoint for r in ROUTES}
    for e in events:
        assert set(e["value"]) == {"ms", "bytes"}
        assert e["value"]["ms"] > 0 and e["value"]["bytes"] >= 0
        assert set(e["tags"]) == {"endpoint", "method", "status_code", "region"}
        assert e["tags"]["endpoint"] in endpoints
        assert e["tags"]["method"] in {"GET", "POST", "PUT", "DELETE"}
        assert e["status"] == ("error" if e["tags"]["status_code"].startswith("5") else "ok")
    codes = Counter(e["tags"]["status_code"] for e in events)
    assert codes["200"] > len(events) * 0.7
    assert codes["404"] > 0 and codes["201"] > 0
    assert 0 < server_error_share(events) < 0.02


def test_other_mixed_metrics_have_the_documented_fields():
    events = TrafficModel("mixed", seed=5, burst_every_s=0).events(20_000, T0, T0 + 60)
    by_metric = {}
    for e in events:
        by_metric.setdefault(e["metric"], []).append(e)
    for e in by_metric["orders"]:
        assert set(e["value"]) == {"amount", "items", "status"} and e["value"]["amount"] > 0
        assert set(e["tags"]) == {"currency", "payment"}
    for e in by_metric["signups"]:
        assert e["value"]["plan"] in {"free", "pro", "enterprise"}
        assert isinstance(e["value"]["trial_days"], int)
    for e in by_metric["sensor"]:
        assert set(e["value"]) == {"temp_c", "humidity"} and set(e["tags"]) == {"device", "site"}
        assert 5 < e["value"]["temp_c"] < 40 and 0 <= e["value"]["humidity"] <= 100
    for e in by_metric["page_views"]:
        assert isinstance(e["value"]["count"], int) and e["value"]["count"] >= 1
    for e in by_metric["latency"]:
        assert set(e["value"]) == {"ms"} and e["value"]["ms"] > 0
    for e in by_metric["errors"]:
        assert e["value"]["code"] in {500, 502, 503, 504} and e["status"] == "error"
    plans = Counter(e["value"]["plan"] for e in by_metric["signups"])
    assert plans["free"] > plans["pro"] > plans["enterprise"]


def test_latency_is_log_normal_with_plausible_median_and_p95():
    events = http(TrafficModel("mixed", seed=9, burst_every_s=0).events(60_000, T0, T0 + 600))
    ok = [e["value"]["ms"] for e in events if e["tags"]["status_code"] in {"200", "201", "204"}]
    median, p95 = statistics.median(ok), percentile(ok, 0.95)
    assert 20 < median < 150
    assert 150 < p95 < 1000
    # One route in one region at one time of day: log(ms) should be normal with sigma ~0.55,
    # so mean ~= median of the logs, and p95/median ~= e^(1.645 * 0.55) ~= 2.47.
    one = [
        math.log(e["value"]["ms"])
        for e in events
        if e["tags"]["endpoint"] == "/api/products"
        and e["tags"]["region"] == "us-east-1"
        and e["tags"]["status_code"] == "200"
    ]
    assert len(one) > 2000
    assert statistics.stdev(one) == pytest.approx(traffic.LATENCY_SIGMA, rel=0.1)
    assert statistics.mean(one) == pytest.approx(statistics.median(one), abs=0.05)
    expected_median = 45.0 * diurnal_factor(T0 + 300)
    assert math.exp(statistics.median(one)) == pytest.approx(expected_median, rel=0.1)


def test_diurnal_wave_peaks_in_the_afternoon_utc():
    day = 86400 * 19675  # a midnight UTC
    assert diurnal_factor(day + 15 * 3600) == pytest.approx(1.3)
    assert diurnal_factor(day + 3 * 3600) == pytest.approx(0.7)
    peak = http(TrafficModel(seed=1, burst_every_s=0).events(20_000, day + 15 * 3600, day + 15 * 3600 + 60))
    trough = http(TrafficModel(seed=1, burst_every_s=0).events(20_000, day + 3 * 3600, day + 3 * 3600 + 60))
    ratio = statistics.median(e["value"]["ms"] for e in peak) / statistics.median(
        e["value"]["ms"] for e in trough
    )
    assert ratio == pytest.approx(1.3 / 0.7, rel=0.15)


def test_error_incident_raises_5xx_share_on_its_endpoint():
    model = TrafficModel("mixed", seed=21, burst_every_s=0)
    before = model.events(30_000, T0, T0 + 30)
    incident = model.force_incident("errors", T0 + 30, duration_s=30, endpoint="/api/search", error_rate=0.5)
    assert model.incident is incident and model.incident_at(T0 + 31) is incident
    during = model.events(30_000, T0 + 30, T0 + 59.9)
    after = model.events(30_000, T0 + 61, T0 + 90)
    assert model.incident is None

    def share_on(events, endpoint):
        reqs = [e for e in http(events) if e["tags"]["endpoint"] == endpoint]
        return sum(e["status"] == "error" for e in reqs) / len(reqs)

    assert share_on(before, "/api/search") < 0.03
    assert share_on(during, "/api/search") == pytest.approx(0.5, abs=0.06)
    assert share_on(during, "/api/products") < 0.03  # other endpoints unaffected
    assert share_on(after, "/api/search") < 0.03
    assert server_error_share(during) > 4 * server_error_share(before)
    # Services log more errors during the incident too.
    errors_before = sum(e["metric"] == "errors" for e in before)
    errors_during = sum(e["metric"] == "errors" for e in during)
    assert errors_during > 2 * errors_before


def test_latency_incident_multiplies_latency_on_its_endpoint():
    model = TrafficModel("mixed", seed=22, burst_every_s=0)
    before = model.events(20_000, T0, T0 + 20)
    model.force_incident("latency", T0 + 20, duration_s=20, endpoint="/api/cart", latency_factor=8.0)
    during = model.events(20_000, T0 + 20, T0 + 39.9)

    def median_ms(events, endpoint):
        return statistics.median(
            e["value"]["ms"]
            for e in http(events)
            if e["tags"]["endpoint"] == endpoint and e["status"] == "ok"
        )

    assert median_ms(during, "/api/cart") / median_ms(before, "/api/cart") == pytest.approx(8.0, rel=0.2)
    assert median_ms(during, "/api/products") / median_ms(before, "/api/products") == pytest.approx(
        1.0, rel=0.2
    )


def test_incidents_arrive_at_the_configured_mean_and_last_10_to_30s():
    model = TrafficModel("mixed", seed=4, burst_every_s=60)
    seen = []
    for i in range(20_000):  # 20k simulated seconds, one event each
        incident = model.incident_at(T0 + i)
        model.event(T0 + i)
        if incident is not None and (not seen or seen[-1] is not incident):
            seen.append(incident)
    # Mean cycle = 60 s gap + ~20 s incident -> ~250 incidents; allow wide statistical slack.
    assert 180 < len(seen) < 330
    assert {i.kind for i in seen} == {"errors", "latency"}
    for incident in seen:
        assert 10 <= incident.end - incident.start <= 30
        if incident.kind == "latency":
            assert 5 <= incident.latency_factor <= 10
        else:
            assert 0.25 <= incident.error_rate <= 0.6
    assert all(a.end <= b.start for a, b in itertools.pairwise(seen))


def test_burst_every_zero_disables_incidents():
    model = TrafficModel("mixed", seed=4, burst_every_s=0)
    model.events(10_000, T0, T0 + 86400)
    assert model.incidents_started == 0 and model.incident is None


def test_force_incident_rejects_unknown_kind_and_endpoint():
    model = TrafficModel(seed=1)
    with pytest.raises(ValueError, match="kind"):
        model.force_incident("fire", T0)
    with pytest.raises(ValueError, match="endpoint"):
        model.force_incident("errors", T0, endpoint="/nope")


# -- original profile ------------------------------------------------------------------------------

ORIGINAL_SHAPES = {
    "orders": {"amount": float, "status": str},
    "page_views": {"count": int},
    "signups": {"plan": str},
    "errors": {"code": int, "msg": str},
    "latency": {"ms": int},
}


def test_original_profile_has_exactly_the_original_shapes():
    model = TrafficModel("original", seed=2)
    events = model.events(10_000, T0, T0 + 100)
    assert Counter(e["metric"] for e in events).keys() == ORIGINAL_SHAPES.keys()
    for e in events:
        assert list(e) == ["metric", "value", "ts"]
        shape = ORIGINAL_SHAPES[e["metric"]]
        assert set(e["value"]) == set(shape)
        for field, kind in shape.items():
            assert type(e["value"][field]) is kind, (e, field)
        assert ISO_NAIVE_RE.match(e["ts"]), e["ts"]
        assert sanity_problems(e) == []
    values = {m: [e["value"] for e in events if e["metric"] == m] for m in ORIGINAL_SHAPES}
    assert {v["status"] for v in values["orders"]} == {"completed", "pending"}
    assert {v["plan"] for v in values["signups"]} == {"free", "pro", "enterprise"}
    assert {v["msg"] for v in values["errors"]} == {"simulated"}
    assert all(v["amount"] == round(v["amount"], 2) for v in values["orders"])


def test_original_ts_is_utc_without_zone():
    assert iso_utc(T0 + 0.123456) == "2023-11-14T22:13:20.123456"
    ts = TrafficModel("original", seed=1).event(T0 + 0.5)["ts"]
    parsed = datetime.fromisoformat(ts).replace(tzinfo=UTC)
    assert parsed.timestamp() == pytest.approx(T0 + 0.5, abs=1e-6)


def test_profile_can_switch_at_runtime():
    model = TrafficModel("mixed", seed=1)
    assert "source" in model.event(T0)
    model.profile = "original"
    assert set(model.event(T0 + 1)) == {"metric", "value", "ts"}
    with pytest.raises(ValueError, match="unknown profile"):
        model.profile = "hostile"
    with pytest.raises(ValueError, match="unknown profile"):
        TrafficModel("nope")


# -- determinism and speed -------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["mixed", "original"])
def test_same_seed_same_events(profile):
    a = TrafficModel(profile, seed=123, burst_every_s=20).events(5000, T0, T0 + 600)
    b = TrafficModel(profile, seed=123, burst_every_s=20).events(5000, T0, T0 + 600)
    c = TrafficModel(profile, seed=124, burst_every_s=20).events(5000, T0, T0 + 600)
    assert a == b
    assert a != c


def test_id_prefix_keeps_ids_unique_across_runs_with_the_same_seed():
    a = TrafficModel(seed=1, id_prefix="run1-").events(100, T0, T0 + 1)
    b = TrafficModel(seed=1, id_prefix="run2-").events(100, T0, T0 + 1)
    assert not {e["id"] for e in a} & {e["id"] for e in b}
    assert [e["value"] for e in a] == [e["value"] for e in b]


def test_events_spreads_timestamps_over_the_interval():
    events = TrafficModel(seed=1).events(4, T0, T0 + 1)
    assert [e["ts"] for e in events] == [T0 + 0.25, T0 + 0.5, T0 + 0.75, T0 + 1.0]
    assert TrafficModel(seed=1).events(0, T0, T0 + 1) == []


def test_generates_well_over_20k_events_per_second():
    model = TrafficModel("mixed", seed=1)
    best = math.inf
    for _ in range(3):  # best of three: a busy machine can steal any single run
        started = time.perf_counter()
        model.events(20_000, T0, T0 + 1)
        best = min(best, time.perf_counter() - started)
    assert best < 1.0, f"20k events took {best:.2f}s"


# -- rate math (generator.pacing) --------------------------------------------------------------------


def test_pacer_releases_events_on_schedule():
    pacer = Pacer(100.0, now=10.0)
    assert pacer.due(10.0) == 0
    assert pacer.next_due_at() == pytest.approx(10.01)
    assert pacer.due(10.5) == 50
    pacer.record(50)
    assert pacer.due(10.5) == 0
    assert pacer.due(10.509) == 0
    assert pacer.due(10.51) == 1


def test_pacer_does_not_drift_under_jittery_sleeps():
    # Simulate 1000 s of ticks that each oversleep by a varying amount.
    pacer = Pacer(2000.0, now=0.0)
    now, total = 0.0, 0
    for i in range(100_000):
        now += 0.01 + (i % 7) * 0.0003
        n = pacer.due(now)
        pacer.record(n)
        total += n
    assert total == math.floor(now * 2000.0)


def test_pacer_caps_batches_and_skips_a_backlog_instead_of_bursting():
    pacer = Pacer(1000.0, now=0.0, max_batch=100, max_lag_s=1.0)
    assert pacer.due(0.5) == 100  # 500 owed, one batch at a time
    pacer.record(100)
    assert pacer.due(0.5) == 100
    # A 10 s stall: 10k owed is far past the 1 s lag allowance, so it is dropped, not burst.
    assert pacer.due(10.0) == 0
    assert pacer.skipped == 9900
    assert pacer.due(10.1) == 100


def test_pacer_rate_change_and_reset_start_a_new_schedule():
    pacer = Pacer(10.0, now=0.0)
    pacer.record(pacer.due(5.0))
    pacer.set_rate(1000.0, now=5.0)
    assert pacer.due(5.0) == 0
    assert pacer.due(5.1) == 100
    pacer.reset(100.0)  # e.g. resume after a pause: no backlog from the pause
    assert pacer.due(100.0) == 0 and pacer.skipped == 0
    with pytest.raises(ValueError):
        Pacer(0.0, now=0.0)
    with pytest.raises(ValueError):
        pacer.set_rate(-1.0, now=0.0)


def test_sleep_until_batches_at_high_rates_and_waits_for_the_deadline_at_low_ones():
    # 20k/s: next event due in 50 us, but wait a tick after the last batch to fill a pipeline.
    assert sleep_until(now=1.0, next_due=1.00005, last_batch=1.0, tick_s=0.01) == pytest.approx(1.01)
    # 2/s: the deadline is later than a tick.
    assert sleep_until(now=1.0, next_due=1.5, last_batch=1.0, tick_s=0.01) == 1.5
    # Already behind: go now.
    assert sleep_until(now=1.0, next_due=0.9, last_batch=0.999, tick_s=0.01) == 1.0


def test_reconnect_backoff_doubles_and_is_capped():
    gen = Generator("redis://127.0.0.1:1", backoff_min_s=0.1, backoff_max_s=5.0)  # never connects
    try:
        delays = [gen.backoff.compute(i) for i in range(10)]
        assert delays[:6] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
        assert delays[6:] == [5.0] * 4
        assert gen.backoff.compute(MAX_DOUBLINGS) == 5.0  # the attempt count is clamped to this: no overflow
    finally:
        gen.close()


def test_summary_line_reports_count_rate_and_reconnects():
    line = Summary(published=1000, elapsed_s=4.0, reconnects=2, lost=0, skipped=0, target_rate=250.0).line()
    assert "published 1000 events" in line and "250.0/s" in line and "2 reconnects" in line
    assert "lost" not in line
    assert "7 lost" in Summary(10, 1.0, 1, 7, 0, 10.0).line()
