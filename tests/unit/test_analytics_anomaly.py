"""EWMA baselines, z-scores, hysteresis and frozen baselines; false alarms and detection delay on
the generator's traffic model (pure: simulated time, no Redis)."""

from __future__ import annotations

import math
import random
from collections import deque

import numpy as np
import pytest

from backend.analytics.anomaly import ERROR_RATE, P95, RATE, AnomalySettings, Ewma, Watch
from backend.analytics.breakdown import series_name
from backend.analytics.engine import Engine, anomaly_key
from backend.analytics.replay import replay
from backend.analytics.settings import DEFAULTS, AnalyticsSettings
from generator.traffic import TrafficModel

T0 = 1_773_835_200
RATE_PER_S = 200  # the generator's default rate


# --- EWMA ----------------------------------------------------------------------------------------
def test_ewma_is_the_running_mean_and_variance_until_it_has_span_values():
    rng = np.random.default_rng(1)
    xs = rng.normal(10, 2, 50)
    e = Ewma(span=299)  # alpha = 1/150: running averages for the first 150 values
    for i, x in enumerate(xs, start=1):
        e.update(float(x))
        assert e.mean == pytest.approx(xs[:i].mean(), rel=1e-12)
        assert e.var == pytest.approx(xs[:i].var(), rel=1e-9, abs=1e-12)


def test_ewma_forgets_geometrically_after_that():
    e = Ewma(span=9)  # alpha 0.2
    for _ in range(100):
        e.update(0.0)
    for k in range(1, 20):
        e.update(10.0)
        assert e.mean == pytest.approx(10.0 * (1 - 0.8**k), rel=1e-12)
    e.reset()
    assert (e.n, e.mean, e.var) == (0, 0.0, 0.0)


def test_settings_defaults_agree():
    assert AnalyticsSettings.from_config({}).anomaly == AnomalySettings()
    with pytest.raises(ValueError):
        AnomalySettings(warning_z=5, critical_z=4)
    with pytest.raises(ValueError):
        AnomalySettings(clear_z=5, warning_z=4)


# --- one watch, on a controlled clock --------------------------------------------------------------
SETTINGS = AnomalySettings(min_history_s=60, for_s=2, clear_s=5, max_open_s=300)


def warmed_watch(spec=P95, settings=SETTINGS, n: int = 200, seed: int = 3) -> tuple[Watch, float]:
    """A watch fed `n` values (t = 0..n-1) of a p95 around 100 ms with 10% noise."""
    rng = random.Random(seed)
    w = Watch(spec, settings)
    for t in range(n):
        assert w.observe(float(t), 100.0 * math.exp(rng.gauss(0, 0.1)), 500) is None
    return w, float(n)


def value_at(w: Watch, z: float) -> float:
    """The p95 whose z-score against the watch's baseline is `z`."""
    sd = max(math.sqrt(w.baseline.var), 0.05)
    return math.expm1(w.baseline.mean + z * sd)


def test_nothing_is_judged_before_min_history():
    w = Watch(P95, SETTINGS)
    for t in range(59):
        assert w.observe(float(t), 100.0 + t % 3, 500) is None
    assert w.observe(59.0, 1e6, 500) is None and w.z is None  # 59 values: not yet
    assert w.observe(60.0, 100.0, 500) is None and w.z is not None


def test_open_after_for_s_escalate_freeze_and_close_after_clear_s():
    w, t = warmed_watch()
    mean, n = w.baseline.mean, w.baseline.n
    events = [w.observe(t + i, value_at(w, 5.0), 500) for i in range(3)]
    assert events == [None, None, "open"]  # anomalous at t, t+1, t+2: for_s = 2
    assert (w.severity, w.opened_at) == ("warning", t + 2)
    assert w.z == pytest.approx(5.0)
    assert w.observe(t + 3, value_at(w, 7.0), 500) == "escalate"
    assert w.severity == "critical"
    # between clear_z and warning_z: stays open however long it lasts
    assert all(w.observe(t + 4 + i, value_at(w, 3.0), 500) is None for i in range(30))
    assert w.open
    # normal again from t+34: closes clear_s = 5 s later, at t+39
    closes = [w.observe(t + 34 + i, value_at(w, 0.0), 500) for i in range(6)]
    assert closes == [None] * 5 + ["close"]
    assert not w.open and w.severity is None
    # the baseline never learned any of it
    assert (w.baseline.mean, w.baseline.n) == (mean, n)
    w.observe(t + 40, value_at(w, 0.0), 500)
    assert w.baseline.n == n + 1  # and learns again once closed


def test_values_far_off_are_learned_as_if_at_three_sd():
    quiet = AnomalySettings(min_history_s=60, warning_z=50, critical_z=60)  # never alerts here
    w, t = warmed_watch(settings=quiet)
    b = w.baseline
    mean, sd, alpha = b.mean, math.sqrt(b.var), b.alpha
    w.observe(t, value_at(w, 10.0), 500)
    assert w.z == pytest.approx(10.0)
    assert b.mean == pytest.approx(mean + alpha * 3.0 * sd, rel=1e-9)  # not alpha * 10 sd


def test_a_blip_shorter_than_for_s_opens_nothing_and_is_not_learned():
    w, t = warmed_watch()
    n = w.baseline.n
    assert w.observe(t, value_at(w, 9.0), 500) is None
    assert w.observe(t + 1, value_at(w, 9.0), 500) is None
    assert w.observe(t + 2, value_at(w, 0.0), 500) is None
    assert not w.open
    assert w.baseline.n == n + 1  # only the normal value went into the baseline


def test_only_the_bad_direction_alerts():
    w, t = warmed_watch()
    assert all(w.observe(t + i, value_at(w, -9.0), 500) is None for i in range(5))  # faster: fine
    rate = Watch(RATE, SETTINGS)
    for i in range(100):
        rate.observe(float(i), 100.0 + (i % 5 - 2), 500)
    assert [rate.observe(100.0 + i, 20.0, 100) for i in range(3)] == [None, None, "open"]
    assert rate.z < -4  # a rate may alert both ways
    errors = Watch(ERROR_RATE, SETTINGS)
    for i in range(100):
        errors.observe(float(i), 0.05, 1000)
    assert all(errors.observe(100.0 + i, 0.0, 1000) is None for i in range(5))  # fewer errors: fine
    assert [errors.observe(105.0 + i, 0.2, 1000) for i in range(3)] == [None, None, "open"]


def poisson(rng: np.random.Generator, lam: float, n: int) -> list[int]:
    return [int(x) for x in rng.poisson(lam, n)]


def test_small_counts_are_judged_on_a_calibrated_scale():
    """5 events per 5 s window on average: 15 in a window happens (p ~ 2e-4) and must not alert;
    on a raw scale it would be 4.5 sd. 25 (p ~ 1e-9) must."""
    settings = AnomalySettings(min_history_s=60, window_s=5)
    rate = Watch(RATE, settings)
    for t, count in enumerate(poisson(np.random.default_rng(5), 5, 600)):
        rate.observe(float(t), count / 5, count)
    assert rate.zscore(15 / 5, 15) < 4 < rate.zscore(25 / 5, 25)
    errors = Watch(ERROR_RATE, settings)  # 100 events a window, 2% errors
    for t, count in enumerate(poisson(np.random.default_rng(6), 2, 600)):
        errors.observe(float(t), count / 100, 100)
    assert errors.zscore(8 / 100, 100) < 4 < errors.zscore(15 / 100, 100)


def test_too_few_events_or_no_data_is_never_an_alert_and_counts_as_normal():
    w, t = warmed_watch()
    assert all(w.observe(t + i, 1e6, 5) is None for i in range(5))  # 5 < min_events
    for i in range(3):
        w.observe(t + 5 + i, value_at(w, 8.0), 500)
    assert w.open
    closes = [w.observe(t + 8 + i, None, 0) for i in range(6)]
    assert closes == [None] * 5 + ["close"]


def test_a_lasting_change_becomes_the_new_normal_after_max_open_s():
    w, t = warmed_watch()
    high = value_at(w, 8.0)
    events = [w.observe(t + i, high, 500) for i in range(400)]
    assert events[2] == "open"
    assert events[302] == "rebaseline"  # open at t+2, max_open_s 300
    assert events.count("open") == 1  # and the new level is learned, not re-alerted
    assert w.baseline_value() == pytest.approx(high, rel=1e-6)


# --- the engine on the generator's traffic ----------------------------------------------------------
def traffic(seed: int, seconds: int, incident: tuple | None = None):
    """(second, events) of the mixed profile at RATE_PER_S, incidents off unless forced."""
    model = TrafficModel("mixed", seed=seed, burst_every_s=0)
    for i in range(seconds):
        sec = T0 + i
        if incident is not None and i == incident[0]:
            kind, endpoint, strength, duration = incident[1:]
            kw = {"latency_factor": strength} if kind == "latency" else {"error_rate": strength}
            model.force_incident(kind, sec, duration_s=duration, endpoint=endpoint, **kw)
        yield sec, model.events(RATE_PER_S, sec, sec + 1 - 1e-6)


def default_engine() -> Engine:
    s = AnalyticsSettings.from_config({})
    return Engine(s.anomaly, clear_s=s.clear_s)


@pytest.mark.parametrize("seed", [11, 12])
def test_no_false_alarms_in_ten_minutes_of_normal_traffic(seed):
    """Two minutes to learn baselines, then ten minutes judged: not one alert."""
    engine = default_engine()
    transitions = replay(engine, traffic(seed, 120 + 600), window_s=DEFAULTS["ANALYTICS_WINDOW_S"])
    assert [(t - T0, tr.action, tr.key) for t, tr in transitions] == []
    judged = {k for k, w in engine.watches.items() if w.baseline.n >= engine.settings.min_history_s}
    # signups (3/s) has fewer than ANOMALY_MIN_EVENTS (20) per 5 s window: its error rate is not judged
    busy = ("http_request", "page_views", "sensor", "latency", "orders", "errors")
    assert judged == {anomaly_key(m, "rate", None) for m in (*busy, "signups")} | {
        anomaly_key(m, "error_rate", None) for m in busy
    } | {anomaly_key(m, "p95", "ms") for m in ("http_request", "latency")}


@pytest.mark.parametrize(
    ("incident", "expected_key"),
    [
        (("latency", "/api/search", 6.0, 20.0), anomaly_key("http_request", "p95", "ms")),
        (("errors", "/api/products", 0.4, 20.0), anomaly_key("http_request", "error_rate", None)),
    ],
)
def test_incidents_open_an_alert_within_seconds_and_close_after(incident, expected_key):
    start = 300
    engine = default_engine()
    seconds = traffic(5, start + 60, (start, *incident))
    recent: deque = deque(maxlen=5)
    before = [seconds.__next__() for _ in range(start)]
    assert replay(engine, before, window_s=5, recent=recent) == []
    watch = engine.watches[expected_key]
    baseline = watch.baseline.mean
    transitions = replay(engine, seconds, window_s=5, recent=recent)
    events = [(t - T0 - start, tr.action, tr.key) for t, tr in transitions]
    opened = {key: dt for dt, action, key in events if action == "open"}
    closed = {key: dt for dt, action, key in events if action == "close"}
    assert expected_key in opened
    # the incident starts at second `start`; its first second is over at dt = 1
    assert opened[expected_key] <= 5, events
    # it ends at dt = 20; the 5 s window drains by 25, then ALERT_CLEAR_S (10) of normal
    assert 20 < closed[expected_key] <= 20 + 5 + 10 + 3, events
    assert set(closed) == set(opened)  # everything that opened closed again
    # the incident did not become the baseline: its level is far away, the baseline barely moved
    open_tr = next(tr for _, tr in transitions if tr.key == expected_key and tr.action == "open")
    level = watch.spec.transform(open_tr.alert["value"], 10**4, 5)
    assert abs(watch.baseline.mean - baseline) < 0.1 * abs(level - baseline)


# --- breakdown series: one tag value's error rate and p95 ---------------------------------------------
def series_key(endpoint: str, signal: str, fname: str | None = None) -> str:
    return anomaly_key(series_name("http_request", "endpoint", endpoint), signal, fname)


@pytest.mark.parametrize("seed", [11, 12])
def test_no_false_alarms_in_ten_minutes_with_endpoint_breakdowns(seed):
    engine = default_engine()
    transitions = replay(engine, traffic(seed, 120 + 600), window_s=5, tags=("endpoint",))
    assert [(t - T0, tr.action, tr.key) for t, tr in transitions] == []
    judged = {k for k, w in engine.watches.items() if w.baseline.n >= engine.settings.min_history_s}
    assert series_key("/api/products", "error_rate") in judged
    assert series_key("/api/products", "p95", "ms") in judged
    assert not any(k.startswith("anomaly|http_request[") and "|rate|" in k for k in engine.watches)


@pytest.mark.parametrize(
    ("incident", "signal", "fname"),
    [
        (("errors", "/api/orders", 0.3, 20.0), "error_rate", None),
        (("latency", "/api/users/me", 5.0, 20.0), "p95", "ms"),
    ],
)
def test_an_incident_on_a_small_endpoint_is_caught_by_its_breakdown(incident, signal, fname):
    """scripts/alert_quality.py found these two go unnoticed by the per-metric watches: they
    barely move the error rate or p95 of all requests."""
    start = 300
    seconds = traffic(5, start + 60, (start, *incident))
    before = [next(seconds) for _ in range(start)]
    rest = list(seconds)
    plain, broken_down = default_engine(), default_engine()
    plain_recent, broken_recent = deque(maxlen=5), deque(maxlen=5)
    assert replay(plain, before, window_s=5, recent=plain_recent) == []
    assert replay(broken_down, before, window_s=5, recent=broken_recent, tags=("endpoint",)) == []
    # (the generator's incidents also touch the `errors` and `latency` metrics, which may alert)
    plain_http = [
        tr
        for _, tr in replay(plain, rest, window_s=5, recent=plain_recent)
        if tr.action == "open" and tr.alert["metric"] == "http_request"
    ]
    assert plain_http == []
    transitions = replay(broken_down, rest, window_s=5, recent=broken_recent, tags=("endpoint",))
    transitions = [(t, tr) for t, tr in transitions if tr.key.startswith("anomaly|http_request")]
    expected = series_key(incident[1], signal, fname)
    opened = [(t - T0 - start, tr) for t, tr in transitions if tr.action == "open"]
    # only that endpoint's series open (an error incident's 504s also lift its p95: 5-30 s each)
    series = series_name("http_request", "endpoint", incident[1])
    assert expected in [tr.key for _, tr in opened]
    assert all(tr.alert["tags"] == {"endpoint": incident[1]} for _, tr in opened), opened
    dt, tr = next((dt, tr) for dt, tr in opened if tr.key == expected)
    assert dt <= 6
    assert tr.alert["metric"] == "http_request" and f"{series} " in tr.alert["message"]
    assert {t2.key for _, t2 in transitions if t2.action == "close"} == {tr.key for _, tr in opened}
