"""Event validation and normalization: the wire contract producers depend on (docs/api.md).

Every message the worker accepts, and every event POSTed to /api/ingest, goes through
`validate`, at tens of thousands of events per second. The checks are therefore written for the
common case: exact ``type(x) is ...`` tests instead of isinstance chains, and names (metrics,
field keys, tag keys) checked by regex only the first time they are seen, because a deployment
has a few hundred distinct names, not millions.

`validate` is idempotent on its own output: /api/ingest validates, publishes ``Event.data`` on the
channel, and the worker validates that again.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from dataclasses import dataclass

import orjson

from backend.core.timefmt import iso_ms, parse_iso

REASONS = (
    "too_large",
    "invalid_json",
    "not_object",
    "missing_metric",
    "invalid_metric",
    "invalid_value",
    "non_finite",
    "invalid_ts",
    "stale_ts",
    "future_ts",
    "invalid_tags",
    "invalid_source",
    "invalid_status",
    "invalid_id",
    "unknown_keys",
    "internal_error",  # not raised here: the worker's label for a bug while validating
    "invalid_entry",  # not raised here: a stream entry with no event field, or trimmed unread
)

METRIC_MAX = 100
NAME_MAX = 64  # value-object keys and tag keys
LABEL_MAX = 256  # label strings, tag values, tolerated extra strings
VALUE_KEYS_MAX = 32
TAGS_MAX = 16
SOURCE_MAX = 128
ID_MAX = 128
EXTRAS_MAX = 4

METRIC_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
FIELD_RE = NAME_RE  # the spelling the aggregate code uses

# JSON integers orjson can write back out; orjson itself never produces others, but validate()
# also takes Python objects from callers that might.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

_KNOWN = frozenset(("metric", "value", "ts", "tags", "source", "status", "id"))
# The worker assigns `seq`; a producer's own `seq` would be overwritten anyway, so it is dropped
# here rather than counted as one of the tolerated extras.
_RESERVED = frozenset(("seq",))
_KNOWN_OR_RESERVED = _KNOWN | _RESERVED


class Rejection(Exception):
    """Why an event was refused. `reason` is one of REASONS; `detail` is for a human."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def as_dict(self) -> dict:
        return {"reason": self.reason, "detail": self.detail}


@dataclass(slots=True)
class Event:
    data: dict
    ts: float
    metric: str
    fields: dict[str, float]
    error: bool


# --- fast name checks --------------------------------------------------------------------------
# Sets of names already known to be valid. Bounded: past the limit they are emptied and refill,
# so a producer inventing a new name per event costs regex time, never memory.
_NAME_CACHE_MAX = 8192
_good_metrics: set[str] = set()
_good_names: set[str] = set()


def _metric_ok(name: str) -> bool:
    if name in _good_metrics:
        return True
    if METRIC_RE.fullmatch(name) is None:
        return False
    if len(_good_metrics) >= _NAME_CACHE_MAX:
        _good_metrics.clear()
    _good_metrics.add(name)
    return True


def _name_ok(name: str) -> bool:
    if name in _good_names:
        return True
    if type(name) is not str or NAME_RE.fullmatch(name) is None:
        return False
    if len(_good_names) >= _NAME_CACHE_MAX:
        _good_names.clear()
    _good_names.add(name)
    return True


# --- ids ---------------------------------------------------------------------------------------
# A random per-process prefix plus a counter: unique in practice like uuid4, at a third of the
# cost of os.urandom per event. The prefix is re-drawn in a forked child, which would otherwise
# hand out the parent's exact sequence.
_id_lock = threading.Lock()
_ID_SPAN = 1 << 48
_id_prefix = os.urandom(10).hex()
_id_counter = itertools.count()


def _reseed_ids() -> None:
    global _id_prefix, _id_counter
    with _id_lock:
        _id_prefix = os.urandom(10).hex()
        _id_counter = itertools.count()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_ids)


def new_event_id() -> str:
    """32 hex characters, like ``uuid4().hex``."""
    n = next(_id_counter)  # itertools.count is atomic under the GIL
    if n >= _ID_SPAN:
        _reseed_ids()
        return new_event_id()
    # hex(2**48 + n) is "0x1" followed by exactly 12 digits: a zero-padded counter without the
    # cost of a format spec.
    return _id_prefix + hex(_ID_SPAN + n)[3:]


# --- decode ------------------------------------------------------------------------------------
def decode(raw: bytes | str, *, max_bytes: int) -> object:
    if type(raw) is bytes:  # what Redis hands over: the common case first
        if len(raw) > max_bytes:
            raise Rejection("too_large", f"event is {len(raw)} bytes; at most {max_bytes}")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Rejection("invalid_json", f"not valid JSON: {exc}") from None
    if isinstance(raw, str):
        # A str is at most 4 UTF-8 bytes per character: only encode when the answer is unclear.
        if len(raw) > max_bytes:
            size = len(raw)  # at least this many bytes
        elif len(raw) * 4 > max_bytes:
            try:
                size = len(raw.encode())
            except UnicodeEncodeError as exc:
                raise Rejection("invalid_json", f"not valid UTF-8: {exc.reason}") from None
        else:
            size = 0
    elif isinstance(raw, bytes | bytearray | memoryview):
        size = len(raw)
    else:
        raise Rejection("invalid_json", f"expected bytes or str, got {type(raw).__name__}")
    if size > max_bytes:
        raise Rejection("too_large", f"event is {size} bytes; at most {max_bytes}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejection("invalid_json", f"not valid JSON: {exc}") from None


# --- validate ----------------------------------------------------------------------------------
def _number(x, where: str) -> float | None:
    """float(x) when x is a JSON number; None when it is not a number at all."""
    t = type(x)
    if t is float:
        if x - x != 0.0:  # NaN and +-inf; cheaper than a math.isfinite call
            raise Rejection("non_finite", f"{where} must be a finite number, got {x!r}")
        return x
    if t is int:
        if not _INT_MIN <= x <= _INT_MAX:
            raise Rejection("invalid_value", f"{where} is an integer outside the 64-bit range")
        return float(x)
    return None


def _validate_value(value, fields: dict[str, float]) -> None:
    if value is None:
        return
    f = _number(value, "value")
    if f is not None:
        fields["value"] = f
        return
    if type(value) is not dict:
        raise Rejection(
            "invalid_value",
            f"value must be a finite number, an object or null, got {_type_name(value)}",
        )
    if len(value) > VALUE_KEYS_MAX:
        raise Rejection("invalid_value", f"value has {len(value)} keys; at most {VALUE_KEYS_MAX}")
    for key, item in value.items():
        if key not in _good_names and not _name_ok(key):
            raise Rejection(
                "invalid_value", f"value key {_clip(key)!r} must match [A-Za-z0-9_.:-]{{1,{NAME_MAX}}}"
            )
        t = type(item)
        # Numbers first, checked inline: most fields are measured, and _number() would need its
        # error text's name built for every field.
        if t is float:
            if item - item != 0.0:
                raise Rejection("non_finite", f"value.{key} must be a finite number, got {item!r}")
            fields[key] = item
        elif t is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise Rejection("invalid_value", f"value.{key} is an integer outside the 64-bit range")
            fields[key] = float(item)
        elif t is str:
            if len(item) > LABEL_MAX:
                raise Rejection("invalid_value", f"value.{key} is longer than {LABEL_MAX} characters")
        elif t is not bool and item is not None:
            raise Rejection(
                "invalid_value",
                f"value.{key} must be a number (measured) or a string, bool or null (label), "
                f"got {_type_name(item)}",
            )


def _validate_ts(ts, now: float, retention_s: int, future_tolerance_s: int) -> float:
    if ts is None:
        return now
    t = type(ts)
    if t is str:
        try:
            sec = parse_iso(ts)
        except (ValueError, OverflowError):
            raise Rejection(
                "invalid_ts", f"ts {_clip(ts)!r} is not unix seconds or an ISO-8601 timestamp"
            ) from None
    elif t is float or t is int:
        if t is int and not _INT_MIN <= ts <= _INT_MAX:
            raise Rejection("invalid_ts", "ts is an integer outside the 64-bit range")
        sec = float(ts)
        if sec - sec != 0.0:
            raise Rejection("non_finite", f"ts must be a finite number, got {ts!r}")
    else:
        raise Rejection("invalid_ts", f"ts must be unix seconds or an ISO-8601 string, got {_type_name(ts)}")
    if sec < now - retention_s:
        raise Rejection(
            "stale_ts", f"ts {_clip(str(ts))} is more than {retention_s}s old (retention); not aggregated"
        )
    if sec > now + future_tolerance_s:
        raise Rejection("future_ts", f"ts {_clip(str(ts))} is more than {future_tolerance_s}s in the future")
    return sec


def _validate_tags(tags) -> None:
    if type(tags) is not dict:
        raise Rejection("invalid_tags", f"tags must be an object, got {_type_name(tags)}")
    if len(tags) > TAGS_MAX:
        raise Rejection("invalid_tags", f"tags has {len(tags)} entries; at most {TAGS_MAX}")
    for key, item in tags.items():
        if key not in _good_names and not _name_ok(key):
            raise Rejection(
                "invalid_tags", f"tag key {_clip(key)!r} must match [A-Za-z0-9_.:-]{{1,{NAME_MAX}}}"
            )
        if type(item) is not str or len(item) > LABEL_MAX:
            raise Rejection("invalid_tags", f"tags.{key} must be a string of at most {LABEL_MAX} characters")


def _extra_ok(key: str, item) -> bool:
    t = type(item)
    if t is str:
        return len(item) <= LABEL_MAX
    if item is None or t is bool:
        return True
    if t is float:
        if item - item != 0.0:
            raise Rejection("non_finite", f"{_clip(key, 40)} must be a finite number, got {item!r}")
        return True
    return t is int and _INT_MIN <= item <= _INT_MAX


def validate(obj: object, *, now: float, retention_s: int, future_tolerance_s: int, new_id=None) -> Event:
    if type(obj) is not dict:
        raise Rejection("not_object", f"an event must be a JSON object, got {_type_name(obj)}")

    metric = obj.get("metric")
    if metric is None:
        raise Rejection("missing_metric", "metric is required")
    if type(metric) is not str or (metric not in _good_metrics and not _metric_ok(metric)):
        raise Rejection(
            "invalid_metric",
            f"metric must match [A-Za-z0-9_.:-]{{1,{METRIC_MAX}}}, got {_clip(repr(metric))}",
        )

    value = obj.get("value")
    fields: dict[str, float] = {}
    _validate_value(value, fields)

    ts = obj.get("ts")
    # The common case inline: unix seconds within the window (NaN fails both comparisons).
    if type(ts) is not float or not now - retention_s <= ts <= now + future_tolerance_s:
        ts = _validate_ts(ts, now, retention_s, future_tolerance_s)

    status = obj.get("status")
    if status is None or status == "ok":
        status = "ok"
    elif status != "error":
        raise Rejection("invalid_status", f'status must be "ok" or "error", got {_clip(repr(status))}')

    event_id = obj.get("id")
    if event_id is None:
        event_id = new_id() if new_id is not None else new_event_id()
    elif type(event_id) is not str or not 0 < len(event_id) <= ID_MAX:
        raise Rejection("invalid_id", f"id must be a string of 1-{ID_MAX} characters")

    data = {"id": event_id, "metric": metric, "value": value, "ts": iso_ms(ts), "status": status}

    source = obj.get("source")
    if source is not None:
        if type(source) is not str or len(source) > SOURCE_MAX:
            raise Rejection("invalid_source", f"source must be a string of at most {SOURCE_MAX} characters")
        data["source"] = source
    tags = obj.get("tags")
    if tags is not None:
        _validate_tags(tags)
        data["tags"] = tags
    # One C-level subset test keeps the common case (known keys only) off the slow path.
    if not obj.keys() <= _KNOWN:
        extras = [k for k in obj if k not in _KNOWN_OR_RESERVED]
        if len(extras) > EXTRAS_MAX:
            raise Rejection(
                "unknown_keys",
                f"{len(extras)} unknown keys ({', '.join(_clip(k, 40) for k in extras[:8])}); "
                f"at most {EXTRAS_MAX}, with scalar values",
            )
        for key in extras:
            item = obj[key]
            if not _extra_ok(key, item):
                raise Rejection(
                    "unknown_keys",
                    f"unknown key {_clip(key, 40)!r} must hold a string of at most {LABEL_MAX} "
                    f"characters, a finite number, a bool or null; got {_type_name(item)}",
                )
            data[key] = item

    # Positional: a slots dataclass's __init__ with keywords costs twice as much.
    return Event(data, ts, metric, fields, status == "error")


def parse_event(
    raw: bytes | str, *, now: float, retention_s: int, future_tolerance_s: int, max_bytes: int
) -> Event:
    return validate(
        decode(raw, max_bytes=max_bytes),
        now=now,
        retention_s=retention_s,
        future_tolerance_s=future_tolerance_s,
    )


def _type_name(x) -> str:
    if x is None:
        return "null"
    return {
        bool: "a bool",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(x), type(x).__name__)


def _clip(text, limit: int = 80) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "FIELD_RE",
    "METRIC_RE",
    "NAME_RE",
    "REASONS",
    "Event",
    "Rejection",
    "decode",
    "new_event_id",
    "parse_event",
    "validate",
]


def numbered(first: int, bodies: list[bytes], stride: int = 1) -> list[bytes]:
    """Events' JSON objects (without `seq`) given seqs first, first + stride, ...: the wire form.
    (The stride is INGEST_PARTITIONS: a partition's events are numbered n * P + k.)

    Splicing the number in front of the encoded object saves decoding and re-encoding events
    that were encoded once already."""
    return [b'{"seq":%d,%s' % (first + offset * stride, body[1:]) for offset, body in enumerate(bodies)]
