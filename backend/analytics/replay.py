"""Run the engine over events without Redis: validate, bucket per second, evaluate each second.

The same path the evaluator takes (BatchAccumulator deltas -> per-second hashes -> WindowStats ->
Frame over the trailing window -> Engine.step), minus the I/O. Used to measure false alarms and
detection delay on simulated traffic (tests/unit/test_analytics_anomaly.py) and handy to try
settings on a recorded stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from backend.analytics.engine import Engine, Transition
from backend.analytics.signals import Frame
from backend.core.aggregate import BatchAccumulator, WindowStats, apply_delta
from backend.core.events import validate


def second_stats(events: Iterable[dict], now: float) -> dict[int, dict]:
    """Per-second WindowStats metrics of `events` (wire dicts), keyed by second."""
    acc = BatchAccumulator()
    for obj in events:
        acc.add(validate(obj, now=now, retention_s=10**9, future_tolerance_s=10**9))
    out: dict[int, dict] = {}
    for (res, start), delta in acc.deltas().items():
        if res != 1:
            continue
        h: dict = {}
        apply_delta(h, delta)
        out[start] = WindowStats.from_hashes([h]).metrics
    return out


def replay(
    engine: Engine,
    seconds: Iterable[tuple[int, list[dict]]],
    window_s: int,
    recent: deque[dict] | None = None,
) -> list[tuple[float, Transition]]:
    """Feed (second, that second's events) in order; returns every transition with its time.

    A second is evaluated as the window of the `window_s` seconds ending with it, at time
    second + 1 (when it is over). Pass the same `recent` deque to continue a replay."""
    if recent is None:
        recent = deque(maxlen=window_s)
    out = []
    for sec, events in seconds:
        recent.append(second_stats(events, now=sec + 1).get(sec, {}))
        t = float(sec + 1)
        for tr in engine.step(t, Frame(recent, window_s)):
            out.append((t, tr))
    return out
