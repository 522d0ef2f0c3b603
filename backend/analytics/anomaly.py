"""Anomaly detection: an EWMA baseline per (metric, signal, field) and a z-score against it.

Every second the evaluator hands each watched signal's value over the trailing window to its
Watch. The watch keeps an exponentially weighted mean and variance (span ``span_s``; early on,
while fewer than ``span_s`` values have been seen, plain running averages, so the variance is not
underestimated right after start). Once ``min_history_s`` values are in, the z-score of a new
value is ``(x - mean) / sd``, with sd floored by the signal's sampling noise so a series that
happened to be flat cannot make a tiny wobble look huge.

Watched per metric (see WATCHED): the event rate (both directions), the error rate (up) and the
p95 of latency-like fields ``ms``/``*_ms`` (up, on log1p(ms): latency varies multiplicatively).

    |z| >= warning_z   opens an alert (severity warning, critical at >= critical_z; an open alert
                       escalates to critical, never back)
    |z| <  clear_z     for clear_s seconds closes it (between the two: stays as it is)

While an alert is open (or pending) the baseline is frozen, so an incident never becomes the new
normal, and values beyond WINSOR_Z (3) are learned as if they were at 3 sd (winsorized), so neither
the ramp into an incident nor one odd window inflates the variance. An alert open for
``max_open_s`` is closed as a lasting change and the baseline restarts from scratch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from backend.analytics.hysteresis import Hysteresis

WARNING, CRITICAL = "warning", "critical"
SEVERITIES = (WARNING, CRITICAL)
UP, DOWN, BOTH = "up", "down", "both"
WINSOR_Z = 3.0  # values learned into a baseline are clipped to mean +- this many sd
LATENCY_LOG_FLOOR = 0.05  # sd floor of log1p(p95): 5% moves of a p95 are always within noise


@dataclass(frozen=True)
class AnomalySettings:
    warning_z: float = 4.0
    critical_z: float = 6.0
    clear_z: float = 2.0
    span_s: float = 300.0  # EWMA span in seconds (one value per second): alpha = 2 / (span + 1)
    min_history_s: int = 120  # values seen before z-scores count
    clear_s: float = 10.0  # seconds below clear_z before an alert closes
    for_s: float = 2.0  # seconds at or above warning_z before an alert opens
    min_events: int = 20  # events (or field values) in the window to judge error rate / latency
    max_open_s: float = 1800.0  # an anomaly lasting this long is the new normal
    window_s: int = 5  # seconds each value covers (sets the rate's noise floor)

    def __post_init__(self) -> None:
        if not 0 < self.clear_z <= self.warning_z <= self.critical_z:
            raise ValueError("need 0 < clear_z <= warning_z <= critical_z")
        if self.span_s < 1 or self.min_history_s < 2 or self.window_s < 1:
            raise ValueError("span_s >= 1, min_history_s >= 2 and window_s >= 1 are required")
        if self.clear_s < 0 or self.for_s < 0 or self.min_events < 1 or self.max_open_s <= 0:
            raise ValueError("clear_s, for_s >= 0, min_events >= 1 and max_open_s > 0 are required")


class Ewma:
    """Exponentially weighted mean and variance (West 1979 / Finch 2009 incremental form)."""

    __slots__ = ("alpha", "mean", "n", "var")

    def __init__(self, span: float):
        self.alpha = 2.0 / (span + 1.0)
        self.n = 0
        self.mean = 0.0
        self.var = 0.0

    def update(self, x: float) -> None:
        self.n += 1
        # 1/n while n < 1/alpha: the running average, unbiased early on
        a = max(self.alpha, 1.0 / self.n)
        diff = x - self.mean
        incr = a * diff
        self.mean += incr
        self.var = (1.0 - a) * (self.var + diff * incr)

    def reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.var = 0.0


@dataclass(frozen=True)
class WatchSpec:
    """How one signal is watched: which way is bad, and the variance-stabilizing transform its
    z-scores are computed in, with the sd floor that sampling noise alone gives there.

        rate        sqrt(count + 3/8) of the window's count (Anscombe): Poisson noise has sd 1/2
        error_rate  asin(sqrt((errors + 3/8) / (n + 3/4))): binomial noise has sd 1/(2 sqrt(n))
        p95         log1p(ms): latency moves multiplicatively; floor LATENCY_LOG_FLOOR

    In these scales a count's upper tail is close to normal, so z >= 4 means about as rare an
    event for 5 errors per window as for 5000 (raw Poisson z-scores alarm far too often at small
    counts)."""

    signal: str
    direction: str

    def transform(self, x: float, volume: int, window_s: int) -> float:
        if self.signal == "rate":
            return math.sqrt(max(x, 0.0) * window_s + 0.375)
        if self.signal == "error_rate":
            n = max(volume, 1)
            return math.asin(math.sqrt(min(max(x * n + 0.375, 0.0) / (n + 0.75), 1.0)))
        return math.log1p(max(x, 0.0))

    def display(self, y: float, window_s: int) -> float:
        """A baseline back in the signal's own units (approximately, for messages)."""
        if self.signal == "rate":
            return max(y * y - 0.375, 0.0) / window_s
        if self.signal == "error_rate":
            return math.sin(y) ** 2
        return math.expm1(y)

    def floor(self, volume: int) -> float:
        """The sd that sampling noise alone gives, in transformed units."""
        if self.signal == "rate":
            return 0.5
        if self.signal == "error_rate":
            return 0.5 / math.sqrt(max(volume, 1))
        return LATENCY_LOG_FLOOR


RATE = WatchSpec("rate", BOTH)
ERROR_RATE = WatchSpec("error_rate", UP)
P95 = WatchSpec("p95", UP)


class Watch:
    """Baseline, z-score and alert state of one (metric, signal, field)."""

    __slots__ = (
        "baseline",
        "hysteresis",
        "opened_at",
        "peak_z",
        "settings",
        "severity",
        "spec",
        "value",
        "z",
    )

    def __init__(self, spec: WatchSpec, settings: AnomalySettings):
        self.spec = spec
        self.settings = settings
        self.baseline = Ewma(settings.span_s)
        self.hysteresis = Hysteresis(settings.for_s, settings.clear_s)
        self.z: float | None = None  # of the latest value
        self.value: float | None = None  # latest value, untransformed
        self.severity: str | None = None  # while open
        self.opened_at: float | None = None
        self.peak_z: float | None = None

    @property
    def open(self) -> bool:
        return self.hysteresis.firing

    def baseline_value(self) -> float | None:
        """The baseline mean in the signal's own units."""
        if self.baseline.n == 0:
            return None
        return self.spec.display(self.baseline.mean, self.settings.window_s)

    def zscore(self, x: float, volume: int) -> float | None:
        b = self.baseline
        if b.n < self.settings.min_history_s:
            return None
        sd = max(math.sqrt(b.var), self.spec.floor(volume), 1e-12)
        return (self.spec.transform(x, volume, self.settings.window_s) - b.mean) / sd

    def _badness(self, z: float) -> float:
        if self.spec.direction == UP:
            return z
        if self.spec.direction == DOWN:
            return -z
        return abs(z)

    def observe(self, t: float, value: float | None, volume: int) -> str | None:
        """One evaluation at time `t`: returns "open", "escalate", "close", "rebaseline" or None.

        `value` None means no data to judge (no events, or fewer than min_events): it never
        opens an alert and counts as normal toward closing one."""
        s = self.settings
        self.value = value
        if value is None or (self.spec.signal != "rate" and volume < s.min_events):
            self.z = None
            return self._close_if(self.hysteresis.step(t, False))
        z = self.z = self.zscore(value, volume)
        bad = self._badness(z) if z is not None else None
        if self.open:
            if t - self.opened_at >= s.max_open_s:
                # It has lasted long enough to be the new normal: learn it from scratch.
                self.hysteresis.reset()
                self.baseline.reset()
                self.baseline.update(self.spec.transform(value, volume, s.window_s))
                self.severity = None
                return "rebaseline"
            event = self.hysteresis.step(t, bad is not None and bad >= s.clear_z)
            if event == "close":
                return self._close_if(event)
            if bad is not None and (self.peak_z is None or bad > self._badness(self.peak_z)):
                self.peak_z = z
            if bad is not None and bad >= s.critical_z and self.severity != CRITICAL:
                self.severity = CRITICAL
                return "escalate"
            return None
        active = bad is not None and bad >= s.warning_z
        event = self.hysteresis.step(t, active)
        if event == "open":
            self.opened_at = t
            self.peak_z = z
            self.severity = CRITICAL if bad >= s.critical_z else WARNING
            return "open"
        if not active:  # (not pending either: the baseline is frozen while pending or open)
            self._learn(self.spec.transform(value, volume, s.window_s), z, volume)
        return None

    def _learn(self, y: float, z: float | None, volume: int) -> None:
        """Update the baseline, winsorized: a value beyond WINSOR_Z counts as if it were at WINSOR_Z,
        so the ramp into an incident (or one odd window) cannot inflate the variance enough to
        hide what follows."""
        if z is not None and abs(z) > WINSOR_Z:
            b = self.baseline
            sd = max(math.sqrt(b.var), self.spec.floor(volume))
            y = b.mean + math.copysign(WINSOR_Z * sd, z)
        self.baseline.update(y)

    def _close_if(self, event: str | None) -> str | None:
        if event == "close":
            self.severity = None
            self.opened_at = None
        return event

    def adopt_open(self, opened_at: float, severity: str) -> None:
        """Take over an alert found open in the store: frozen baseline, clears as usual."""
        self.hysteresis.force_firing()
        self.opened_at = opened_at
        self.severity = severity
