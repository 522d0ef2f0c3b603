"""Time-bucketed aggregates: pre-aggregating a batch on the way in, merging buckets on the way out.

Storage layout (the store writes it, this module decides it). Every ``res``-second interval
starting at ``start`` is one Redis hash with, per metric and per measured field::

    {metric}|#c             events                      HINCRBY
    {metric}|#e             events with status "error"  HINCRBY (absent when none)
    {metric}|{field}|c      values                      HINCRBY
    {metric}|{field}|s      sum of values               HINCRBYFLOAT
    {metric}|{field}|so     "1": the sum overflowed     SET (absent unless it did)
    {metric}|{field}|mn     smallest value              keep-min
    {metric}|{field}|mx     largest value               keep-max
    {metric}|{field}|b:KEY  values in sketch bin KEY    HINCRBY

A float sum cannot hold more than ~1.8e308: when adding a delta would leave it infinite (or NaN,
from +inf and -inf), the writer leaves ``s`` as it was and sets ``so``. Readers then report that
field's sum (and average) as overflowed (``sum_overflow``), never a wrong finite number; a window
whose finite bucket sums add up past the float range is reported the same way.

Per-tag counters (for top-N) go to a second hash per interval (``Keys.tag_bucket``), so reading an
aggregate never pays for them. Only when the accumulator is built with ``tag_values_max > 0``::

    {metric}|@{tag}={value}|c               events with that tag value        HINCRBY
    {metric}|@{tag}={value}|e               of which status "error"            HINCRBY (absent when none)
    {metric}|@{tag}={value}|{field}|b:KEY   sketch bins of a latency-like      HINCRBY
                                            field (``ms`` or ``*_ms``)

Tag values are free text, so ``%`` and ``|`` in them are percent-encoded (and a real value
``__other__`` too): at most ``tag_values_max`` distinct values per (metric, tag) and minute are
kept, per worker process; the rest are counted under ``__other__``.

Every operation is an increment or a keep-min/keep-max, so applying deltas is commutative:
several workers (or a retried batch split differently) land on the same totals, and any set of
buckets merges into one window by the same rules. Metric and field names cannot contain "|" or
"#" (see events.METRIC_RE), so the names never collide.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from urllib.parse import unquote

from backend.core.events import Event
from backend.core.sketch import GAMMA, bin_key, parse_key, quantiles_of
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


def sum_overflow_key(sum_key: str) -> str:
    """The marker field the writer sets when adding to ``{metric}|{field}|s`` overflowed."""
    return sum_key + "o"


def apply_delta(h: dict[str, int | float], delta: BucketDelta) -> None:
    """Apply a delta to a plain dict the way the store's Lua script applies it to a Redis hash.

    The reference semantics for the store, and what tests use to simulate Redis.
    """
    for k, n in delta.incr.items():
        h[k] = h.get(k, 0) + n
    for k, x in delta.incr_float.items():
        total = h.get(k, 0.0) + x
        if math.isfinite(total):
            h[k] = total
        else:
            h[sum_overflow_key(k)] = 1
    for k, x in delta.mins.items():
        if k not in h or x < h[k]:
            h[k] = x
    for k, x in delta.maxs.items():
        if k not in h or x > h[k]:
            h[k] = x


# --- write side ----------------------------------------------------------------------------------
# Running state of one (second, metric) group. Lists, not objects: attribute access on a slots
# class costs more than indexing, and add() runs once per event.
_COUNT, _ERRORS, _FIELDS, _TAGGED = 0, 1, 2, 3
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


# Per-tag latency sketches are coarser than the main one: TAG_BIN_MERGE neighbouring bins become
# one, stored under the fine key nearest its geometric middle, so Sketch reads it unchanged with
# about TAG_ALPHA relative error. It cuts the per-tag bins (Redis writes) several fold at high
# rates, and ranking endpoints by p95 needs no 1% accuracy.
TAG_BIN_MERGE = 5
TAG_ALPHA = GAMMA ** (TAG_BIN_MERGE / 2) - 1  # ~5.1%
_coarse_keys: dict[str, str] = {}


def coarse_bin_key(key: str) -> str:
    """The fine bin key representing `key`'s coarse (TAG_BIN_MERGE-wide) bin."""
    sign, index = parse_key(key)
    if sign == 0:
        return key
    # coarse bin j holds fine bins TAG_BIN_MERGE*(j-1)+1 .. TAG_BIN_MERGE*j (for index > 0)
    j = -(-index // TAG_BIN_MERGE)
    middle = TAG_BIN_MERGE * j - TAG_BIN_MERGE // 2
    return f"{'p' if sign > 0 else 'n'}{middle}"


def _coarse_key(key: str) -> str:
    if len(_coarse_keys) >= _BIN_CACHE_MAX:
        _coarse_keys.clear()
    coarse = _coarse_keys[key] = coarse_bin_key(key)
    return coarse


OTHER = "__other__"  # where tag values past the per-bucket limit are counted


def is_latency_field(name: str) -> bool:
    """``ms`` or ``*_ms``: the fields whose percentiles are tracked per tag value and watched for
    anomalies."""
    return name == "ms" or name.endswith("_ms")


_latency_names: dict[str, bool] = {}  # field name -> is_latency_field; bounded like the others


def _is_latency_cached(name: str) -> bool:
    known = _latency_names.get(name)
    if known is None:
        if len(_latency_names) >= _BIN_CACHE_MAX:
            _latency_names.clear()
        known = _latency_names[name] = is_latency_field(name)
    return known


def encode_tag_value(value: str) -> str:
    if value == OTHER:
        return "%5F%5Fother__"
    if "%" in value:
        value = value.replace("%", "%25")
    if "|" in value:
        value = value.replace("|", "%7C")
    return value


def decode_tag_value(text: str) -> str:
    return unquote(text) if "%" in text else text


class TagAdmission:
    """Which tag values get counters of their own: the first `max_values` distinct values per
    (minute, metric, tag) are admitted, later ones go to ``__other__``. Keyed by minute, so the
    second buckets of a minute and the minute bucket itself admit the same values and stay
    consistent. Remembers the last few minutes only; an event older than that starts a fresh set."""

    __slots__ = ("_newest", "_sets", "max_values")

    KEEP_MINUTES = 5

    def __init__(self, max_values: int):
        self.max_values = max_values
        self._sets: dict[tuple[int, str, str], set[str]] = {}
        self._newest = 0

    def admit(self, minute: int, metric: str, tag: str, value: str) -> str:
        key = (minute, metric, tag)
        admitted = self._sets.get(key)
        if admitted is None:
            if minute > self._newest:
                self._newest = minute
                self._prune()
            admitted = self._sets[key] = set()
        if value in admitted:
            return value
        if len(admitted) < self.max_values:
            admitted.add(value)
            return value
        return OTHER

    def _prune(self) -> None:
        oldest = self._newest - self.KEEP_MINUTES * _COARSE
        for key in [k for k in self._sets if k[0] < oldest]:
            del self._sets[key]


# One admission table per limit, shared by every accumulator of the process (one per batch).
_admissions: dict[int, TagAdmission] = {}


def shared_admission(max_values: int) -> TagAdmission:
    admission = _admissions.get(max_values)
    if admission is None:
        admission = _admissions[max_values] = TagAdmission(max_values)
    return admission


class BatchAccumulator:
    """Pre-aggregates one batch of events into per-bucket deltas.

    add() only touches the finest resolution, keyed by (second, metric); coarser buckets are
    rolled up from those groups in deltas(), once per group instead of once per event. Field
    names are likewise built once per group, in deltas().

    With ``tag_values_max > 0`` it also counts events, errors and latency sketches per tag value
    (see tag_deltas()). add() then only appends the event's tags dict (and a latency field's bin
    key) to lists; tag_deltas() counts them with Counter.update over itertools chains, which runs
    in C, instead of a Python dict update per tag per event.
    """

    __slots__ = ("_admission", "_groups", "_tags_on", "events")

    def __init__(self, tag_values_max: int = 0, *, admission: TagAdmission | None = None) -> None:
        self._groups: dict[tuple[int, str], list] = {}
        self.events = 0
        self._tags_on = tag_values_max > 0
        if self._tags_on and admission is None:
            admission = shared_admission(tag_values_max)
        self._admission = admission

    def add(self, ev: Event) -> None:
        ts = ev.ts
        sec = int(ts)
        if sec > ts:  # int() truncates toward zero; buckets need the floor
            sec -= 1
        key = (sec, ev.metric)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = [0, 0, {}, None]
        group[_COUNT] += 1
        if ev.error:
            group[_ERRORS] += 1
        self.events += 1
        tagged = None
        if self._tags_on:
            tags = ev.data.get("tags")
            if tags:
                tagged = group[_TAGGED]
                if tagged is None:
                    # [tags of events not counted through a latency field, tags of error events,
                    #  {latency field: {coarse bin key: [tags]}}, the group's counting field]
                    tagged = group[_TAGGED] = [[], [], {}, None]
                if ev.error:
                    tagged[1].append(tags)
        values = ev.fields
        if not values:
            if tagged is not None:
                tagged[0].append(tags)
            return
        fields = group[_FIELDS]
        bin_cache = _bin_cache
        counted = False
        for name, x in values.items():
            bk = bin_cache.get(x)
            if bk is None:
                bk = _cached_bin_key(x)
            acc = fields.get(name)
            if acc is None:
                fields[name] = [1, x, x, x, {bk: 1}]
            else:
                acc[_FC] += 1
                acc[_FS] += x
                if x < acc[_FMN]:
                    acc[_FMN] = x
                elif x > acc[_FMX]:
                    acc[_FMX] = x
                bins = acc[_FB]
                bins[bk] = bins.get(bk, 0) + 1
            if tagged is None:
                continue
            is_latency = _latency_names.get(name)
            if is_latency is None:
                is_latency = _is_latency_cached(name)
            if is_latency:
                # The group's first latency field also counts its events (tag_deltas sums its
                # bins), which saves counting most events' tags twice.
                if tagged[3] is None:
                    tagged[3] = name
                if name == tagged[3]:
                    counted = True
                bk = _coarse_keys.get(bk) or _coarse_key(bk)
                by_bin = tagged[2].get(name)
                if by_bin is None:
                    tagged[2][name] = {bk: [tags]}
                else:
                    same = by_bin.get(bk)
                    if same is None:
                        by_bin[bk] = [tags]
                    else:
                        same.append(tags)
        if tagged is not None and not counted:
            tagged[0].append(tags)

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

    def tag_deltas(self) -> dict[tuple[int, int], BucketDelta]:
        """Deltas of the per-tag hashes (``Keys.tag_bucket``); empty unless tags are counted.

        Counts each group's (tag, value) pairs, sends values the admission table refuses to
        ``__other__``, and adds every count to its second's and its minute's delta at once.

        Written for both shapes of batch: live events put hundreds of events in a group, counted
        with Counter.update over chains (C speed); late events (a backlog spread over the hour)
        put about one event in each of thousands of groups, so everything per group is kept to
        dict lookups. A (tag, value) pair is admitted, and its field-name prefix built, once per
        (minute, metric) of the batch rather than once per second."""
        if not self._tags_on:
            return {}
        admit = self._admission.admit
        items = dict.items
        out: dict[tuple[int, int], BucketDelta] = {}
        minutes: dict[int, dict[str, int]] = {}
        # (minute, metric) -> {(tag, value): "metric|@tag=admitted value|"}
        prefixes_by: dict[tuple[int, str], dict[tuple[str, str], str]] = {}
        for (sec, metric), group in self._groups.items():
            tagged = group[_TAGGED]
            if tagged is None:
                continue
            minute = sec - sec % _COARSE
            prefixes = prefixes_by.get((minute, metric))
            if prefixes is None:
                prefixes = prefixes_by[(minute, metric)] = {}
            delta = out.get((1, sec))
            if delta is None:
                delta = out[(1, sec)] = BucketDelta()
            s_incr = delta.incr
            m_incr = minutes.get(minute)
            if m_incr is None:
                m_incr = minutes[minute] = {}
            uncounted, error_tags, latency, count_field = tagged

            for fname, by_bin in latency.items():
                counting = fname == count_field
                bin_infix = fname + "|b:"
                for bk, tag_dicts in by_bin.items():
                    if len(tag_dicts) == 1:  # the common case for late events, and at low rates
                        in_bin = dict.fromkeys(items(tag_dicts[0]), 1)
                    else:
                        in_bin = Counter()
                        in_bin.update(chain.from_iterable(map(items, tag_dicts)))
                    tail = bin_infix + bk
                    for pair, n in in_bin.items():
                        prefix = prefixes.get(pair) or _tag_prefix(pair, prefixes, admit, minute, metric)
                        if counting:
                            k = prefix + "c"
                            s_incr[k] = s_incr.get(k, 0) + n
                            m_incr[k] = m_incr.get(k, 0) + n
                        k = prefix + tail
                        s_incr[k] = s_incr.get(k, 0) + n
                        m_incr[k] = m_incr.get(k, 0) + n
            for source, suffix in ((uncounted, "c"), (error_tags, "e")):
                if not source:
                    continue
                if len(source) == 1:
                    counts = dict.fromkeys(items(source[0]), 1)
                else:
                    counts = Counter()
                    counts.update(chain.from_iterable(map(items, source)))
                for pair, n in counts.items():
                    prefix = prefixes.get(pair) or _tag_prefix(pair, prefixes, admit, minute, metric)
                    k = prefix + suffix
                    s_incr[k] = s_incr.get(k, 0) + n
                    m_incr[k] = m_incr.get(k, 0) + n
        for minute, incr in minutes.items():
            out[(_COARSE, minute)] = BucketDelta(incr=incr)
        return out


def _tag_prefix(pair: tuple[str, str], prefixes: dict, admit, minute: int, metric: str) -> str:
    """The field-name prefix `pair` counts under, after admission; remembered in `prefixes`."""
    tag = pair[0]
    prefix = prefixes[pair] = f"{metric}|@{tag}={encode_tag_value(admit(minute, metric, tag, pair[1]))}|"
    return prefix


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
                None,  # tag combinations are rolled up by tag_deltas()
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

_K_COUNT, _K_ERRORS, _K_C, _K_S, _K_MN, _K_MX, _K_BIN, _K_SO = range(8)
_SUFFIX_KIND = {"c": _K_C, "s": _K_S, "mn": _K_MN, "mx": _K_MX, "so": _K_SO}


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
# _OP_OVERFLOW: the overflow marker poisons the sum with NaN, which every later addition keeps.
_OP_INT, _OP_FLOAT, _OP_MIN, _OP_MAX, _OP_OVERFLOW = range(5)
_FIELD_INDEX = {_K_C: 0, _K_S: 1, _K_MN: 2, _K_MX: 3, _K_SO: 1}  # into [count, sum, min, max, bins]
_IGNORE = ("ignore",)  # _new_slot: a name this WindowStats never uses
_KIND_OP = {
    _K_COUNT: _OP_INT,
    _K_ERRORS: _OP_INT,
    _K_C: _OP_INT,
    _K_BIN: _OP_INT,
    _K_S: _OP_FLOAT,
    _K_MN: _OP_MIN,
    _K_MX: _OP_MAX,
    _K_SO: _OP_OVERFLOW,
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
                elif op == _OP_OVERFLOW:
                    box[i] = math.nan
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
            int(value) if op in (_OP_INT, _OP_OVERFLOW) else float(value)
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
            merge_field(out, f)
        return out


# --- per-tag hashes ------------------------------------------------------------------------------
_parsed_tag_names: dict[bytes | str, tuple | None] = {}


def parse_tag_name(raw: bytes | str) -> tuple | None:
    """(metric, tag, value, kind, field or None, bin key or None) of a per-tag hash entry, kind
    being "c", "e" or "b"; None for a name we did not write."""
    parsed = _parsed_tag_names.get(raw, False)
    if parsed is not False:
        return parsed
    name = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
    parts = name.split("|")
    parsed = None
    if len(parts) in (3, 4) and parts[0] and parts[1].startswith("@"):
        tag, eq, encoded = parts[1][1:].partition("=")
        if tag and eq:
            value = decode_tag_value(encoded)
            if len(parts) == 3 and parts[2] in ("c", "e"):
                parsed = (parts[0], tag, value, parts[2], None, None)
            elif len(parts) == 4 and parts[2] and parts[3].startswith("b:"):
                try:
                    parse_key(parts[3][2:])
                except ValueError:
                    pass
                else:
                    parsed = (parts[0], tag, value, "b", parts[2], parts[3][2:])
    if len(_parsed_tag_names) >= _NAME_CACHE_MAX:
        _parsed_tag_names.clear()
    _parsed_tag_names[raw] = parsed
    return parsed


class TagStats:
    """Merged per-tag counters of one tag (``by``) over any number of per-tag hashes.

    ``values`` maps each tag value to [events, errors, {bin key: count}] (the bins of `field`),
    summed over every metric, or over `metric` only. Names are resolved once per instance into
    slots, and names of other tags, metrics or fields are skipped with one set lookup, so a
    window of minute hashes merges at dict speed like WindowStats."""

    __slots__ = ("_by", "_field", "_metric", "_skip", "_slots", "values")

    def __init__(self, by: str, *, metric: str | None = None, field: str | None = None) -> None:
        self._by = by
        self._metric = metric
        self._field = field
        self.values: dict[str, list] = {}
        self._slots: dict[bytes | str, tuple] = {}
        self._skip: set = set()

    def merge_hash(self, h: Mapping) -> None:
        slots = self._slots
        skip = self._skip
        for raw, count in h.items():
            slot = slots.get(raw)
            if slot is None:
                if raw in skip:
                    continue
                slot = self._new_slot(raw)
                if slot is None:
                    skip.add(raw)
                    continue
                slots[raw] = slot
            try:
                n = int(count)
            except (TypeError, ValueError):
                continue  # not something we wrote
            box, i = slot
            box[i] += n

    def _new_slot(self, raw) -> tuple | None:
        parsed = parse_tag_name(raw)
        if parsed is None:
            return None
        metric, tag, value, kind, fname, bk = parsed
        if tag != self._by or (self._metric is not None and metric != self._metric):
            return None
        if kind == "b" and fname != self._field:
            return None
        v = self.values.get(value)
        if v is None:
            v = self.values[value] = [0, 0, {}]
        if kind == "c":
            return v, 0
        if kind == "e":
            return v, 1
        v[2].setdefault(bk, 0)
        return v[2], bk


def merge_field(into: list, f: list) -> None:
    """Merge field state `f` ([count, sum, min, max, {bin: n}]) into `into`."""
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
    estimates = quantiles_of(f[4], _QS)
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
            point["avg"] = f[1] / f[0] if math.isfinite(f[1]) else None  # None: the sum overflowed
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
    "OTHER",
    "PERCENTILES",
    "RESOLUTIONS",
    "TAG_ALPHA",
    "BatchAccumulator",
    "BucketDelta",
    "TagAdmission",
    "TagStats",
    "WindowStats",
    "apply_delta",
    "coarse_bin_key",
    "decode_tag_value",
    "encode_tag_value",
    "is_latency_field",
    "merge_field",
    "parse_tag_name",
    "plan_window",
    "sum_overflow_key",
    "timeseries",
    "timeseries_plan",
]
