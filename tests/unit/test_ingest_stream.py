"""The stream transport's pure parts: entries as the worker sees them, and the summary's counts."""

from __future__ import annotations

import pytest

from backend.ingest.stream import Entry, _entries, check_transport
from generator.pacing import Pacer
from generator.publisher import Summary


def test_an_entry_carries_its_event_or_says_what_is_wrong_with_it():
    good = Entry(b"1-0", {b"event": b'{"metric": "m"}', b"extra": b"ignored"})
    assert (good.raw, good.problem) == (b'{"metric": "m"}', None)
    missing = Entry(b"1-1", {b"data": b"x"})
    assert missing.problem == "stream entry has no 'event' field"
    assert missing.raw == b'{"data":"x"}'  # what there is, kept for the dead letter
    trimmed = Entry(b"1-2", None)
    assert "trimmed" in trimmed.problem and trimmed.raw == b""


def test_raw_xreadgroup_replies_in_both_protocols():
    resp2 = [[b"s", [[b"1-0", [b"event", b"a"]], [b"1-1", None]]]]
    resp3 = {b"s": [[b"1-0", [b"event", b"a"]], [b"1-1", None]]}
    for reply in (resp2, resp3):
        got = _entries(reply)
        assert [(e.id, e.raw, e.problem is None) for e in got] == [(b"1-0", b"a", True), (b"1-1", b"", False)]
    assert _entries(None) == [] and _entries([]) == []


def test_transport_names_are_checked():
    assert check_transport("stream") == "stream"
    with pytest.raises(ValueError, match="INGEST_TRANSPORT must be one of pubsub, stream"):
        check_transport("kafka")


def test_summary_names_every_way_an_event_went_missing():
    line = Summary(100, 2.0, 1, 0, 0, 50.0, not_sent=30, dropped=4, unsent=2).line()
    assert line.endswith(
        "1 reconnects, 30 not sent while Redis was down, 4 dropped from the full backlog, 2 unsent at exit"
    )
    assert "dropped" not in Summary(100, 2.0, 0, 0, 0, 50.0).line()


def test_pacer_owed_counts_what_an_outage_did_not_send():
    pacer = Pacer(100.0, now=0.0)
    pacer.record(pacer.due(0.5))
    assert pacer.owed(0.5) == 0
    assert pacer.owed(2.5) == 200  # uncapped, unlike due()
    assert pacer.due(2.5) == 200
