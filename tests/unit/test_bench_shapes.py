"""The benchmark's event shapes and its realtime target rows."""

import time

import orjson
import pytest

from backend.core.events import parse_event
from bench.events import SHAPES, Templates
from bench.report import target_rows


@pytest.mark.parametrize("shape", SHAPES)
def test_every_template_is_an_event_the_worker_accepts(shape):
    now = time.time()
    t = Templates(seed=3, n=500, shape=shape)
    for i in range(500):
        raw = t.encode(i, now + i / 1000, f"x{i}", now)
        ev = parse_event(raw, now=now, retention_s=3600, future_tolerance_s=60, max_bytes=65536)
        assert ev.data["id"] == f"x{i}"
        assert abs(ev.ts - (now + i / 1000)) < 2e-6


def test_original_shape_is_the_original_producers_event():
    now = 1_800_000_000.25
    t = Templates(seed=3, n=200, shape="original")
    events = [orjson.loads(t.encode(i, now, "a", None)) for i in range(200)]
    assert {e["metric"] for e in events} == {"orders", "page_views", "signups", "errors", "latency"}
    for e in events:
        assert set(e) == {"metric", "value", "ts", "id"}
        assert isinstance(e["value"], dict)
        assert e["ts"] == "2027-01-15T08:00:00.250000"  # ISO-8601 without a zone, as it published
    mixed = orjson.loads(Templates(seed=3, n=10).encode(0, now, "a", None))
    assert "tags" in mixed and mixed["ts"] == now


def _run(label, p50, p99, lost=0, **extra):
    return dict(
        label=label,
        p50_ms=p50,
        p99_ms=p99,
        lost=lost,
        duplicates=0,
        dropped_by_server=0,
        client_cpu_pct=[10.0, 11.0],
        **extra,
    )


def test_realtime_targets_are_judged_from_the_runs():
    runs = [
        _run("batch-1k", 2.0, 9.0),
        _run("batch-20k", 30.0, 120.0),  # p99 over 100
        _run("batch-40k-original", 30.0, 60.0, shape="original"),
        _run("event-2k", 3.0, 8.0, lost=5),  # lost events
        _run("batch-1k-stalled", 2.0, 9.5, stalled_dropped_after_s=8.1),
    ]
    rows = {r["target"].split(":")[0]: r for r in target_rows({"realtime": {"runs": runs}})}
    assert rows["1,000 events/s to 50 batch clients"]["met"] is True
    assert rows["20,000 events/s to 50 batch clients"]["met"] is False
    assert rows["40,000 events/s (original's events)"]["met"] is True
    assert "original events" in rows["40,000 events/s (original's events)"]["note"]
    assert rows["2,000 events/s to 50 per-event clients"]["met"] is False
    assert rows["a stalled client is dropped within 10 s"]["met"] is True
    assert "40,000 events/s to 50 batch clients" not in rows  # not run, not judged
