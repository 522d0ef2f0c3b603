"""A mergeable quantile sketch (DDSketch: Masson, Rim & Lee, VLDB 2019).

Values are counted in logarithmic bins whose width grows with the value, so every bin's
representative is within ALPHA relative error of anything that falls in it. The bins are plain
counters keyed by short strings, which is what lets Redis hold them in a hash and merge them
with HINCRBY: sketches of different seconds, or written by different workers, merge by adding
counts, with no loss beyond the one ALPHA bound.

Bin ``p{i}`` holds positive x with gamma**(i-1) < x <= gamma**i; ``n{i}`` the same for -x; ``z``
holds |x| < ZERO_EPS. The representative 2*gamma**i/(gamma+1) is at most ALPHA away (relative)
from both edges of the bin.

Bounded: |x| above MAX_TRACKED (1e18) is counted in the top bin of its sign, as DDSketch collapses
its extreme bins, so one field has at most ~3,100 bins per sign (|x| in [1e-9, 1e18] at 1%)
however widely a producer spreads its values; min, max, count and sum stay exact, and a
percentile that falls in an edge bin is clamped to the exact min/max by the readers.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from functools import lru_cache
from itertools import accumulate

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LOG_GAMMA = math.log(GAMMA)
_INV_LOG_GAMMA = 1.0 / LOG_GAMMA
_REP_FACTOR = 2.0 / (GAMMA + 1.0)
ZERO_EPS = 1e-9
ZERO_KEY = "z"

MAX_TRACKED = 1e18
_log = math.log
_ceil = math.ceil
MAX_INDEX = _ceil(_log(MAX_TRACKED) * _INV_LOG_GAMMA)


def bin_key(x: float) -> str:
    if x >= ZERO_EPS:
        return f"p{min(MAX_INDEX, _ceil(_log(x) * _INV_LOG_GAMMA))}"
    if x <= -ZERO_EPS:
        return f"n{min(MAX_INDEX, _ceil(_log(-x) * _INV_LOG_GAMMA))}"
    if x != x:  # NaN compares false both ways above; it has no place in any bin
        raise ValueError("cannot bin NaN")
    return ZERO_KEY


def parse_key(key: str) -> tuple[int, int]:
    """``"n12"`` -> (-1, 12), ``"z"`` -> (0, 0), ``"p3"`` -> (1, 3). Raises ValueError otherwise."""
    if key == ZERO_KEY:
        return 0, 0
    sign = key[:1]
    if sign == "p":
        return 1, int(key[1:])
    if sign == "n":
        return -1, int(key[1:])
    raise ValueError(f"not a sketch bin key: {key!r}")


# A bin index's value never changes, and there are at most ~71k possible keys; the cache keeps
# the hot few thousand so quantile() over a big merged sketch does not redo exp() per bin.
@lru_cache(maxsize=8192)
def bin_value(key: str) -> float:
    sign, index = parse_key(key)
    if sign == 0:
        return 0.0
    try:
        rep = math.exp(index * LOG_GAMMA) * _REP_FACTOR
    except OverflowError:
        # The last bin below float max: its upper edge is not representable. Callers clamp
        # estimates to the exact max anyway.
        rep = sys.float_info.max
    return rep if sign > 0 else -rep


def nearest_rank(q: float, n: int) -> int:
    """0-based index of the q-quantile of n sorted values by the nearest-rank definition: the
    smallest value with at least q*n values at or below it, i.e. the ceil(q*n)-th (1-based); q=0
    is the minimum. numpy's percentile(method="inverted_cdf") is the same definition. The small
    tolerance keeps float products like 0.7*10 = 7.000000000000001 on their integer rank."""
    return min(n - 1, max(0, math.ceil(q * n - 1e-9) - 1))


@lru_cache(maxsize=16384)
def _order(key: str) -> tuple[int, int]:
    """Sort key putting bins in ascending order of their values (cached: every aggregate sorts
    the same few thousand keys again)."""
    sign, index = parse_key(key)
    return sign, sign * index


def _checked(qs: Iterable[float]) -> list[float]:
    qs = list(qs)
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q!r}")
    return qs


def quantiles_of(
    bins: Mapping[str, int], qs: Iterable[float], count: int | None = None
) -> list[float | None]:
    """Quantiles of a bins mapping as it is (no copy into a Sketch): one pass over the sorted bins."""
    qs = _checked(qs)
    if count is None:
        count = sum(n for n in bins.values() if n > 0)
    if count <= 0:
        return [None] * len(qs)
    # The nearest-rank element (docs/api.md): the one a sorted list holds at this index.
    wanted = sorted((nearest_rank(q, count), i) for i, q in enumerate(qs))
    out: list[float | None] = [None] * len(qs)
    w = 0
    seen = 0
    for key in sorted((k for k, n in bins.items() if n > 0), key=_order):
        seen += bins[key]
        while w < len(wanted) and wanted[w][0] < seen:
            out[wanted[w][1]] = bin_value(key)
            w += 1
        if w == len(wanted):
            break
    return out


class RankedBins:
    """A bins mapping sorted once, with running counts, for quantiles of it plus a few more bins.

    An aggregate over a long window while events arrive is a large part that changes once a
    second and a small live part that changes with every batch. Sorting the large part's bins
    for every request was most of a live aggregate's time; kept sorted, a request sorts only the
    live bins and finds each quantile of the union by binary search on both sides. The answer is
    the one quantiles_of gives for the merged bins, bin for bin."""

    __slots__ = ("cum", "keys", "orders")

    def __init__(self, bins: Mapping[str, int]) -> None:
        self.keys = sorted((k for k, n in bins.items() if n > 0), key=_order)
        self.orders = [_order(k) for k in self.keys]
        self.cum = list(accumulate(bins[k] for k in self.keys))

    @property
    def count(self) -> int:
        return self.cum[-1] if self.cum else 0

    def quantiles_with(self, extra: Mapping[str, int] | None, qs: Iterable[float]) -> list[float | None]:
        """quantiles_of(these bins + `extra`, qs), without merging them. (Bisection on both
        sides: a walk over the extra bins instead measured as fast with 30 of them, twice as
        slow with 130.)"""
        qs = _checked(qs)
        other = RankedBins(extra) if extra else None
        total = self.count + (other.count if other is not None else 0)
        if total <= 0:
            return [None] * len(qs)
        if other is None or not other.cum:
            keys, cum = self.keys, self.cum
            return [bin_value(keys[bisect_right(cum, nearest_rank(q, total))]) for q in qs]
        out: list[float | None] = []
        for q in qs:
            rank = nearest_rank(q, total)
            # The answer is the first bin of the union whose running count passes the rank:
            # the first such bin of either side, whichever comes first.
            mine, theirs = self._first_above(rank, other), other._first_above(rank, self)
            if mine is None or (theirs is not None and other.orders[theirs] < self.orders[mine]):
                out.append(bin_value(other.keys[theirs]))  # type: ignore[index]  # mine is None: theirs is not
            else:
                out.append(bin_value(self.keys[mine]))
        return out

    def _below(self, order: tuple[int, int]) -> int:
        """How many values lie in bins at or below `order`."""
        i = bisect_right(self.orders, order)
        return self.cum[i - 1] if i else 0

    def _first_above(self, rank: int, other: RankedBins) -> int | None:
        """Index of this side's first bin whose running count over both sides passes `rank`
        (0-based), or None."""
        cum, orders, below = self.cum, self.orders, other._below
        i = bisect_right(range(len(cum)), rank, key=lambda j: cum[j] + below(orders[j]))
        return i if i < len(cum) else None


class Sketch:
    __slots__ = ("bins", "count")

    def __init__(self, bins: Mapping[str, int | str | bytes] | None = None):
        self.bins: dict[str, int] = {}
        self.count = 0
        if bins:
            self.merge_bins(bins)

    def add(self, x: float, n: int = 1) -> None:
        key = bin_key(x)
        self.bins[key] = self.bins.get(key, 0) + n
        self.count += n

    def merge_bins(self, bins: Mapping[str, int | str | bytes]) -> None:
        # (Counts read from a Redis hash arrive as text.)
        own = self.bins
        total = 0
        for key, n in bins.items():
            c = int(n)
            own[key] = own.get(key, 0) + c
            total += c
        self.count += total

    def merge(self, other: Sketch) -> None:
        self.merge_bins(other.bins)

    def quantile(self, q: float) -> float | None:
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        """Several quantiles in one pass over the sorted bins (what every aggregate asks for)."""
        return quantiles_of(self.bins, qs, self.count)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sketch):
            return NotImplemented
        return self.count == other.count and {k: n for k, n in self.bins.items() if n} == {
            k: n for k, n in other.bins.items() if n
        }

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Sketch(count={self.count}, bins={len(self.bins)})"


__all__ = [
    "ALPHA",
    "GAMMA",
    "ZERO_EPS",
    "RankedBins",
    "Sketch",
    "bin_key",
    "bin_value",
    "nearest_rank",
    "parse_key",
]
