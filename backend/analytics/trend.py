"""Trends: is a metric's rate rising, falling or stable over a window?

An ordinary least-squares line through the per-second rate values, computed online (one pass,
co-moments updated per point as in Welford's algorithm, so no cancellation on large timestamps).
A trend is called only when it is both large and clear:

    change   the fitted line moves by at least `min_change` (default 10%) of the mean rate
             over the window, and
    evidence |slope| / its standard error >= MIN_T (3): noise alone rarely gets there.

Anything else is "stable".
"""

from __future__ import annotations

import math
from collections.abc import Iterable

MIN_T = 3.0
MIN_POINTS = 3


class OnlineSlope:
    """Least-squares fit of y on x, one point at a time."""

    __slots__ = ("cxx", "cxy", "cyy", "mean_x", "mean_y", "n")

    def __init__(self) -> None:
        self.n = 0
        self.mean_x = 0.0
        self.mean_y = 0.0
        self.cxx = 0.0  # sum of (x - mean_x)^2
        self.cxy = 0.0  # sum of (x - mean_x)(y - mean_y)
        self.cyy = 0.0

    def add(self, x: float, y: float) -> None:
        self.n += 1
        dx = x - self.mean_x
        self.mean_x += dx / self.n
        dy = y - self.mean_y
        self.mean_y += dy / self.n
        # co-moment updates with the old dx and the new mean's residual
        self.cxx += dx * (x - self.mean_x)
        self.cxy += dx * (y - self.mean_y)
        self.cyy += dy * (y - self.mean_y)

    @property
    def slope(self) -> float | None:
        if self.n < 2 or self.cxx <= 0:
            return None
        return self.cxy / self.cxx

    def t_stat(self) -> float | None:
        """slope / standard error; inf for a perfect non-flat line, None when undefined."""
        slope = self.slope
        if slope is None or self.n < MIN_POINTS:
            return None
        sse = max(self.cyy - slope * self.cxy, 0.0)  # residual sum of squares
        if sse <= 1e-12 * max(self.cyy, 1e-300):
            return math.inf if slope != 0 else 0.0
        se = math.sqrt(sse / (self.n - 2) / self.cxx)
        return slope / se


def classify(points: Iterable[tuple[float, float]], window_s: float, min_change: float = 0.1) -> dict:
    """``{"trend", "slope_per_s", "relative_slope", "mean", "points"}`` of (t, rate) points.

    slope_per_s is in the rate's unit per second (events/s per s); relative_slope is that over
    the mean rate (fraction per second), None when the mean is 0."""
    fit = OnlineSlope()
    for x, y in points:
        fit.add(x, y)
    slope = fit.slope
    mean = fit.mean_y if fit.n else 0.0
    relative = slope / mean if slope is not None and mean > 0 else None
    trend = "stable"
    t = fit.t_stat()
    clear = slope is not None and t is not None and abs(t) >= MIN_T
    if clear and mean > 0 and abs(slope) * window_s >= min_change * mean:
        trend = "rising" if slope > 0 else "falling"
    return {
        "trend": trend,
        "slope_per_s": _round(slope if slope is not None else 0.0),
        "relative_slope": _round(relative) if relative is not None else None,
        "mean": _round(mean),
        "points": fit.n,
    }


def _round(x: float) -> float:
    return float(f"{x:.6g}")
