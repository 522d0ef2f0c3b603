"""Time-bucketed aggregates: pre-aggregating a batch on the way in, merging buckets on the way out.

Storage layout (the store writes it, this module decides it). Every ``res``-second interval
starting at ``start`` is one Redis hash with, per metric and per measured field::

    {metric}|#c             events                      HINCRBY
    {metric}|#e             events with status "error"  HINCRBY (absent when none)
    {metric}|{field}|c      values                      HINCRBY
    {metric}|{field}|s      sum of values               HINCRBYFLOAT
    {metric}|{field}|mn     smallest value              keep-min
    {metric}|{field}|mx     largest value               keep-max
    {metric}|{field}|b:KEY  values in sketch bin KEY    HINCRBY

Every operation is an increment or a keep-min/keep-max, so applying deltas is commutative:
several workers (or a retried batch split differently) land on the same totals, and any set of
buckets merges into one window by the same rules. Metric and field names cannot contain "|" or
"#" (see events.METRIC_RE), so the names never collide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from backend.core.events import Event
from backend.core.sketch import Sketch, bin_key, parse_key
from backend.core.timefmt import iso_ms

RESOLUTIONS = (1, 60)
_COARSE = RESOLUTIONS[-1]
PERCENTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
_QS = tuple(q for _, q in PERCENTILES)


@dataclass(slots=True)
class BucketDelta:
    incr: dict[str, int] = field(default_factory=dict)
    incr_float: dict[str, float] = field(default_factory=dict)
    mins: dict[str, float] = field(default_factory=dict)
    maxs: dict[str, float] = field(default_factory=dict)


def apply_delta(h: dict[str, int | float], delta: BucketDelta) -> None:
    """Apply a delta to a plain dict the way the store's Lua script applies it to a Redis hash.

    The reference semantics for the store, and what tests use to simulate Redis.
    """
    for k, n in delta.incr.items():
        h[k] = h.get(k, 0) + n
    for k, x in delta.incr_float.items():
        h[k] = h.get(k, 0.0) + x
    for k, x in delta.mins.items():
        if k not in h or x < h[k]:
            h[k] = x
    for k, x in delta.maxs.items():
        if k not in h or x > h[k]:
            h[k] = x


# --- write side ----------------------------------------------------------------------------------
# Running state of one (second, metric) group. Lists, not objects: attribute access on a slots
# class costs more than indexing, and add() runs once per event.
_COUNT, _ERRORS, _FIELDS = 0, 1, 2
# Per field: [count, sum, min, max, {bin key: count}]
_FC, _FS, _FMN, _FMX, _FB = 0, 1, 2, 3, 4

# Bin keys of recently seen values. Measured values repeat a lot (integer milliseconds, prices,
# status codes), and a dict hit is several times cheaper than log+ceil+format. Bounded: cleared
# when full.
_BIN_CACHE_MAX = 16384
_bin_cache: dict[float, str] = {}


def _cached_bin_key(x: float) -> str:
    key = _bin_cache.get(x)
    if key is None:
        if len(_bin_cache) >= _BIN_CACHE_MAX:
            _bin_cache.clear()
        key = _bin_cache[x] = bin_key(x)
    return key


class BatchAccumulator:
    """Pre-aggregates one batch of events into per-bucket deltas.

    add() only touches the finest resolution, keyed by (second, metric); coarser buckets are
    rolled up from those groups in deltas(), once per group instead of once per event. Field
    names are likewise built once per group, in deltas().
    """

    __slots__ = ("_groups", "events")

    def __init__(self) -> None:
        self._groups: dict[tuple[int, str], list] = {}
        self.events = 0

    def add(self, ev: Event) -> None:
        ts = ev.ts
        sec = int(ts)
        if sec > ts:  # int() truncates toward zero; buckets need the floor
            sec -= 1
        key = (sec, ev.metric)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = [0, 0, {}]
        group[_COUNT] += 1
        if ev.error:
            group[_ERRORS] += 1
        self.events += 1
        values = ev.fields
        if not values:
            return
        fields = group[_FIELDS]
        bin_cache = _bin_cache
        for name, x in values.items():
            bk = bin_cache.get(x)
            if bk is None:
                bk = _cached_bin_key(x)
            acc = fields.get(name)
            if acc is None:
                fields[name] = [1, x, x, x, {bk: 1}]
                continue
            acc[_FC] += 1
            acc[_FS] += x
            if x < acc[_FMN]:
                acc[_FMN] = x
            elif x > acc[_FMX]:
                acc[_FMX] = x
            bins = acc[_FB]
            bins[bk] = bins.get(bk, 0) + 1

    def __len__(self) -> int:
        return self.events

    def deltas(self) -> dict[tuple[int, int], BucketDelta]:
        out: dict[tuple[int, int], BucketDelta] = {}
        for res in RESOLUTIONS:
            if res == 1:
                groups: Mapping[tuple[int, str], list] = self._groups
            else:
                groups = _roll_up(self._groups, res)
            for (start, metric), group in groups.items():
                delta = out.get((res, start))
                if delta is None:
                    delta = out[(res, start)] = BucketDelta()
                _emit(delta, metric, group)
        return out


def _roll_up(groups: Mapping[tuple[int, str], list], res: int) -> dict[tuple[int, str], list]:
    merged: dict[tuple[int, str], list] = {}
    for (sec, metric), group in groups.items():
        key = (sec - sec % res, metric)
        into = merged.get(key)
        if into is None:
            merged[key] = [
                group[_COUNT],
                group[_ERRORS],
                {name: [a[0], a[1], a[2], a[3], dict(a[4])] for name, a in group[_FIELDS].items()},
            ]
            continue
        into[_COUNT] += group[_COUNT]
        into[_ERRORS] += group[_ERRORS]
        fields = into[_FIELDS]
        for name, a in group[_FIELDS].items():
            b = fields.get(name)
            if b is None:
                fields[name] = [a[0], a[1], a[2], a[3], dict(a[4])]
                continue
            b[_FC] += a[_FC]
            b[_FS] += a[_FS]
            b[_FMN] = min(b[_FMN], a[_FMN])
            b[_FMX] = max(b[_FMX], a[_FMX])
            bins = b[_FB]
            for bk, n in a[_FB].items():
                bins[bk] = bins.get(bk, 0) + n
    return merged


def _emit(delta: BucketDelta, metric: str, group: list) -> None:
    # (res, start, metric) is unique per group, so every key here is new: plain assignment.
    incr = delta.incr
    incr[f"{metric}|#c"] = group[_COUNT]
    if group[_ERRORS]:
        incr[f"{metric}|#e"] = group[_ERRORS]
    for name, (count, total, lo, hi, bins) in group[_FIELDS].items():
        prefix = f"{metric}|{name}|"
        incr[prefix + "c"] = count
        delta.incr_float[prefix + "s"] = total
        delta.mins[prefix + "mn"] = lo
        delta.maxs[prefix + "mx"] = hi
        bin_prefix = prefix + "b:"
        for bk, n in bins.items():
            incr[bin_prefix + bk] = n


# --- read side -----------------------------------------------------------------------------------
def plan_window(to_s: int, window_s: int) -> list[tuple[int, int]]:
    """(res, start) buckets covering [to_s - window_s, to_s) exactly once, oldest first.

    Whole minutes inside the window are read as one 60 s bucket each and only the ragged edges
    second by second, so an hour costs at most ~178 hashes instead of 3600.
    """
    if window_s < 0:
        raise ValueError(f"window_s must be >= 0, got {window_s}")
    from_s = to_s - window_s
    first = -(-from_s // _COARSE) * _COARSE  # first coarse boundary at or after from_s
    last = to_s // _COARSE * _COARSE  # last coarse boundary at or before to_s
    if first >= last:
        return [(1, s) for s in range(from_s, to_s)]
    return (
        [(1, s) for s in range(from_s, first)]
        + [(_COARSE, s) for s in range(first, last, _COARSE)]
        + [(1, s) for s in range(last, to_s)]
    )


def timeseries_plan(to_s: int, window_s: int, step_s: int) -> tuple[int, list[int]]:
    """(res, bucket starts) to read for `timeseries`: minute buckets when every step is whole minutes."""
    if step_s <= 0:
        raise ValueError(f"step_s must be > 0, got {step_s}")
    from_s = to_s - window_s
    res = _COARSE if step_s % _COARSE == 0 and from_s % _COARSE == 0 else 1
    return res, list(range(from_s, to_s, res))


# Parsed hash field names. Buckets repeat the same few thousand names (metrics x fields x bins),
# so parsing each once turns merging a window into dict lookups. Bounded: cleared when full.
_NAME_CACHE_MAX = 65536
_parsed_names: dict[bytes | str, tuple | None] = {}

_K_COUNT, _K_ERRORS, _K_C, _K_S, _K_MN, _K_MX, _K_BIN = range(7)
_SUFFIX_KIND = {"c": _K_C, "s": _K_S, "mn": _K_MN, "mx": _K_MX}


def _parse_name(raw: bytes | str) -> tuple | None:
    """(metric, field or None, kind, bin key or None); None for a name we did not write."""
    parsed = _parsed_names.get(raw, False)
    if parsed is not False:
        return parsed
    name = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
    parts = name.split("|")
    parsed = None
    if len(parts) == 2 and parts[0]:
        if parts[1] == "#c":
            parsed = (parts[0], None, _K_COUNT, None)
        elif parts[1] == "#e":
            parsed = (parts[0], None, _K_ERRORS, None)
    elif len(parts) == 3 and parts[0] and parts[1]:
        suffix = parts[2]
        if suffix.startswith("b:"):
            try:
                parse_key(suffix[2:])
            except ValueError:
                pass  # one junk bin must not cost the whole field its percentiles
            else:
                parsed = (parts[0], parts[1], _K_BIN, suffix[2:])
        elif suffix in _SUFFIX_KIND:
            parsed = (parts[0], parts[1], _SUFFIX_KIND[suffix], None)
    if len(_parsed_names) >= _NAME_CACHE_MAX:
        _parsed_names.clear()
    _parsed_names[raw] = parsed
    return parsed


_ANY = object()

# What a slot does with a hash value: add as int, add as float, keep the smaller, keep the larger.
_OP_INT, _OP_FLOAT, _OP_MIN, _OP_MAX = range(4)
_FIELD_INDEX = {_K_C: 0, _K_S: 1, _K_MN: 2, _K_MX: 3}  # into [count, sum, min, max, bins]
_IGNORE = ("ignore",)  # _new_slot: a name this WindowStats never uses
_KIND_OP = {
    _K_COUNT: _OP_INT,
    _K_ERRORS: _OP_INT,
    _K_C: _OP_INT,
    _K_BIN: _OP_INT,
    _K_S: _OP_FLOAT,
    _K_MN: _OP_MIN,
    _K_MX: _OP_MAX,
}


class WindowStats:
    """Merged state of any number of bucket hashes.

    A window of an hour is ~120 hashes of up to thousands of entries each, but they repeat the
    same names (metrics x fields x bins). So each distinct name is resolved once per WindowStats
    into a slot, (op, container, index) pointing straight at the counter it feeds, and every
    further occurrence costs one dict lookup and one in-place update.
    """

    __slots__ = ("_only_field", "_only_metric", "_skip", "_slots", "metrics")

    def __init__(self, *, only_metric: str | None = None, only_field=_ANY, skip: set | None = None) -> None:
        # metric -> [count, errors, {field: [count, sum, min|None, max|None, {bin key: count}]}]
        self.metrics: dict[str, list] = {}
        # only_metric None: every metric. only_field _ANY: every field; None: counts only.
        self._only_metric = only_metric
        self._only_field = only_field
        self._slots: dict[bytes | str, tuple] = {}
        # Names this filter ignores. Shareable between instances with the same filter (the steps
        # of a time series), where ignored names can outnumber kept ones ten to one.
        self._skip: set = set() if skip is None else skip

    @classmethod
    def from_hashes(cls, hashes: Iterable[Mapping[bytes | str, bytes | str]]) -> WindowStats:
        stats = cls()
        for h in hashes:
            if h:
                stats.merge_hash(h)
        return stats

    def merge_hash(self, h: Mapping) -> None:
        slots = self._slots
        skip = self._skip
        for raw, value in h.items():
            slot = slots.get(raw)
            if slot is None:
                if raw in skip:
                    continue
                slot = self._new_slot(raw, value)
                if slot is _IGNORE:
                    skip.add(raw)
                    continue
                if slot is None:
                    continue  # not a number this time; the name may still hold one elsewhere
                slots[raw] = slot
            op, box, i = slot
            try:
                if op == _OP_INT:
                    box[i] += int(value)
                elif op == _OP_FLOAT:
                    box[i] += float(value)
                elif op == _OP_MIN:
                    x = float(value)
                    if box[i] is None or x < box[i]:
                        box[i] = x
                else:
                    x = float(value)
                    if box[i] is None or x > box[i]:
                        box[i] = x
            except (ValueError, TypeError):
                continue  # not a number: not something we wrote; skip it rather than fail the read

    def _new_slot(self, raw, value) -> tuple | None:
        parsed = _parse_name(raw)
        if parsed is None:
            return _IGNORE
        metric, fname, kind, bk = parsed
        if self._only_metric is not None and metric != self._only_metric:
            return _IGNORE
        if fname is not None and self._only_field is not _ANY and fname != self._only_field:
            return _IGNORE
        op = _KIND_OP[kind]
        try:
            int(value) if op == _OP_INT else float(value)
        except (ValueError, TypeError):
            return None  # create no state for junk
        m = self.metrics.get(metric)
        if m is None:
            m = self.metrics[metric] = [0, 0, {}]
        if kind == _K_COUNT:
            return op, m, 0
        if kind == _K_ERRORS:
            return op, m, 1
        f = m[2].get(fname)
        if f is None:
            f = m[2][fname] = [0, 0.0, None, None, {}]
        if kind == _K_BIN:
            f[4].setdefault(bk, 0)
            return op, f[4], bk
        return op, f, _FIELD_INDEX[kind]

    def to_aggregate(self, *, window_s: int, from_s: int, to_s: int, metric: str | None = None) -> dict:
        names = sorted(self.metrics) if metric is None else [metric] if metric in self.metrics else []
        aggregate: dict[str, int] = {}
        per_metric: dict[str, dict] = {}
        total_count = total_errors = 0
        for name in names:
            count, errors, fields = self.metrics[name]
            aggregate[name] = count
            total_count += count
            total_errors += errors
            per_metric[name] = {
                **_counts(count, errors, window_s),
                "fields": {fname: _field_stats(fields[fname]) for fname in sorted(fields)},
            }
        return {
            "window_seconds": window_s,
            "from": iso_ms(from_s),
            "to": iso_ms(to_s),
            "aggregate": aggregate,
            "metrics": per_metric,
            "total": _counts(total_count, total_errors, window_s),
        }

    def totals(self) -> tuple[int, int]:
        """(count, errors) over every metric."""
        return sum(m[0] for m in self.metrics.values()), sum(m[1] for m in self.metrics.values())

    def merged_field(self, fname: str) -> list | None:
        """One field's state merged across every metric that has it (None when none does)."""
        out = None
        for m in self.metrics.values():
            f = m[2].get(fname)
            if f is None:
                continue
            if out is None:
                out = [0, 0.0, None, None, {}]
            _merge_field(out, f)
        return out


def _merge_field(into: list, f: list) -> None:
    into[0] += f[0]
    into[1] += f[1]
    if f[2] is not None and (into[2] is None or f[2] < into[2]):
        into[2] = f[2]
    if f[3] is not None and (into[3] is None or f[3] > into[3]):
        into[3] = f[3]
    bins = into[4]
    for bk, n in f[4].items():
        bins[bk] = bins.get(bk, 0) + n


def _sig6(x: float) -> float:
    return float(f"{x:.6g}")


def _counts(count: int, errors: int, seconds: int) -> dict:
    return {
        "count": count,
        "errors": errors,
        "error_rate": _sig6(errors / count) if count else 0.0,
        "rate_per_sec": _sig6(count / seconds) if seconds > 0 else 0.0,
    }


def _percentiles(f: list) -> list[float | None]:
    """p50/p95/p99 from the sketch, clamped to the exact [min, max] (bin representatives can
    overshoot the true extremes by up to ALPHA)."""
    estimates = Sketch(f[4]).quantiles(_QS)
    lo, hi = f[2], f[3]
    out: list[float | None] = []
    for est in estimates:
        if est is not None:
            # Not rounded: 6 significant digits would add up to 5e-6 relative error on top of
            # ALPHA and break the documented 1% bound for values at a bin's lower edge.
            if lo is not None and est < lo:
                est = lo
            if hi is not None and est > hi:
                est = hi
        out.append(est)
    return out


def _field_stats(f: list) -> dict:
    count, total, lo, hi = f[0], f[1], f[2], f[3]
    stats = {
        "count": count,
        "sum": total,
        "avg": total / count if count else None,
        "min": lo,
        "max": hi,
    }
    for (label, _), est in zip(PERCENTILES, _percentiles(f), strict=True):
        stats[label] = est
    return stats


def timeseries(
    hashes_by_bucket: Mapping[int, Mapping],
    *,
    from_s: int,
    to_s: int,
    step_s: int,
    res: int,
    metric: str | None,
    field: str | None,
) -> dict:
    """One point per step in [from_s, to_s). Counts cover `metric` (all metrics when None);
    avg/percentiles cover `field` merged across those metrics, and are null without a field."""
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
    for start, h in hashes_by_bucket.items():
        if not h or not from_s <= start < to_s:
            continue
        steps[(start - from_s) // step_s].merge_hash(h)

    points = []
    for i, stats in enumerate(steps):
        count, errors = stats.totals()
        point = {
            "t": iso_ms(from_s + i * step_s),
            **_counts(count, errors, step_s),
            "avg": None,
            "p50": None,
            "p95": None,
            "p99": None,
        }
        f = stats.merged_field(field) if field is not None else None
        if f is not None and f[0]:
            point["avg"] = f[1] / f[0]
            for (label, _), est in zip(PERCENTILES, _percentiles(f), strict=True):
                point[label] = est
        points.append(point)
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
    "PERCENTILES",
    "RESOLUTIONS",
    "BatchAccumulator",
    "BucketDelta",
    "WindowStats",
    "apply_delta",
    "plan_window",
    "timeseries",
    "timeseries_plan",
]
