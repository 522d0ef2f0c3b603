"""Latency histograms that merge across processes: 0.1 ms bins, exact counts.

Clients see millions of deliveries in a soak; keeping every sample would cost hundreds of MB, so
samples are folded into fixed-width bins (0.1 ms up to 60 s, anything slower in the last bin) and
percentiles are read off the cumulative counts. 0.1 ms is far below what we compare against
(p99 <= 100 ms). The sparse form ({bin: count}) travels as JSON between processes.
"""

from __future__ import annotations

import numpy as np

BIN_S = 1e-4
MAX_S = 60.0
NBINS = int(MAX_S / BIN_S) + 1  # the last bin holds everything >= MAX_S


class Histogram:
    __slots__ = ("_pending", "_pending_n", "count", "counts", "max_s", "sum_s")

    FOLD_AT = 1_000_000  # samples buffered before one bincount

    def __init__(self) -> None:
        self.counts = np.zeros(NBINS, dtype=np.int64)
        self.count = 0
        self.sum_s = 0.0
        self.max_s = 0.0
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def add(self, samples_s: np.ndarray) -> None:
        """Add latency samples in seconds (a numpy array)."""
        if samples_s.size == 0:
            return
        self._pending.append(samples_s)
        self._pending_n += samples_s.size
        if self._pending_n >= self.FOLD_AT:
            self._fold()

    def _fold(self) -> None:
        if not self._pending:
            return
        samples = np.concatenate(self._pending)
        self._pending, self._pending_n = [], 0
        samples = np.maximum(samples, 0.0)
        self.count += int(samples.size)
        self.sum_s += float(samples.sum())
        self.max_s = max(self.max_s, float(samples.max()))
        idx = np.minimum((samples / BIN_S).astype(np.int64), NBINS - 1)
        self.counts += np.bincount(idx, minlength=NBINS)

    def to_sparse(self) -> dict:
        self._fold()
        nz = np.nonzero(self.counts)[0]
        return {
            "bins": nz.tolist(),
            "counts": self.counts[nz].tolist(),
            "count": self.count,
            "sum_s": self.sum_s,
            "max_s": self.max_s,
        }

    @classmethod
    def from_sparse(cls, parts: list[dict]) -> Histogram:
        h = cls()
        for part in parts:
            if part["bins"]:
                np.add.at(h.counts, np.asarray(part["bins"], dtype=np.int64), part["counts"])
            h.count += part["count"]
            h.sum_s += part["sum_s"]
            h.max_s = max(h.max_s, part["max_s"])
        return h

    def percentile_ms(self, q: float) -> float | None:
        """Nearest-rank percentile (q in 0..1) in ms, at the upper edge of its bin."""
        self._fold()
        if self.count == 0:
            return None
        rank = max(1, int(np.ceil(q * self.count)))
        cum = np.cumsum(self.counts)
        b = int(np.searchsorted(cum, rank))
        return round(min((b + 1) * BIN_S, self.max_s) * 1000.0, 2)

    def summary(self) -> dict:
        self._fold()
        return {
            "samples": self.count,
            "p50_ms": self.percentile_ms(0.50),
            "p95_ms": self.percentile_ms(0.95),
            "p99_ms": self.percentile_ms(0.99),
            "max_ms": round(self.max_s * 1000.0, 2) if self.count else None,
            "mean_ms": round(self.sum_s / self.count * 1000.0, 2) if self.count else None,
        }


def percentiles_ms(samples_s: list[float]) -> dict:
    """Exact percentiles of a small list of durations (seconds), for the REST query timings."""
    if not samples_s:
        return {"n": 0}
    a = np.sort(np.asarray(samples_s, dtype=np.float64)) * 1000.0

    def rank(q: float) -> float:
        return round(float(a[max(0, int(np.ceil(q * a.size)) - 1)]), 3)

    return {
        "n": int(a.size),
        "p50_ms": rank(0.50),
        "p95_ms": rank(0.95),
        "p99_ms": rank(0.99),
        "max_ms": round(float(a[-1]), 3),
        "mean_ms": round(float(a.mean()), 3),
    }
