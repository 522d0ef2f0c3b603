"""Breakdown series names and the per-tag hash read into them."""

from __future__ import annotations

import numpy as np

from backend.analytics.breakdown import is_series, series_name, split_series, tag_series
from backend.analytics.signals import Frame
from backend.core.aggregate import TAG_ALPHA, BatchAccumulator, TagAdmission, apply_delta
from backend.core.events import validate
from backend.core.layout import OTHER

T = 1_773_835_200


def test_names_round_trip_and_never_hold_a_pipe():
    for value in ("/api/orders", "a|b", "50%", "x=y", "[z]"):
        name = series_name("http_request", "endpoint", value)
        assert is_series(name) and "|" not in name
        assert split_series(name) == ("http_request", {"endpoint": value})
    assert split_series("http_request") == ("http_request", None)
    assert not is_series("http_request")


def tag_hash(events: list[dict], limit: int = 100) -> dict:
    acc = BatchAccumulator(limit, admission=TagAdmission(limit))
    for obj in events:
        acc.add(validate({"ts": T + 0.5, **obj}, now=T + 1, retention_s=10**9, future_tolerance_s=10))
    h: dict = {}
    apply_delta(h, acc.tag_deltas()[(1, T)])
    return {k.encode(): str(v).encode() for k, v in h.items()}  # as HGETALL returns it


def test_tag_series_counts_events_errors_and_latency_per_value():
    events = [
        {"metric": "api", "value": {"ms": 10.0 * (i + 1)}, "tags": {"endpoint": "/a", "region": "eu"}}
        for i in range(10)
    ] + [{"metric": "api", "value": {"ms": 500.0}, "tags": {"endpoint": "/b|c"}, "status": "error"}] * 4
    got = tag_series(tag_hash(events), ["endpoint"])
    a, b = series_name("api", "endpoint", "/a"), series_name("api", "endpoint", "/b|c")
    assert set(got) == {a, b}  # region is not asked for
    assert (got[a].count, got[a].errors) == (10, 0) and (got[b].count, got[b].errors) == (4, 4)
    assert got[a].fields["ms"].count == 10 and sum(got[a].fields["ms"].bins.values()) == 10
    frame = Frame([got], 1)
    assert frame.value(b, "error_rate") == 1.0
    exact = float(
        np.quantile([10.0 * (i + 1) for i in range(10)], 0.95, method="inverted_cdf")
    )  # nearest rank
    assert abs(frame.value(a, "p95", "ms") - exact) / exact <= TAG_ALPHA  # the coarse per-tag sketch


def test_values_past_the_limit_are_not_a_series():
    events = [{"metric": "api", "tags": {"user": f"u{i}"}} for i in range(5)]
    got = tag_series(tag_hash(events, limit=2), ["user"])
    assert len(got) == 2 and not any(OTHER in name for name in got)
    assert tag_series(tag_hash(events), []) == {}
