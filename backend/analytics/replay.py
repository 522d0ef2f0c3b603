"""Run the engine over events without Redis: validate, bucket per second, evaluate each second.

The same path the evaluator takes (BatchAccumulator deltas -> per-second hashes -> WindowStats ->
Frame over the trailing window -> Engine.step), minus the I/O. Used to measure false alarms and
detection delay on simulated traffic (tests/unit/test_analytics_anomaly.py) and handy to try
settings on a recorded stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from backend.analytics.breakdown import is_series, tag_series
from backend.analytics.engine import Engine, Transition
from backend.analytics.signals import CountHistory, Frame
from backend.config import DEFAULTS
from backend.core.aggregate import BatchAccumulator, TagAdmission, apply_delta
from backend.core.events import validate
from backend.core.window import WindowStats

TAG_VALUES = DEFAULTS.TOP_MAX_TAG_VALUES  # the declared default: replay reads no environment


def second_stats(events: Iterable[dict], now: float, tags: Iterable[str] = ()) -> dict[int, dict]:
    """Per-second WindowStats metrics of `events` (wire dicts), keyed by second, plus the
    breakdown series of `tags` (see breakdown.py) as the evaluator adds them."""
    tags = tuple(tags)
    acc = BatchAccumulator(TAG_VALUES if tags else 0, admission=TagAdmission(TAG_VALUES) if tags else None)
    for obj in events:
        acc.add(validate(obj, now=now, retention_s=10**9, future_tolerance_s=10**9))
    out: dict[int, dict] = {}
    for (res, start), delta in acc.deltas().items():
        if res == 1:
            out[start] = WindowStats.from_hashes([_hash(delta)]).metrics
    if tags:
        for (res, start), delta in acc.tag_deltas().items():
            if res == 1:
                out.setdefault(start, {}).update(tag_series(_hash(delta), tags))
    return out


def _hash(delta) -> dict:
    h: dict = {}
    apply_delta(h, delta)
    return h


def replay(
    engine: Engine,
    seconds: Iterable[tuple[int, list[dict]]],
    window_s: int,
    recent: deque[dict] | None = None,
    tags: Iterable[str] = (),
    history: CountHistory | None = None,
) -> list[tuple[float, Transition]]:
    """Feed (second, that second's events) in order; returns every transition with its time.

    A second is evaluated as the window of the `window_s` seconds ending with it, at time
    second + 1 (when it is over). Pass the same `recent` deque to continue a replay."""
    if recent is None:
        recent = deque(maxlen=window_s)
    out = []
    for sec, events in seconds:
        stats = second_stats(events, now=sec + 1, tags=tags).get(sec, {})
        recent.append(stats)
        if history is not None:  # like the evaluator: counts of the plain metrics only
            history.push({m: v for m, v in stats.items() if not is_series(m)})
        t = float(sec + 1)
        for tr in engine.step(t, Frame(recent, window_s), history):
            out.append((t, tr))
    return out
