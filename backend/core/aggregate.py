"""The write side of the buckets: pre-aggregating a batch of events into per-bucket deltas.

A batch is added event by event into per-(second, metric) state (backend/core/state.py), rolled up
into minutes, and written out as deltas of the bucket hashes (their field names:
backend/core/layout.py) that the store's write script applies. Per-tag counters (for top-N and the
breakdown series) are gathered beside them when the accumulator is built with
``tag_values_max > 0``. apply_delta is the reference semantics of applying a delta, on a dict.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain

from backend.core.events import Event
from backend.core.layout import (
    COARSE,
    OTHER,
    RESOLUTIONS,
    encode_tag_value,
    is_latency_field,
    sum_overflow_key,
)
from backend.core.sketch import GAMMA, bin_key, parse_key
from backend.core.state import FieldState, MetricState, merge_at


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


class _Memo(dict):
    """fn(key), remembered: ``memo[key]``. Bounded: emptied when full, then refills.

    Hand-written rather than functools.lru_cache because it sits in add(), once per event and
    field: a hit is a plain dict subscript, about twice as cheap as an lru_cache call
    (scripts/cache_bench.py, bin key: dict 40 ns, this class 47 ns, lru_cache 79 ns,
    cachetools.LRUCache 706 ns a hit). The keys repeat a lot (integer milliseconds, prices,
    status codes), so emptying it now and then costs a few misses, where tracking recency would
    cost on every hit."""

    __slots__ = ("_fn", "_max")

    def __init__(self, fn: Callable, maxsize: int) -> None:
        super().__init__()
        self._fn = fn
        self._max = maxsize

    def __missing__(self, key):
        if len(self) >= self._max:
            self.clear()
        value = self[key] = self._fn(key)
        return value


class _Group(MetricState):
    """Running state of one (second, metric) group of a batch, and its events' tags."""

    __slots__ = ("tagged",)

    def __init__(self) -> None:
        super().__init__()
        # None, or [tags of events not counted through a latency field, tags of error events,
        # {latency field: {coarse bin key: [tags]}}, the group's counting field]
        self.tagged: list | None = None


_MEMO_MAX = 16384
_bin_keys = _Memo(bin_key, _MEMO_MAX)  # value -> its sketch bin key: log+ceil+format saved


# Per-tag latency sketches are coarser than the main one: TAG_BIN_MERGE neighbouring bins become
# one, stored under the fine key nearest its geometric middle, so Sketch reads it unchanged with
# about TAG_ALPHA relative error. It cuts the per-tag bins (Redis writes) several fold at high
# rates, and ranking endpoints by p95 needs no 1% accuracy.
TAG_BIN_MERGE = 5
TAG_ALPHA = GAMMA ** (TAG_BIN_MERGE / 2) - 1  # ~5.1%


def coarse_bin_key(key: str) -> str:
    """The fine bin key representing `key`'s coarse (TAG_BIN_MERGE-wide) bin."""
    sign, index = parse_key(key)
    if sign == 0:
        return key
    # coarse bin j holds fine bins TAG_BIN_MERGE*(j-1)+1 .. TAG_BIN_MERGE*j (for index > 0)
    j = -(-index // TAG_BIN_MERGE)
    middle = TAG_BIN_MERGE * j - TAG_BIN_MERGE // 2
    return f"{'p' if sign > 0 else 'n'}{middle}"


_coarse_keys = _Memo(coarse_bin_key, _MEMO_MAX)
_latency_names = _Memo(is_latency_field, _MEMO_MAX)


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
        oldest = self._newest - self.KEEP_MINUTES * COARSE
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
        self._groups: dict[tuple[int, str], _Group] = {}
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
            group = self._groups[key] = _Group()
        group.count += 1
        if ev.error:
            group.errors += 1
        self.events += 1
        tagged = None
        if self._tags_on:
            tags = ev.data.get("tags")
            if tags:
                tagged = group.tagged
                if tagged is None:
                    tagged = group.tagged = [[], [], {}, None]
                if ev.error:
                    tagged[1].append(tags)
        values = ev.fields
        if not values:
            if tagged is not None:
                tagged[0].append(tags)
            return
        fields = group.fields
        bin_keys = _bin_keys
        counted = False
        for name, x in values.items():
            bk = bin_keys[x]
            acc = fields.get(name)
            if acc is None:
                fields[name] = FieldState(1, x, x, x, {bk: 1})
            else:
                acc.count += 1
                acc.sum += x
                if x < acc.min:  # type: ignore[operator]  # set with the field's first value
                    acc.min = x
                elif x > acc.max:  # type: ignore[operator]
                    acc.max = x
                bins = acc.bins
                bins[bk] = bins.get(bk, 0) + 1
            if tagged is None:
                continue
            if _latency_names[name]:
                # The group's first latency field also counts its events (tag_deltas sums its
                # bins), which saves counting most events' tags twice.
                if tagged[3] is None:
                    tagged[3] = name
                if name == tagged[3]:
                    counted = True
                bk = _coarse_keys[bk]
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

    def deltas(self, hold: MinuteHold | None = None) -> dict[tuple[int, int], BucketDelta]:
        """The batch's bucket deltas; with a `hold`, its minute's part goes there instead."""
        out: dict[tuple[int, int], BucketDelta] = {}
        held = hold.minute if hold is not None else None
        for res in RESOLUTIONS:
            if res == 1:
                groups: Mapping[tuple[int, str], MetricState] = self._groups
            else:
                groups = _roll_up(self._groups, res)
            for (start, metric), group in groups.items():
                if start == held and res == COARSE:
                    # A fresh state of _roll_up's, unique per metric (`held` is None without a hold).
                    hold.groups[metric] = group  # type: ignore[union-attr]
                    continue
                delta = out.get((res, start))
                if delta is None:
                    delta = out[(res, start)] = BucketDelta()
                _emit(delta, metric, group)
        return out

    def tag_deltas(self, hold: MinuteHold | None = None) -> dict[tuple[int, int], BucketDelta]:
        """Deltas of the per-tag hashes (``Keys.tag_bucket``); empty unless tags are counted.
        With a `hold`, its minute's part goes there instead.

        Counts each group's (tag, value) pairs, sends values the admission table refuses to
        ``__other__``, and adds every count to its second's delta; a minute's delta is the sum of
        its seconds'.

        Written for both shapes of batch: live events put hundreds of events in a group, counted
        with Counter.update over chains (C speed); late events (a backlog spread over the hour)
        put about one event in each of thousands of groups, so everything per group is kept to
        dict lookups. A (tag, value) pair is admitted, and its field-name prefix built, once per
        (minute, metric) of the batch rather than once per second."""
        if not self._tags_on:
            return {}
        admit = self._admission.admit  # type: ignore[union-attr]  # set when tags are on
        out: dict[tuple[int, int], BucketDelta] = {}
        # (minute, metric) -> {(tag, value): "metric|@tag=admitted value|"}
        prefixes_by: dict[tuple[int, str], dict[tuple[str, str], str]] = {}
        for (sec, metric), group in self._groups.items():
            tagged = group.tagged
            if tagged is None:
                continue
            minute = sec - sec % COARSE
            prefixes = prefixes_by.get((minute, metric))
            if prefixes is None:
                prefixes = prefixes_by[(minute, metric)] = {}
            delta = out.get((1, sec))
            if delta is None:
                delta = out[(1, sec)] = BucketDelta()
            s_incr = delta.incr
            uncounted, error_tags, latency, count_field = tagged

            for fname, by_bin in latency.items():
                counting = fname == count_field
                bin_infix = fname + "|b:"
                for bk, tag_dicts in by_bin.items():
                    tail = bin_infix + bk
                    for pair, n in _pair_counts(tag_dicts).items():
                        prefix = prefixes.get(pair) or _tag_prefix(pair, prefixes, admit, minute, metric)
                        if counting:
                            k = prefix + "c"
                            s_incr[k] = s_incr.get(k, 0) + n
                        k = prefix + tail
                        s_incr[k] = s_incr.get(k, 0) + n
            for source, suffix in ((uncounted, "c"), (error_tags, "e")):
                if not source:
                    continue
                for pair, n in _pair_counts(source).items():
                    prefix = prefixes.get(pair) or _tag_prefix(pair, prefixes, admit, minute, metric)
                    k = prefix + suffix
                    s_incr[k] = s_incr.get(k, 0) + n
        # A minute's counters are its seconds' summed (the same names): a batch of live events
        # mostly falls in one second, whose counters are copied in C.
        minutes: dict[int, dict[str, int]] = {}
        for (_, sec), delta in out.items():
            minute = sec - sec % COARSE
            m_incr = minutes.get(minute)
            if m_incr is None:
                minutes[minute] = dict(delta.incr)
            else:
                for k, n in delta.incr.items():
                    m_incr[k] = m_incr.get(k, 0) + n
        for minute, incr in minutes.items():
            if hold is not None and minute == hold.minute:
                hold.tags = incr
            else:
                out[(COARSE, minute)] = BucketDelta(incr=incr)
        return out


class MinuteHold:
    """One batch's updates of one minute's bucket and per-tag hash, kept apart to be written
    later, merged with other batches' (release()). At 40,000 events/s a batch goes every 5-25
    ms, and each wrote the same minute-hash fields the previous one had: 30-40% of Redis's work
    on a batch. The worker's rules for holding and releasing: backend/ingest/batch.py."""

    __slots__ = ("groups", "minute", "tags")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.groups: dict[str, MetricState] = {}  # per metric
        self.tags: dict[str, int] = {}  # per-tag counters, by field name

    def __bool__(self) -> bool:
        return bool(self.groups or self.tags)


def release(
    holds: Iterable[MinuteHold],
) -> tuple[dict[tuple[int, int], BucketDelta], dict[tuple[int, int], BucketDelta]]:
    """The merged updates of `holds` as (bucket deltas, per-tag deltas), one delta per minute.
    The holds are left as they are (a write that is lost releases them again)."""
    groups: dict[int, dict[str, MetricState]] = {}
    tags: dict[int, Counter] = {}
    for hold in holds:
        merged = groups.setdefault(hold.minute, {})
        for metric, group in hold.groups.items():
            merge_at(merged, metric, group, MetricState)
        if hold.tags:
            tags.setdefault(hold.minute, Counter()).update(hold.tags)
    deltas: dict[tuple[int, int], BucketDelta] = {}
    for minute, merged in groups.items():
        if merged:
            delta = deltas[(COARSE, minute)] = BucketDelta()
            for metric, group in merged.items():
                _emit(delta, metric, group)
    return deltas, {(COARSE, minute): BucketDelta(incr=dict(c)) for minute, c in tags.items()}


def merge_deltas(
    into: dict[tuple[int, int], BucketDelta], more: Mapping[tuple[int, int], BucketDelta]
) -> None:
    """Add the deltas `more` into `into`, bucket by bucket, by apply_delta's rules (`more` is
    left as it is)."""
    for key, delta in more.items():
        own = into.get(key)
        if own is None:
            own = into[key] = BucketDelta()
        for k, n in delta.incr.items():
            own.incr[k] = own.incr.get(k, 0) + n
        for k, x in delta.incr_float.items():
            own.incr_float[k] = own.incr_float.get(k, 0.0) + x
        for k, x in delta.mins.items():
            if k not in own.mins or x < own.mins[k]:
                own.mins[k] = x
        for k, x in delta.maxs.items():
            if k not in own.maxs or x > own.maxs[k]:
                own.maxs[k] = x


def _pair_counts(tag_dicts: list[dict]) -> Mapping[tuple[str, str], int]:
    """How many of `tag_dicts` hold each (tag, value) pair."""
    if len(tag_dicts) == 1:  # the common case for late events, and at low rates
        return dict.fromkeys(tag_dicts[0].items(), 1)
    counts: Counter = Counter()
    counts.update(chain.from_iterable(map(dict.items, tag_dicts)))
    return counts


def _tag_prefix(pair: tuple[str, str], prefixes: dict, admit, minute: int, metric: str) -> str:
    """The field-name prefix `pair` counts under, after admission; remembered in `prefixes`."""
    tag = pair[0]
    prefix = prefixes[pair] = f"{metric}|@{tag}={encode_tag_value(admit(minute, metric, tag, pair[1]))}|"
    return prefix


def _roll_up(groups: Mapping[tuple[int, str], MetricState], res: int) -> dict[tuple[int, str], MetricState]:
    """The groups summed per `res`-second bucket (their tags are rolled up by tag_deltas())."""
    merged: dict[tuple[int, str], MetricState] = {}
    for (sec, metric), group in groups.items():
        merge_at(merged, (sec - sec % res, metric), group, MetricState)
    return merged


def _emit(delta: BucketDelta, metric: str, group: MetricState) -> None:
    # (res, start, metric) is unique per group, so every key here is new: plain assignment.
    incr = delta.incr
    incr[f"{metric}|#c"] = group.count
    if group.errors:
        incr[f"{metric}|#e"] = group.errors
    for name, f in group.fields.items():
        prefix = f"{metric}|{name}|"
        incr[prefix + "c"] = f.count
        delta.incr_float[prefix + "s"] = f.sum
        delta.mins[prefix + "mn"] = f.min  # type: ignore[assignment]  # a field has a value
        delta.maxs[prefix + "mx"] = f.max  # type: ignore[assignment]
        bin_prefix = prefix + "b:"
        for bk, n in f.bins.items():
            incr[bin_prefix + bk] = n


__all__ = [
    "RESOLUTIONS",  # its home is layout; still importable from here, as the store does
    "TAG_ALPHA",
    "BatchAccumulator",
    "BucketDelta",
    "MinuteHold",
    "TagAdmission",
    "apply_delta",
    "coarse_bin_key",
    "merge_deltas",
    "release",
    "shared_admission",
]
