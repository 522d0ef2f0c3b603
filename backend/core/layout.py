"""The bucket hashes' field names: how they are spelled, and parsed back.

Storage layout (the store writes it, core decides it). Every ``res``-second interval starting at
``start`` is one Redis hash with, per metric and per measured field::

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

Under load the worker holds a batch's updates of the current minute's hash back and writes
several batches' merged a little later (aggregate.MinuteHold, ingest/batch.py): the current
minute's hash may trail its seconds by up to MINUTE_HOLD_MS, and a closed minute's is complete
once the worker has written past the minute's end (later than LATE_WRITE_S, the write counts
as late).

Every operation is an increment or a keep-min/keep-max, so applying deltas is commutative:
several workers (or a retried batch split differently) land on the same totals, and any set of
buckets merges into one window by the same rules. Metric and field names cannot contain "|" or
"#" (see events.METRIC_RE), so the names never collide.

The write side (backend/core/aggregate.py) spells these names; the read side
(backend/core/window.py) and the analytics read them back through parse_name/parse_tag_name.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import unquote

from backend.core.sketch import parse_key

RESOLUTIONS = (1, 60)
COARSE = RESOLUTIONS[-1]
OTHER = "__other__"  # where tag values past the per-bucket limit are counted

# Readers take a second of the current minute as settled OPEN_GRACE_S after it ends: from then on
# they add it to a merge kept per minute instead of reading it with every request. A writer that
# writes into a second more than LATE_WRITE_S after its end counts the batch as late (the stats
# hash's `late` field), and readers that see that count change read the whole current minute
# again until it has been still for a while. The gap between the two is the margin for a batch's
# trip to Redis and for the clocks of writer and reader hosts.
OPEN_GRACE_S = 0.5
LATE_WRITE_S = 0.2

COUNT_MATCH = "*|#c"  # HSCAN MATCH pattern of every metric's event counter (K_COUNT)

# What a bucket hash entry is: parse_name's `kind`.
K_COUNT, K_ERRORS, K_C, K_S, K_MN, K_MX, K_BIN, K_SO = range(8)
_SUFFIX_KIND = {"c": K_C, "s": K_S, "mn": K_MN, "mx": K_MX, "so": K_SO}


def sum_overflow_key(sum_key: str) -> str:
    """The marker field the writer sets when adding to ``{metric}|{field}|s`` overflowed."""
    return sum_key + "o"


def is_latency_field(name: str) -> bool:
    """``ms`` or ``*_ms``: the fields whose percentiles are tracked per tag value and watched for
    anomalies."""
    return name == "ms" or name.endswith("_ms")


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


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)


def _bin_of(suffix: str) -> str | None:
    """The bin key of a ``b:KEY`` suffix; None for a junk one (which must not cost the whole
    field its percentiles: the entry alone is skipped)."""
    try:
        parse_key(suffix[2:])
    except ValueError:
        return None
    return suffix[2:]


# Parsing is cached: buckets repeat the same few thousand names (metrics x fields x bins), and
# every WindowStats / TagStats / breakdown resolves each name it meets. lru_cache is as fast as
# the dict it replaced (scripts/cache_bench.py: 65 vs 70 ns a hit) and bounded by recency.
@lru_cache(maxsize=65536)
def parse_name(raw: bytes | str) -> tuple | None:
    """(metric, field or None, kind, bin key or None) of a bucket hash entry, kind one of the
    K_* constants; None for a name we did not write."""
    parts = _text(raw).split("|")
    if len(parts) == 2 and parts[0]:
        if parts[1] == "#c":
            return parts[0], None, K_COUNT, None
        if parts[1] == "#e":
            return parts[0], None, K_ERRORS, None
    elif len(parts) == 3 and parts[0] and parts[1]:
        suffix = parts[2]
        if suffix.startswith("b:"):
            bk = _bin_of(suffix)
            return None if bk is None else (parts[0], parts[1], K_BIN, bk)
        if suffix in _SUFFIX_KIND:
            return parts[0], parts[1], _SUFFIX_KIND[suffix], None
    return None


@lru_cache(maxsize=65536)
def parse_tag_name(raw: bytes | str) -> tuple | None:
    """(metric, tag, value, kind, field or None, bin key or None) of a per-tag hash entry, kind
    being "c", "e" or "b"; None for a name we did not write."""
    parts = _text(raw).split("|")
    if len(parts) not in (3, 4) or not parts[0] or not parts[1].startswith("@"):
        return None
    tag, eq, encoded = parts[1][1:].partition("=")
    if not tag or not eq:
        return None
    value = decode_tag_value(encoded)
    if len(parts) == 3 and parts[2] in ("c", "e"):
        return parts[0], tag, value, parts[2], None, None
    if len(parts) == 4 and parts[2] and parts[3].startswith("b:"):
        bk = _bin_of(parts[3])
        if bk is not None:
            return parts[0], tag, value, "b", parts[2], bk
    return None


__all__ = [
    "COARSE",
    "COUNT_MATCH",
    "K_BIN",
    "K_C",
    "K_COUNT",
    "K_ERRORS",
    "K_MN",
    "K_MX",
    "K_S",
    "K_SO",
    "OTHER",
    "RESOLUTIONS",
    "decode_tag_value",
    "encode_tag_value",
    "is_latency_field",
    "parse_name",
    "parse_tag_name",
    "sum_overflow_key",
]
