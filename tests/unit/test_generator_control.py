"""generator.control: the control protocol the generator and the web API share (pure parts)."""

from __future__ import annotations

import math

import orjson
import pytest

from backend.storage.keys import Keys
from generator.control import (
    MAX_RATE,
    ControlError,
    ControlState,
    changes_from_request,
    check_profile,
    check_rate,
    parse_control,
    parse_rate,
    parse_running,
    send_control,
    status_fields,
)
from generator.traffic import PROFILES


def test_parse_control_applies_valid_fields_and_reports_bad_ones():
    current = ControlState(running=True, rate=200.0, profile="mixed")
    assert parse_control({}, current) == (current, [])
    new, problems = parse_control({"running": "0", "rate": "50.5", "profile": "original"}, current)
    assert new == ControlState(False, 50.5, "original") and problems == []
    new, problems = parse_control({"running": "maybe", "rate": "fast", "profile": "hostile"}, current)
    assert new == current
    assert len(problems) == 3
    for bad_rate in ("0", "-5", "nan", "inf", str(MAX_RATE * 2)):
        new, problems = parse_control({"rate": bad_rate}, current)
        assert new.rate == 200.0 and len(problems) == 1, bad_rate
    assert parse_control({"running": "true"}, ControlState(False, 1.0, "mixed"))[0].running is True


def test_control_state_round_trips_through_hash_fields():
    state = ControlState(running=False, rate=1234.5, profile="original")
    assert parse_control(state.as_fields(), ControlState(True, 1.0, "mixed")) == (state, [])


@pytest.mark.parametrize("running", [True, False])
@pytest.mark.parametrize("rate", [0.001, 1.0, 200.0, 1234.5, 1 / 3, MAX_RATE])
@pytest.mark.parametrize("profile", PROFILES)
def test_every_valid_state_round_trips_exactly(running, rate, profile):
    state = ControlState(running, rate, profile)
    fields = state.as_fields()
    assert all(isinstance(v, str) for v in fields.values())  # what a Redis hash holds
    assert parse_control(fields, ControlState(not running, 7.0, "mixed")) == (state, [])


def test_a_request_encodes_to_fields_that_decode_to_what_was_asked():
    current = ControlState(True, 200.0, "mixed")
    body = {"running": False, "rate": 50, "profile": "original"}
    changes = changes_from_request(body)
    assert changes == {"running": "0", "rate": "50.0", "profile": "original"}
    assert parse_control(changes, current) == (ControlState(False, 50.0, "original"), [])
    # A partial request changes only what it names.
    assert parse_control(changes_from_request({"rate": 1e3}), current) == (
        ControlState(True, 1000.0, "mixed"),
        [],
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (None, "body must be a JSON object"),
        ([1, 2], "body must be a JSON object"),
        ({}, "nothing to change"),
        ({"bogus": 1, "rate": 5}, "unknown field(s): bogus"),
        ({"running": "yes"}, "running must be true or false, not 'yes'"),
        ({"running": 1}, "running must be true or false, not 1"),
        ({"rate": -1}, "rate must be a number of events/s in (0, 100000], not -1"),
        ({"rate": 0}, "rate must be a number of events/s in (0, 100000], not 0"),
        ({"rate": True}, "rate must be a number of events/s in (0, 100000], not True"),
        ({"rate": "50"}, "rate must be a number of events/s in (0, 100000], not '50'"),
        ({"rate": MAX_RATE * 2}, "not 200000.0"),
        ({"profile": "nope"}, "profile must be one of mixed, original, not 'nope'"),
        ({"profile": None}, "profile must be one of mixed, original, not None"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(body, reason):
    with pytest.raises(ControlError) as exc:
        changes_from_request(body)
    assert reason in str(exc.value)
    assert isinstance(exc.value, ValueError)  # callers that catch ValueError still do


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"running": "maybe"}, "running must be 1 or 0, not 'maybe'"),
        ({"running": ""}, "running must be 1 or 0, not ''"),
        ({"rate": "fast"}, "rate must be a number of events/s in (0, 100000], not 'fast'"),
        ({"rate": "nan"}, "not 'nan'"),
        ({"rate": "inf"}, "not 'inf'"),
        ({"rate": "-5"}, "not '-5'"),
        ({"rate": "1e9"}, "not '1e9'"),
        ({"profile": "hostile"}, "profile must be one of mixed, original, not 'hostile'"),
    ],
)
def test_bad_hash_fields_are_ignored_with_the_reason(fields, reason):
    current = ControlState(True, 200.0, "mixed")
    new, problems = parse_control(fields, current)
    assert new == current
    assert problems == [problems[0]] and reason in problems[0]


def test_unknown_hash_fields_are_left_alone():
    current = ControlState(True, 200.0, "mixed")
    assert parse_control({"published": "5", "rate": "20"}, current) == (ControlState(True, 20.0, "mixed"), [])


def test_field_parsers_accept_the_documented_spellings():
    assert [parse_running(t) for t in ("1", "true", " ON ", "yes")] == [True] * 4
    assert [parse_running(t) for t in ("0", "false", "Off", "no")] == [False] * 4
    assert parse_rate(" 12.5 ") == 12.5 and parse_rate(str(MAX_RATE)) == MAX_RATE
    assert check_rate(3) == 3.0 and isinstance(check_rate(3), float)
    for bad in (math.nan, math.inf, 0, MAX_RATE + 1, "5", None, False):
        with pytest.raises(ControlError):
            check_rate(bad)
    assert [check_profile(p) for p in PROFILES] == list(PROFILES)


class _Pipe:
    """Records what is queued on a redis-py pipeline."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


class _Client:
    def __init__(self, pipe):
        self.pipe = pipe

    def pipeline(self, transaction=True):
        return self.pipe


def test_send_control_writes_the_dashboard_generators_hash_and_announces_it():
    keys = Keys(prefix="pb:")
    pipe = _Pipe()
    send_control(_Client(pipe), keys, {"rate": "50.0"})
    (hset, publish, execute) = pipe.calls
    assert execute[0] == "execute"
    assert hset == ("hset", (keys.generator_control,), {"mapping": {"rate": "50.0"}})
    assert publish[1][0] == keys.generator_events
    assert orjson.loads(publish[1][1]) == {"control": {"rate": "50.0"}}


def test_status_fields_are_hash_strings():
    status = {
        "running": True,
        "rate": 200.0,
        "profile": "mixed",
        "published": 5,
        "pid": 42,
        "updated": 1.5,
        "state": "running",
        "incident": {"kind": "latency", "endpoint": "/api/x"},
        "reconnects": 0,
        "unheard": 1,
        "transport": "pubsub",
        "backlog": 0,
        "dropped": 0,
    }
    fields = status_fields(status)
    assert fields["running"] == "1" and fields["rate"] == "200.0" and fields["incident"] == "latency:/api/x"
    assert all(isinstance(v, str) for v in fields.values())
    assert status_fields({**status, "incident": None, "running": False})["incident"] == ""
