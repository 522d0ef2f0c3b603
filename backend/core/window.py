"""The read side of the buckets: which hashes cover a window, merging them, and the JSON of a
window's aggregate and time series.

Bucket hashes are merged into per-metric state (backend/core/state.py) by WindowStats, and per-tag
hashes into per-value counters by TagStats; the field names they parse are described in
backend/core/layout.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from itertools import islice

from backend.core.layout import (
    COARSE,
    K_BIN,
    K_C,
    K_COUNT,
    K_ERRORS,
    K_MN,
    K_MX,
    K_S,
    K_SO,
    parse_name,
    parse_tag_name,
)
from backend.core.sketch import RankedBins, quantiles_of
from backend.core.state import PERCENTILES, QUANTILES, FieldState, MetricState, clamp
from backend.core.timefmt import iso_ms


def plan_window(to_s: int, window_s: int) -> list[tuple[int, int]]:
    """(res, start) buckets covering [to_s - window_s, to_s) exactly once, oldest first.

    Whole minutes inside the window are read as one 60 s bucket each and only the ragged edges
    second by second, so an hour costs at most ~178 hashes instead of 3600.
    """
    if window_s < 0:
        raise ValueError(f"window_s must be >= 0, got {window_s}")
    from_s = to_s - window_s
    first = -(-from_s // COARSE) * COARSE  # first coarse boundary at or after from_s
    last = to_s // COARSE * COARSE  # last coarse boundary at or before to_s
    if first >= last:
        return [(1, s) for s in range(from_s, to_s)]
    return (
        [(1, s) for s in range(from_s, first)]
        + [(COARSE, s) for s in range(first, last, COARSE)]
        + [(1, s) for s in range(last, to_s)]
    )


def timeseries_plan(to_s: int, window_s: int, step_s: int) -> tuple[int, list[int]]:
    """(res, bucket starts) to read for `timeseries`: minute buckets when every step is whole minutes."""
    if step_s <= 0:
        raise ValueError(f"step_s must be > 0, got {step_s}")
    from_s = to_s - window_s
    res = COARSE if step_s % COARSE == 0 and from_s % COARSE == 0 else 1
    return res, list(range(from_s, to_s, res))


# --- merging hashes ------------------------------------------------------------------------------
# What a slot does with a hash value. _ADD: box[key] += int (a sketch bin, or a per-tag counter);
# the others update the named attribute of a state. _OVERFLOW: the overflow marker poisons the
# sum with NaN, which every later addition keeps.
_ADD, _COUNT, _ERRORS, _SUM, _MIN, _MAX, _OVERFLOW = range(7)
_IGNORE = ("ignore",)  # _new_slot: a name this merger never uses
_ANY = object()  # WindowStats(only_field=_ANY): every field
_KIND_OP = {
    K_COUNT: _COUNT,
    K_ERRORS: _ERRORS,
    K_C: _COUNT,
    K_BIN: _ADD,
    K_S: _SUM,
    K_MN: _MIN,
    K_MX: _MAX,
    K_SO: _OVERFLOW,
}


class _HashMerger:
    """Merges hashes name by name through slots.

    A window of an hour is ~120 hashes of up to thousands of entries each, but they repeat the
    same names (metrics x fields x bins). So each distinct name is resolved once per merger
    (_new_slot) into a slot, (op, box, key) pointing straight at the counter it feeds, and every
    further occurrence costs one dict lookup and one in-place update. Names the merger does not
    use are remembered in a skip set.
    """

    __slots__ = ("_skip", "_slots")

    def __init__(self, skip: set | None = None) -> None:
        self._slots: dict[bytes | str, tuple] = {}
        self._skip: set = set() if skip is None else skip

    def _new_slot(self, raw, value) -> tuple | None:
        """The slot of name `raw`; _IGNORE for a name never used; None for a value that is not a
        number (the name is not remembered: it may still hold one elsewhere)."""
        raise NotImplementedError

    def merge_hash(self, h: Mapping) -> None:
        self.merge_pairs(h.items())

    def merge_pairs(self, pairs: Iterable[tuple]) -> None:
        """merge_hash over (name, value) pairs: a part of a hash, for callers that merge a wide
        one in parts (backend/storage/reads.py lets the loop run between them)."""
        slots = self._slots
        skip = self._skip
        for raw, value in pairs:
            slot = slots.get(raw)
            if slot is None:
                if raw in skip:
                    continue
                slot = self._new_slot(raw, value)
                if slot == _IGNORE:  # (compiled, a returned tuple is a copy: not `is`)
                    skip.add(raw)
                    continue
                if slot is None:
                    continue
                slots[raw] = slot
            op, box, key = slot
            try:
                if op == _ADD:
                    box[key] += int(value)
                elif op == _COUNT:
                    box.count += int(value)
                elif op == _SUM:
                    box.sum += float(value)
                elif op == _MIN:
                    x = float(value)
                    if box.min is None or x < box.min:
                        box.min = x
                elif op == _MAX:
                    x = float(value)
                    if box.max is None or x > box.max:
                        box.max = x
                elif op == _ERRORS:
                    box.errors += int(value)
                else:
                    box.sum = math.nan
            except (ValueError, TypeError):
                continue  # not a number: not something we wrote; skip it rather than fail the read


def merge_in_parts(merger: _HashMerger, h: Mapping, pause: Callable[[], None] | None, part: int) -> None:
    """merger.merge_hash(h), calling `pause` between parts of `part` fields: the storage layer
    lets its loop run there, so a wide hash (tens of thousands of fields) does not hold it."""
    if pause is None or len(h) <= part:
        merger.merge_hash(h)
        return
    pairs = iter(h.items())
    for start in range(0, len(h), part):
        if start:
            pause()
        merger.merge_pairs(islice(pairs, part))


class WindowStats(_HashMerger):
    """Merged state of any number of bucket hashes: ``metrics``, metric name -> MetricState."""

    __slots__ = ("_only_field", "_only_metric", "metrics")

    def __init__(self, *, only_metric: str | None = None, only_field=_ANY, skip: set | None = None) -> None:
        # `skip` is shareable between instances with the same filter (the steps of a time
        # series), where ignored names can outnumber kept ones ten to one.
        super().__init__(skip)
        self.metrics: dict[str, MetricState] = {}
        # only_metric None: every metric. only_field _ANY: every field; None: counts only.
        self._only_metric = only_metric
        self._only_field = only_field

    def reset(self) -> None:
        """Every count, sum and bin back to zero, keeping the states and the resolved names: the
        same names merged again cost one dict lookup each instead of a parse and a new state.
        For a hash that only grows (the current minute's), read again and again."""
        for m in self.metrics.values():
            m.count = m.errors = 0
            for f in m.fields.values():
                f.count, f.sum, f.min, f.max = 0, 0.0, None, None
                bins = f.bins
                for bk in bins:
                    bins[bk] = 0

    def copy(self) -> WindowStats:
        """An independent WindowStats with the same states (and no resolved names)."""
        out = WindowStats()
        out.metrics = {name: m.copy() for name, m in self.metrics.items()}
        return out

    @classmethod
    def from_hashes(cls, hashes: Iterable[Mapping[bytes | str, bytes | str]]) -> WindowStats:
        stats = cls()
        for h in hashes:
            if h:
                stats.merge_hash(h)
        return stats

    def _new_slot(self, raw, value) -> tuple | None:
        parsed = parse_name(raw)
        if parsed is None:
            return _IGNORE
        metric, fname, kind, bk = parsed
        if self._only_metric is not None and metric != self._only_metric:
            return _IGNORE
        if fname is not None and self._only_field is not _ANY and fname != self._only_field:
            return _IGNORE
        op = _KIND_OP[kind]
        try:
            int(value) if op in (_ADD, _COUNT, _ERRORS, _OVERFLOW) else float(value)
        except (ValueError, TypeError):
            return None  # create no state for junk
        m = self.metrics.get(metric)
        if m is None:
            m = self.metrics[metric] = MetricState()
        if fname is None:
            return op, m, None
        f = m.fields.get(fname)
        if f is None:
            f = m.fields[fname] = FieldState()
        if kind == K_BIN:
            f.bins.setdefault(bk, 0)
            return op, f.bins, bk
        return op, f, None

    def to_aggregate(self, *, window_s: int, from_s: int, to_s: int, metric: str | None = None) -> dict:
        names = sorted(self.metrics) if metric is None else [metric] if metric in self.metrics else []
        rows = {name: metric_json(self.metrics[name], window_s) for name in names}
        return aggregate_json(rows, window_s=window_s, from_s=from_s, to_s=to_s)

    def totals(self) -> tuple[int, int]:
        """(count, errors) over every metric."""
        return sum(m.count for m in self.metrics.values()), sum(m.errors for m in self.metrics.values())

    def merged_field(self, fname: str) -> FieldState | None:
        """One field's state merged across every metric that has it (None when none does)."""
        out = None
        for m in self.metrics.values():
            f = m.fields.get(fname)
            if f is None:
                continue
            if out is None:
                out = FieldState()
            out.merge(f)
        return out


class TagStats(_HashMerger):
    """Merged per-tag counters of one tag (``by``) over any number of per-tag hashes.

    ``values`` maps each tag value to [events, errors, {bin key: count}] (the bins of `field`),
    summed over every metric, or over `metric` only; names of other tags, metrics or fields are
    skipped with one set lookup, so a window of minute hashes merges at dict speed like
    WindowStats."""

    __slots__ = ("_by", "_field", "_metric", "values")

    def __init__(self, by: str, *, metric: str | None = None, field: str | None = None) -> None:
        super().__init__()
        self._by = by
        self._metric = metric
        self._field = field
        self.values: dict[str, list] = {}

    def _new_slot(self, raw, value) -> tuple:
        parsed = parse_tag_name(raw)
        if parsed is None:
            return _IGNORE
        metric, tag, tag_value, kind, fname, bk = parsed
        if tag != self._by or (self._metric is not None and metric != self._metric):
            return _IGNORE
        if kind == "b" and fname != self._field:
            return _IGNORE
        v = self.values.get(tag_value)
        if v is None:
            v = self.values[tag_value] = [0, 0, {}]
        if kind == "c":
            return _ADD, v, 0
        if kind == "e":
            return _ADD, v, 1
        v[2].setdefault(bk, 0)
        return _ADD, v[2], bk


# --- JSON ----------------------------------------------------------------------------------------
def sig6(x: float) -> float:
    return float(f"{x:.6g}")


def counts_json(count: int, errors: int, seconds: int) -> dict:
    """count, errors, error_rate and rate_per_sec over `seconds`, as every count in the API reads."""
    return {
        "count": count,
        "errors": errors,
        "error_rate": sig6(errors / count) if count else 0.0,
        "rate_per_sec": sig6(count / seconds) if seconds > 0 else 0.0,
    }


def metric_json(m: MetricState, window_s: int) -> dict:
    """One metric's row of an aggregate: its counts over the window and each field's stats."""
    return {
        **counts_json(m.count, m.errors, window_s),
        "fields": {fname: field_json(m.fields[fname]) for fname in sorted(m.fields)},
    }


def aggregate_json(rows: Mapping[str, dict], *, window_s: int, from_s: int, to_s: int) -> dict:
    """The aggregate body from its per-metric rows (metric_json), in the order given."""
    total_count = sum(row["count"] for row in rows.values())
    total_errors = sum(row["errors"] for row in rows.values())
    return {
        "window_seconds": window_s,
        "from": iso_ms(from_s),
        "to": iso_ms(to_s),
        "aggregate": {name: row["count"] for name, row in rows.items()},
        "metrics": dict(rows),
        "total": counts_json(total_count, total_errors, window_s),
    }


def field_json(f: FieldState) -> dict:
    return _field_json(f.count, f.sum, f.min, f.max, quantiles_of(f.bins, QUANTILES))


def metric_json_plus(
    base: MetricState, ranked: Mapping[str, RankedBins], fresh: MetricState, window_s: int
) -> dict:
    """metric_json of `base` merged with `fresh`, without the merge: `ranked` holds base's
    fields' bins already sorted (RankedBins), so only fresh's bins are sorted here. The same
    row, bit for bit, as merging a copy of base with fresh; a fraction of the cost when base
    is an hour and fresh a second."""
    fields = {}
    for fname in sorted(base.fields.keys() | fresh.fields.keys()):
        b, f = base.fields.get(fname), fresh.fields.get(fname)
        if b is None:
            fields[fname] = field_json(f)  # type: ignore[arg-type]  # in fresh if not in base
            continue
        if f is None:
            f = _EMPTY_FIELD
        lo, hi = b.min, b.max
        if f.min is not None and (lo is None or f.min < lo):
            lo = f.min
        if f.max is not None and (hi is None or f.max > hi):
            hi = f.max
        estimates = ranked[fname].quantiles_with(f.bins, QUANTILES)
        fields[fname] = _field_json(b.count + f.count, b.sum + f.sum, lo, hi, estimates)
    return {**counts_json(base.count + fresh.count, base.errors + fresh.errors, window_s), "fields": fields}


def ranked_fields(m: MetricState) -> dict[str, RankedBins]:
    """Each field's bins of `m` sorted for metric_json_plus."""
    return {fname: RankedBins(f.bins) for fname, f in m.fields.items()}


_EMPTY_FIELD = FieldState()


def _field_json(count: int, total: float, lo: float | None, hi: float | None, estimates: list) -> dict:
    # Not finite: a bucket's sum overflowed (its marker made it NaN), or finite bucket sums added
    # up past the float range. JSON has no infinity, and no finite number would be true.
    overflow = not math.isfinite(total)
    stats = {
        "count": count,
        "sum": None if overflow else total,
        "sum_overflow": overflow,
        "avg": total / count if count and not overflow else None,
        "min": lo,
        "max": hi,
    }
    for (label, _), est in zip(PERCENTILES, estimates, strict=True):
        stats[label] = clamp(est, lo, hi)
    return stats


def timeseries(
    hashes_by_bucket: Mapping[int, Mapping] | Iterable[tuple[int, Mapping]],
    *,
    from_s: int,
    to_s: int,
    step_s: int,
    res: int,
    metric: str | None,
    field: str | None,
    pause: Callable[[], None] | None = None,
    part: int = 4096,
) -> dict:
    """One point per step in [from_s, to_s). Counts cover `metric` (all metrics when None);
    avg/percentiles cover `field` merged across those metrics, and are null without a field.
    `pause` is called between hashes and between parts of `part` fields of a wide one."""
    if step_s <= 0:
        raise ValueError(f"step_s must be > 0, got {step_s}")
    if step_s % res:
        raise ValueError(f"step_s ({step_s}) must be a multiple of res ({res})")
    skip: set = set()
    steps = [
        # only_field None: counts only, no field state at all
        WindowStats(only_metric=metric, only_field=field, skip=skip)
        for _ in range(max(0, -(-(to_s - from_s) // step_s)))
    ]
    pairs = hashes_by_bucket.items() if isinstance(hashes_by_bucket, Mapping) else hashes_by_bucket
    for i, (start, h) in enumerate(pairs):  # (several hashes of one start, one per partition, add up)
        if not h or not from_s <= start < to_s:
            continue
        if i and pause is not None:
            pause()
        merge_in_parts(steps[(start - from_s) // step_s], h, pause, part)

    points = []
    for i, stats in enumerate(steps):
        count, errors = stats.totals()
        point = {
            "t": iso_ms(from_s + i * step_s),
            **counts_json(count, errors, step_s),
            "avg": None,
            "p50": None,
            "p95": None,
            "p99": None,
        }
        f = stats.merged_field(field) if field is not None else None
        if f is not None and f.count:
            point["avg"] = f.sum / f.count if math.isfinite(f.sum) else None  # None: the sum overflowed
            for (label, _), est in zip(PERCENTILES, f.quantiles(), strict=True):
                point[label] = est
        points.append(point)
    return series_json(from_s=from_s, to_s=to_s, step_s=step_s, metric=metric, field=field, points=points)


def merge_raw_hashes(hashes: Iterable[Mapping]) -> dict:
    """Several bucket hashes of one interval (one per partition) as the one hash a single writer
    would have left: counters, sums and sketch bins add up, minima and maxima take the extreme.
    (Per-tag hashes hold counters and bins only, so they add up too.)"""
    hashes = [h for h in hashes if h]
    if len(hashes) < 2:
        return dict(hashes[0]) if hashes else {}
    out: dict = {}
    for h in hashes:
        for name, value in h.items():
            old = out.get(name)
            if old is None:
                out[name] = value
                continue
            parsed = parse_name(name)
            kind = parsed[2] if parsed is not None else None
            if kind == K_MN:
                out[name] = repr(min(float(old), float(value)))
            elif kind == K_MX:
                out[name] = repr(max(float(old), float(value)))
            elif kind == K_S:
                out[name] = repr(float(old) + float(value))
            elif kind == K_SO:
                out[name] = value  # an overflow marker: present in any is present in the merge
            else:
                out[name] = int(old) + int(value)
    return out


def series_json(
    *, from_s: int, to_s: int, step_s: int, metric: str | None, field: str | None, points: list[dict]
) -> dict:
    """The body of a time series answer around its points."""
    return {
        "window_seconds": to_s - from_s,
        "step_seconds": step_s,
        "from": iso_ms(from_s),
        "to": iso_ms(to_s),
        "metric": metric,
        "field": field,
        "points": points,
    }


__all__ = [
    "TagStats",
    "WindowStats",
    "counts_json",
    "field_json",
    "merge_raw_hashes",
    "metric_json_plus",
    "plan_window",
    "ranked_fields",
    "series_json",
    "sig6",
    "timeseries",
    "timeseries_plan",
]
