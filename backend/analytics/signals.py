"""What rules and anomaly detection look at: per-metric values over a short trailing window.

The evaluator reads per-second buckets and keeps the last few (``ANALYTICS_WINDOW_S``) as
``WindowStats.metrics`` dicts (metric -> MetricState, backend/core/state.py). A Frame merges them
once and answers any signal of any metric:

    rate              events per second over the window
    error_rate        errors / events (None without events)
    avg min max       of a measured field (None without values)
    p50 p95 p99       of a measured field, from the merged sketch, clamped to [min, max]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from backend.core.layout import is_latency_field
from backend.core.state import PERCENTILES, MetricState, merge_states

COUNT_SIGNALS = ("rate", "error_rate")
FIELD_SIGNALS = ("avg", "min", "max", *(label for label, _ in PERCENTILES))
SIGNALS = COUNT_SIGNALS + FIELD_SIGNALS
_QUANTILE = dict(PERCENTILES)


def signal_label(signal: str, field: str | None) -> str:
    """``p95(ms)``, ``error_rate``: how a signal is written in rules and messages."""
    return f"{signal}({field})" if field is not None else signal


class Frame:
    """Merged per-metric state of `seconds` consecutive per-second buckets."""

    __slots__ = ("_cache", "metrics", "seconds")

    def __init__(self, per_second: Iterable[dict[str, MetricState]], seconds: int):
        if seconds <= 0:
            raise ValueError("seconds must be > 0")
        self.seconds = seconds
        self.metrics: dict[str, MetricState] = {}
        self._cache: dict[tuple, float | None] = {}
        for stats in per_second:
            merge_states(self.metrics, stats)

    def count(self, metric: str) -> int:
        m = self.metrics.get(metric)
        return m.count if m is not None else 0

    def field_count(self, metric: str, field: str) -> int:
        m = self.metrics.get(metric)
        f = m.fields.get(field) if m is not None else None
        return f.count if f is not None else 0

    def fields(self, metric: str) -> list[str]:
        m = self.metrics.get(metric)
        return sorted(m.fields) if m is not None else []

    def latency_fields(self, metric: str) -> list[str]:
        return [f for f in self.fields(metric) if is_latency_field(f)]

    def value(self, metric: str, signal: str, field: str | None = None) -> float | None:
        key = (metric, signal, field)
        if key in self._cache:
            return self._cache[key]
        value = self._compute(metric, signal, field)
        self._cache[key] = value
        return value

    def _compute(self, metric: str, signal: str, field: str | None) -> float | None:
        m = self.metrics.get(metric)
        if signal == "rate":
            return (m.count if m is not None else 0) / self.seconds
        if m is None:
            return None
        if signal == "error_rate":
            return m.errors / m.count if m.count else None
        if signal not in FIELD_SIGNALS:
            raise ValueError(f"unknown signal {signal!r}")
        f = m.fields.get(field) if field is not None else None
        if f is None or not f.count:
            return None
        if signal == "avg":
            return f.sum / f.count
        if signal == "min":
            return f.min
        if signal == "max":
            return f.max
        return f.quantiles((_QUANTILE[signal],))[0]


class CountHistory:
    """Events and errors per metric for each of the last `max_s` seconds, for rules whose
    rate/error_rate looks further back than the analytics window (the built-in error rate: 60 s).
    Only counts are kept, so a long window costs O(seconds) additions, never a sketch merge."""

    __slots__ = ("_cache", "seconds")

    def __init__(self, max_s: int):
        self.seconds: deque[dict[str, tuple[int, int]]] = deque(maxlen=max(1, max_s))
        self._cache: dict[tuple, tuple[int, int]] = {}

    def push(self, stats: dict[str, MetricState]) -> None:
        """One second's stats (metric -> MetricState), oldest first."""
        self.seconds.append({m: (v.count, v.errors) for m, v in stats.items()})
        self._cache.clear()

    def totals(self, metric: str, window_s: int, skip_s: int = 0) -> tuple[int, int]:
        """(events, errors) over `window_s` seconds, ending `skip_s` seconds before the newest."""
        key = (metric, window_s, skip_s)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        n = len(self.seconds)
        count = errors = 0
        for i in range(max(0, n - skip_s - window_s), max(0, n - skip_s)):
            c = self.seconds[i].get(metric)
            if c is not None:
                count += c[0]
                errors += c[1]
        self._cache[key] = (count, errors)
        return count, errors

    def value(self, metric: str, signal: str, window_s: int) -> float | None:
        count, errors = self.totals(metric, window_s)
        if signal == "rate":
            return count / window_s
        if signal == "error_rate":
            return errors / count if count else None
        raise ValueError(f"{signal!r} has no long-window form")
