"""The wire contract for events (docs/api.md): what is accepted, how it is normalized, and the
reason code for everything that is not."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from backend.core import events as ev_mod
from backend.core.events import (
    METRIC_RE,
    REASONS,
    Event,
    Rejection,
    decode,
    new_event_id,
    parse_event,
    validate,
)
from backend.core.timefmt import iso_ms, parse_iso

NOW = 1_773_835_531.5  # 2026-03-18T12:05:31.500Z
RET = 3600
FUT = 300
ISO_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def v(obj, **kw) -> Event:
    return validate(obj, now=NOW, retention_s=RET, future_tolerance_s=FUT, **kw)


def reason_of(obj) -> str:
    with pytest.raises(Rejection) as info:
        v(obj)
    rej = info.value
    assert rej.detail and isinstance(rej.detail, str)
    assert rej.as_dict() == {"reason": rej.reason, "detail": rej.detail}
    assert rej.reason in REASONS
    return rej.reason


def ref_iso(ts: float) -> str:
    """Slow reference formatter: integer microseconds through datetime, milliseconds truncated."""
    dt = datetime(1970, 1, 1) + timedelta(microseconds=round(ts * 1_000_000))
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


# --- the original design's events ---------------------------------------------------------------
ORIGINAL = [
    ({"metric": "latency", "value": {"ms": 412}, "ts": "2026-03-18T12:05:31.123456"}, {"ms": 412.0}),
    ({"metric": "orders", "value": {"amount": 123.45, "status": "completed"}}, {"amount": 123.45}),
    ({"metric": "page_views", "value": {"count": 12}}, {"count": 12.0}),
    ({"metric": "signups", "value": {"plan": "pro"}}, {}),
    ({"metric": "errors", "value": {"code": 502, "msg": "simulated"}}, {"code": 502.0}),
]


@pytest.mark.parametrize(("obj", "fields"), ORIGINAL)
def test_original_design_events_are_accepted_unchanged(obj, fields):
    original = orjson.loads(orjson.dumps(obj))
    ev = v(obj)
    assert ev.metric == obj["metric"]
    assert ev.fields == fields
    assert ev.data["value"] == original["value"]
    # ints stay ints in the stored event, even though fields are floats
    for key, item in original["value"].items():
        assert type(ev.data["value"][key]) is type(item)
    assert ev.data["status"] == "ok" and ev.error is False  # value.status is a label
    assert list(ev.data) == ["id", "metric", "value", "ts", "status"]
    assert ISO_RE.fullmatch(ev.data["ts"])
    assert obj == original  # the input is not mutated


def test_original_latency_ts_is_read_as_utc_and_truncated_to_milliseconds():
    ev = v({"metric": "latency", "value": {"ms": 412}, "ts": "2026-03-18T12:05:31.123456"})
    assert ev.data["ts"] == "2026-03-18T12:05:31.123Z"
    assert ev.ts == pytest.approx(datetime(2026, 3, 18, 12, 5, 31, 123456, tzinfo=UTC).timestamp(), abs=1e-6)


def test_plain_number_value_becomes_field_value_and_keeps_its_type():
    ev = v({"metric": "m", "value": 7})
    assert ev.fields == {"value": 7.0}
    assert ev.data["value"] == 7 and type(ev.data["value"]) is int
    ev = v({"metric": "m", "value": -2.5})
    assert ev.fields == {"value": -2.5}
    assert ev.data["value"] == -2.5


@pytest.mark.parametrize(
    "obj", [{"metric": "m"}, {"metric": "m", "value": None}, {"metric": "m", "value": {}}]
)
def test_absent_null_or_empty_value_is_a_pure_count(obj):
    ev = v(obj)
    assert ev.fields == {}
    assert ev.data["value"] == obj.get("value")
    assert "value" in ev.data  # a stable shape for consumers


def test_value_object_splits_numbers_from_labels():
    ev = v({"metric": "m", "value": {"ms": 3, "bytes": 1.5, "ok": True, "why": None, "route": "/x"}})
    assert ev.fields == {"ms": 3.0, "bytes": 1.5}
    assert all(type(x) is float for x in ev.fields.values())


# --- ts ------------------------------------------------------------------------------------------
def test_absent_or_null_ts_is_now():
    for obj in ({"metric": "m"}, {"metric": "m", "ts": None}):
        ev = v(obj)
        assert ev.ts == NOW
        assert ev.data["ts"] == "2026-03-18T12:05:31.500Z"


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1_773_835_500, "2026-03-18T12:05:00.000Z"),
        (1_773_835_500.25, "2026-03-18T12:05:00.250Z"),
        (1_773_835_531.123, "2026-03-18T12:05:31.123Z"),  # binary 0.12299999 must not print .122
        (1_773_835_531.9999, "2026-03-18T12:05:31.999Z"),  # truncated, not rounded up
        ("2026-03-18T12:05:31Z", "2026-03-18T12:05:31.000Z"),
        ("2026-03-18T12:05:31.5", "2026-03-18T12:05:31.500Z"),
        ("2026-03-18T14:05:31.5+02:00", "2026-03-18T12:05:31.500Z"),
        ("2026-03-18T07:35:31.5-04:30", "2026-03-18T12:05:31.500Z"),
        ("2026-03-18 12:05:31.777+00:00", "2026-03-18T12:05:31.777Z"),
    ],
)
def test_ts_forms_normalize_to_utc_milliseconds(ts, expected):
    ev = v({"metric": "m", "ts": ts})
    assert ev.data["ts"] == expected
    assert parse_iso(ev.data["ts"]) == pytest.approx(ev.ts, abs=1e-3)


def test_ts_window_edges():
    assert v({"metric": "m", "ts": NOW - RET}).ts == NOW - RET
    assert v({"metric": "m", "ts": NOW + FUT}).ts == NOW + FUT
    assert reason_of({"metric": "m", "ts": NOW - RET - 0.001}) == "stale_ts"
    assert reason_of({"metric": "m", "ts": NOW + FUT + 0.001}) == "future_ts"
    assert reason_of({"metric": "m", "ts": "2020-01-01T00:00:00Z"}) == "stale_ts"
    assert reason_of({"metric": "m", "ts": "2030-01-01T00:00:00"}) == "future_ts"


def test_iso_ms_matches_reference_formatter_across_many_seconds():
    rng = random.Random(7)
    stamps = [NOW + rng.uniform(-5 * 86400, 5 * 86400) for _ in range(3000)]
    stamps += [float(int(NOW)) + k / 1000 for k in range(1000)]  # every millisecond of a second
    stamps += [s for s in stamps[:200]]  # repeats hit the prefix cache
    for ts in stamps:
        assert iso_ms(ts) == ref_iso(ts), ts


def test_iso_ms_prefix_cache_is_bounded():
    from backend.core import timefmt

    for sec in range(int(NOW), int(NOW) + timefmt._PREFIX_CACHE_MAX + 50):
        iso_ms(sec + 0.5)
    assert timefmt._prefix.cache_info().currsize <= timefmt._PREFIX_CACHE_MAX
    assert iso_ms(NOW) == ref_iso(NOW)


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-18T12:05:31.123456",
        "2026-03-18T12:05:31.123456Z",
        "2026-03-18T12:05:31+05:45",
        "2026-03-18T12:05:31.000001-11:00",
        "2026-03-18",
    ],
)
def test_parse_iso_agrees_with_datetime(text):
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    assert parse_iso(text) == dt.timestamp()


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2026-13-01T00:00:00", "2026-03-18T12:05:31+01:00Z", "1773835531", "x" * 200]
)
def test_parse_iso_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_iso(text)


# --- every reason code ---------------------------------------------------------------------------
LONG = "x" * 257
BAD = [
    ([1, 2], "not_object"),
    ("latency", "not_object"),
    (42, "not_object"),
    (None, "not_object"),
    ({}, "missing_metric"),
    ({"metric": None}, "missing_metric"),
    ({"value": 1}, "missing_metric"),
    ({"metric": ""}, "invalid_metric"),
    ({"metric": "a" * 101}, "invalid_metric"),
    ({"metric": "has space"}, "invalid_metric"),
    ({"metric": "pipe|name"}, "invalid_metric"),
    ({"metric": "hash#"}, "invalid_metric"),
    ({"metric": "ünïcode"}, "invalid_metric"),
    ({"metric": 5}, "invalid_metric"),
    ({"metric": ["x"]}, "invalid_metric"),
    ({"metric": "m", "value": True}, "invalid_value"),
    ({"metric": "m", "value": "12"}, "invalid_value"),
    ({"metric": "m", "value": [1, 2]}, "invalid_value"),
    ({"metric": "m", "value": {"a": {"b": 1}}}, "invalid_value"),
    ({"metric": "m", "value": {"a": [1]}}, "invalid_value"),
    ({"metric": "m", "value": {"bad key": 1}}, "invalid_value"),
    ({"metric": "m", "value": {"": 1}}, "invalid_value"),
    ({"metric": "m", "value": {"k" * 65: 1}}, "invalid_value"),
    ({"metric": "m", "value": {"label": LONG}}, "invalid_value"),
    ({"metric": "m", "value": {f"k{i}": i for i in range(33)}}, "invalid_value"),
    ({"metric": "m", "value": 2**64}, "invalid_value"),
    ({"metric": "m", "value": float("nan")}, "non_finite"),
    ({"metric": "m", "value": float("inf")}, "non_finite"),
    ({"metric": "m", "value": {"ms": float("-inf")}}, "non_finite"),
    ({"metric": "m", "ts": "soon"}, "invalid_ts"),
    ({"metric": "m", "ts": True}, "invalid_ts"),
    ({"metric": "m", "ts": [NOW]}, "invalid_ts"),
    ({"metric": "m", "ts": {"s": NOW}}, "invalid_ts"),
    ({"metric": "m", "ts": 10**30}, "invalid_ts"),
    ({"metric": "m", "ts": float("nan")}, "non_finite"),
    ({"metric": "m", "ts": 0}, "stale_ts"),
    ({"metric": "m", "ts": NOW + 86400}, "future_ts"),
    ({"metric": "m", "tags": ["a"]}, "invalid_tags"),
    ({"metric": "m", "tags": "a=b"}, "invalid_tags"),
    ({"metric": "m", "tags": {"k": 1}}, "invalid_tags"),
    ({"metric": "m", "tags": {"k": None}}, "invalid_tags"),
    ({"metric": "m", "tags": {"k": LONG}}, "invalid_tags"),
    ({"metric": "m", "tags": {"bad key": "v"}}, "invalid_tags"),
    ({"metric": "m", "tags": {f"t{i}": "v" for i in range(17)}}, "invalid_tags"),
    ({"metric": "m", "source": 12}, "invalid_source"),
    ({"metric": "m", "source": "s" * 129}, "invalid_source"),
    ({"metric": "m", "status": "ERROR"}, "invalid_status"),
    ({"metric": "m", "status": "failed"}, "invalid_status"),
    ({"metric": "m", "status": True}, "invalid_status"),
    ({"metric": "m", "id": ""}, "invalid_id"),
    ({"metric": "m", "id": 17}, "invalid_id"),
    ({"metric": "m", "id": "i" * 129}, "invalid_id"),
    ({"metric": "m", "a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, "unknown_keys"),
    ({"metric": "m", "extra": {"nested": 1}}, "unknown_keys"),
    ({"metric": "m", "extra": [1]}, "unknown_keys"),
    ({"metric": "m", "extra": LONG}, "unknown_keys"),
    ({"metric": "m", "extra": float("inf")}, "non_finite"),
]


@pytest.mark.parametrize(("obj", "reason"), BAD, ids=[f"{i}-{r}" for i, (_, r) in enumerate(BAD)])
def test_rejections_carry_the_right_reason(obj, reason):
    assert reason_of(obj) == reason


def test_every_reason_code_is_exercised():
    raised = {r for _, r in BAD} | {"too_large", "invalid_json"}  # the last two: see decode tests
    assert raised == set(REASONS) - {"internal_error", "invalid_entry"}  # the worker's own labels


def test_rejection_detail_says_what_is_wrong():
    with pytest.raises(Rejection) as info:
        v({"metric": "bad metric"})
    assert "[A-Za-z0-9_.:-]{1,100}" in info.value.detail
    assert str(info.value).startswith("invalid_metric: ")
    with pytest.raises(Rejection) as info:
        v({"metric": "m", "tags": {f"t{i}": "v" for i in range(17)}})
    assert "17" in info.value.detail and "16" in info.value.detail


# --- limits are inclusive --------------------------------------------------------------------------
def test_limits_at_their_maximum_are_accepted():
    ev = v(
        {
            "metric": "M" * 100,
            "value": {f"k{i:02d}" + "x" * 61: i for i in range(32)},
            "tags": {f"t{i:02d}" + "y" * 61: "z" * 256 for i in range(16)},
            "source": "s" * 128,
            "id": "i" * 128,
        }
    )
    assert len(ev.fields) == 32
    assert len(ev.data["tags"]) == 16
    ev = v({"metric": "m", "value": {"label": "l" * 256, "n": -(2**63)}})
    assert ev.fields == {"n": float(-(2**63))}
    assert METRIC_RE.fullmatch("a.b:c-d_e9")
    assert not METRIC_RE.fullmatch("a/b")


def test_name_cache_does_not_let_invalid_names_through_and_stays_bounded():
    for i in range(ev_mod._NAME_CACHE_MAX + 100):
        v({"metric": f"m{i}", "value": {f"f{i}": 1}, "tags": {f"t{i}": "x"}})
    assert len(ev_mod._good_metrics) <= ev_mod._NAME_CACHE_MAX
    assert len(ev_mod._good_names) <= ev_mod._NAME_CACHE_MAX
    assert reason_of({"metric": "m 1"}) == "invalid_metric"
    assert reason_of({"metric": "m", "value": {"f 1": 1}}) == "invalid_value"
    assert reason_of({"metric": "m", "tags": {"t 1": "x"}}) == "invalid_tags"


# --- status, id, source, tags, extras --------------------------------------------------------------
def test_status_error_sets_error_flag():
    ev = v({"metric": "m", "status": "error"})
    assert ev.error is True and ev.data["status"] == "error"
    ev = v({"metric": "m", "status": "ok"})
    assert ev.error is False and ev.data["status"] == "ok"


def test_given_id_is_kept_and_missing_id_is_assigned():
    assert v({"metric": "m", "id": "abc"}).data["id"] == "abc"
    ids = [v({"metric": "m"}).data["id"] for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert v({"metric": "m"}, new_id=lambda: "from-callable").data["id"] == "from-callable"
    assert v({"metric": "m", "id": "given"}, new_id=lambda: "unused").data["id"] == "given"


def test_new_event_id_reseeds_when_the_counter_runs_out(monkeypatch):
    import itertools

    first = new_event_id()
    monkeypatch.setattr(ev_mod, "_id_counter", itertools.count((1 << 48) - 1))
    last = new_event_id()
    assert last == first[:20] + "f" * 12
    after = new_event_id()
    assert after[:20] != first[:20]  # fresh random prefix
    assert len(after) == 32


def test_data_key_order_and_extras_kept_unchanged():
    obj = {
        "zeta": None,
        "tags": {"region": "eu"},
        "extra_num": 3,
        "ts": NOW,
        "source": "gen",
        "flag": False,
        "value": 1.5,
        "status": "error",
        "note": "hello",
        "metric": "m",
        "id": "e1",
    }
    ev = v(obj)
    assert list(ev.data) == [
        "id",
        "metric",
        "value",
        "ts",
        "status",
        "source",
        "tags",
        "zeta",
        "extra_num",
        "flag",
        "note",
    ]
    assert ev.data["zeta"] is None and ev.data["extra_num"] == 3 and ev.data["flag"] is False
    assert ev.data["note"] == "hello" and ev.data["tags"] == {"region": "eu"}


def test_producer_seq_is_dropped_not_counted_as_an_extra():
    ev = v({"metric": "m", "seq": 99, "a": 1, "b": 2, "c": 3, "d": 4})
    assert "seq" not in ev.data
    assert [k for k in ev.data if k in "abcd"] == ["a", "b", "c", "d"]


def test_validate_is_idempotent_on_its_own_output():
    rng = random.Random(3)
    for obj, _ in ORIGINAL:
        obj = dict(obj, tags={"r": "x"}, source="s", note=1, status=rng.choice(["ok", "error"]))
        if "ts" not in obj:
            obj["ts"] = NOW - rng.uniform(0, 100)
        first = v(obj)
        again = v(orjson.loads(orjson.dumps(first.data)))
        assert again.data == first.data
        assert list(again.data) == list(first.data)
        assert again.fields == first.fields
        assert again.error == first.error
        assert abs(again.ts - first.ts) < 1e-3  # milliseconds survive the round trip


# --- decode / parse_event ----------------------------------------------------------------------
def test_decode_checks_size_before_parsing():
    with pytest.raises(Rejection) as info:
        decode(b"{" * 101, max_bytes=100)
    assert info.value.reason == "too_large"
    assert decode(b'{"metric": "m"}', max_bytes=15) == {"metric": "m"}
    with pytest.raises(Rejection) as info:
        decode(b'{"metric": "m"}', max_bytes=14)
    assert info.value.reason == "too_large"


def test_decode_measures_str_in_utf8_bytes():
    text = '{"metric": "m", "x": "' + "€" * 10 + '"}'  # 3 bytes per euro sign
    size = len(text.encode())
    assert decode(text, max_bytes=size)["x"] == "€" * 10
    with pytest.raises(Rejection) as info:
        decode(text, max_bytes=size - 1)
    assert info.value.reason == "too_large"
    assert len(text) <= size - 1  # the character count alone would have let it through


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"metric": "m",}', "trailing comma"),
        (b"\xff\xfe", "UTF-8"),
        (b"", "not valid JSON"),
        (b'{"metric": NaN}', "not valid JSON"),
        ("\ud800", "UTF-8"),
    ],
)
def test_decode_invalid_json(raw, fragment):
    with pytest.raises(Rejection) as info:
        decode(raw, max_bytes=1000)
    assert info.value.reason == "invalid_json"
    assert fragment in info.value.detail


def test_parse_event_end_to_end():
    raw = orjson.dumps({"metric": "latency", "value": {"ms": 412}, "ts": NOW - 1, "source": "s"})
    for form in (raw, raw.decode()):
        ev = parse_event(form, now=NOW, retention_s=RET, future_tolerance_s=FUT, max_bytes=1000)
        assert ev.fields == {"ms": 412.0} and ev.ts == NOW - 1 and ev.data["source"] == "s"
    with pytest.raises(Rejection) as info:
        parse_event(b"[1]", now=NOW, retention_s=RET, future_tolerance_s=FUT, max_bytes=1000)
    assert info.value.reason == "not_object"
    with pytest.raises(Rejection) as info:
        parse_event(raw, now=NOW, retention_s=RET, future_tolerance_s=FUT, max_bytes=len(raw) - 1)
    assert info.value.reason == "too_large"
