"""Trend slopes against numpy, trend classification, top-N ranking and the signal frame (pure)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend.analytics.replay import second_stats
from backend.analytics.signals import Frame
from backend.analytics.top import rank
from backend.analytics.trend import OnlineSlope, classify
from backend.core.layout import OTHER
from backend.core.sketch import Sketch

T0 = 1_773_835_200


# --- trend ---------------------------------------------------------------------------------------
def test_online_slope_matches_least_squares_even_on_large_x():
    rng = np.random.default_rng(2)
    x = T0 + np.arange(300, dtype=float)  # unix timestamps: naive sums would cancel badly
    y = 50 + 0.2 * (x - T0) + rng.normal(0, 5, x.size)
    fit = OnlineSlope()
    for a, b in zip(x, y, strict=True):
        fit.add(float(a), float(b))
    slope, intercept = np.polyfit(x - T0, y, 1)
    assert fit.slope == pytest.approx(slope, rel=1e-9)
    residuals = y - (slope * (x - T0) + intercept)
    se = math.sqrt(residuals @ residuals / (x.size - 2) / ((x - x.mean()) @ (x - x.mean())))
    assert fit.t_stat() == pytest.approx(slope / se, rel=1e-6)


def test_slope_is_undefined_without_spread():
    fit = OnlineSlope()
    assert fit.slope is None and fit.t_stat() is None
    fit.add(1.0, 5.0)
    fit.add(1.0, 7.0)
    assert fit.slope is None
    perfect = OnlineSlope()
    for i in range(5):
        perfect.add(float(i), 2.0 * i)
    assert perfect.t_stat() == math.inf


def series(fn, n: int = 300, noise: float = 0.0, seed: int = 1) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    return [(float(t), max(0.0, fn(t) + float(rng.normal(0, noise)))) for t in range(n)]


def test_rising_falling_and_stable():
    rising = classify(series(lambda t: 100 + 0.1 * t, noise=5), window_s=300)
    assert rising["trend"] == "rising"
    assert rising["slope_per_s"] == pytest.approx(0.1, rel=0.15)
    assert rising["relative_slope"] == pytest.approx(rising["slope_per_s"] / rising["mean"], rel=1e-4)
    assert rising["points"] == 300
    assert classify(series(lambda t: 100 - 0.1 * t, noise=5), window_s=300)["trend"] == "falling"
    # noise alone: the slope is never significant enough
    assert {classify(series(lambda t: 100, noise=10, seed=s), window_s=300)["trend"] for s in range(20)} == {
        "stable"
    }
    # a clear but small drift (3% of the mean over the window) is not a trend at the 10% default...
    small = series(lambda t: 100 + 0.01 * t, noise=0.5)
    assert classify(small, window_s=300)["trend"] == "stable"
    # ...and is one when asked for 2%
    assert classify(small, window_s=300, min_change=0.02)["trend"] == "rising"


def test_a_large_slope_that_noise_explains_is_not_a_trend():
    big_but_unclear = 0
    for seed in range(30):
        points = series(lambda t: 100, n=20, noise=30, seed=seed)
        out = classify(points, window_s=20)
        assert out["trend"] == "stable", seed
        big_but_unclear += abs(out["slope_per_s"]) * 20 >= 0.1 * out["mean"]
    assert big_but_unclear >= 5  # the size test alone would have called these trends


def test_no_traffic_is_stable_with_no_relative_slope():
    flat = classify([(float(t), 0.0) for t in range(60)], window_s=60)
    assert flat == {"trend": "stable", "slope_per_s": 0.0, "relative_slope": None, "mean": 0.0, "points": 60}
    assert classify([], window_s=60)["trend"] == "stable"


# --- top-N ----------------------------------------------------------------------------------------
def bins_of(values: list[float]) -> dict:
    s = Sketch()
    for v in values:
        s.add(v)
    return s.bins


VALUES = {
    "/a": [100, 1, bins_of([10.0] * 100)],
    "/b": [300, 30, bins_of([5.0] * 300)],
    "/c": [100, 7, bins_of([50.0] * 100)],
    "/d": [20, 0, {}],
    OTHER: [999, 500, bins_of([1000.0] * 999)],
}


def test_rank_by_count_with_ties_by_value_and_other_apart():
    out = rank(VALUES, order="count", n=3, window_s=10, with_p95=True)
    assert [r["value"] for r in out["top"]] == ["/b", "/a", "/c"]
    assert out["top"][0] == {
        "value": "/b",
        "count": 300,
        "errors": 30,
        "error_rate": 0.1,
        "rate_per_sec": 30.0,
        "p95": pytest.approx(5.0, rel=0.01),
    }
    assert out["other"]["count"] == 999  # never ranked, however big
    assert out["distinct"] == 4


def test_rank_by_errors_and_by_p95():
    by_errors = rank(VALUES, order="errors", n=10, window_s=10, with_p95=False)
    assert [r["value"] for r in by_errors["top"]] == ["/b", "/c", "/a"]  # /d has none
    assert "p95" not in by_errors["top"][0]
    by_p95 = rank(VALUES, order="p95", n=2, window_s=10, with_p95=False)
    assert [r["value"] for r in by_p95["top"]] == ["/c", "/a"]
    assert by_p95["top"][0]["p95"] == pytest.approx(50.0, rel=0.01)
    with pytest.raises(ValueError):
        rank(VALUES, order="name", n=1, window_s=1, with_p95=False)


# --- the frame the rules and anomalies read ----------------------------------------------------------
def test_frame_merges_seconds_and_answers_signals():
    seconds = []
    for i in range(3):
        events = [
            {"metric": "api", "value": {"ms": float(10 * (i + 1) + j), "bytes": 1}, "ts": T0 + i + j / 100}
            for j in range(10)
        ]
        events[0]["status"] = "error"
        seconds.append(second_stats(events, now=T0 + 3).get(T0 + i, {}))
    frame = Frame(seconds, 3)
    all_ms = sorted(float(10 * (i + 1) + j) for i in range(3) for j in range(10))
    assert frame.value("api", "rate") == 10.0
    assert frame.value("api", "error_rate") == pytest.approx(0.1)
    assert frame.value("api", "avg", "ms") == pytest.approx(sum(all_ms) / 30)
    assert frame.value("api", "min", "ms") == 10.0 and frame.value("api", "max", "ms") == 39.0
    exact = float(np.quantile(all_ms, 0.95, method="inverted_cdf"))
    assert abs(frame.value("api", "p95", "ms") - exact) / exact <= 0.01
    assert frame.value("api", "p95", "nope") is None
    assert frame.value("other", "rate") == 0.0
    assert frame.value("other", "error_rate") is None
    assert frame.latency_fields("api") == ["ms"]
    with pytest.raises(ValueError):
        frame.value("api", "median", "ms")
