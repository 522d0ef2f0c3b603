"""Rules firing and clearing at the right times, on a controlled clock (pure: no Redis, no sleep)."""

from __future__ import annotations

from collections import deque

import pytest

from backend.analytics.anomaly import AnomalySettings
from backend.analytics.engine import Engine, rule_key
from backend.analytics.hysteresis import Hysteresis
from backend.analytics.replay import second_stats
from backend.analytics.rules import rule_from_json
from backend.analytics.signals import Frame

T0 = 1_773_835_200  # a minute boundary


# --- the state machine -----------------------------------------------------------------------------
def run(h: Hysteresis, values: list[bool], t0: float = 0.0) -> list[tuple[float, str]]:
    out = []
    for i, active in enumerate(values):
        event = h.step(t0 + i, active)
        if event:
            out.append((t0 + i, event))
    return out


def test_opens_after_for_s_and_closes_after_clear_s():
    h = Hysteresis(for_s=3, clear_s=2)
    # true from t=2: open at t=5 (held at 2, 3, 4, 5); false from t=7: close at t=9
    assert run(h, [False, False, True, True, True, True, True, False, False, False, False]) == [
        (5, "open"),
        (9, "close"),
    ]


def test_a_single_flip_restarts_either_timer():
    h = Hysteresis(for_s=3, clear_s=2)
    values = [True, True, True, False] + [True] * 4 + [False, True] + [False] * 3
    # pending from 0, broken at 3; pending again from 4, open at 7; clearing from 8, broken at 9;
    # clearing again from 10, closed at 12
    assert run(h, values) == [(7, "open"), (12, "close")]


def test_zero_durations_open_and_close_at_once():
    h = Hysteresis(for_s=0, clear_s=0)
    assert run(h, [True, False, True, True, False]) == [(0, "open"), (1, "close"), (2, "open"), (4, "close")]


def test_force_firing_then_clear():
    h = Hysteresis(for_s=10, clear_s=1)
    h.force_firing()
    assert h.firing
    assert run(h, [True, False, False]) == [(2, "close")]
    with pytest.raises(ValueError):
        Hysteresis(for_s=-1, clear_s=0)


# --- rules through the engine ------------------------------------------------------------------------
def http_second(sec: int, n: int, errors: int, ms: float = 100.0, metric: str = "http_request") -> list[dict]:
    return [
        {
            "metric": metric,
            "value": {"ms": ms},
            "ts": sec + (i + 0.5) / n,
            "status": "error" if i < errors else "ok",
        }
        for i in range(n)
    ]


def drive(
    engine: Engine, seconds: list[list[dict]], window_s: int = 1, t0: int = T0
) -> list[tuple[float, str, str]]:
    """Feed one list of events per second from t0; (time since t0, action, key) per transition."""
    recent: deque = deque(maxlen=window_s)
    out = []
    for i, events in enumerate(seconds):
        sec = t0 + i
        recent.append(second_stats(events, now=sec + 1).get(sec, {}))
        for tr in engine.step(float(sec + 1), Frame(recent, window_s)):
            out.append((sec + 1 - t0, tr.action, tr.key, tr.alert))
    return out


def rules_engine(*texts: str, clear_s: float = 10) -> Engine:
    engine = Engine(AnomalySettings(), clear_s=clear_s, anomalies=False)
    rules = [rule_from_json({"rule": t, "id": f"r{i}"}) for i, t in enumerate(texts)]
    assert engine.set_rules(rules, T0) == []
    return engine


def test_error_rate_rule_fires_after_for_and_clears_after_clear_on_the_data_clock():
    engine = rules_engine("http_request: error_rate > 0.05 for 30s severity critical")
    # seconds 0..19: 0% errors; 20..79: 10%; 80..: 0%
    seconds = [http_second(T0 + i, 20, 2 if 20 <= i < 80 else 0) for i in range(100)]
    got = drive(engine, seconds)
    # true first when second 20 is over (t=21); fires at t=21+30. False first at t=81: clears at 91.
    assert [(t, action) for t, action, _, _ in got] == [(51, "open"), (91, "close")]
    opened = got[0][3]
    assert opened["kind"] == "rule"
    assert opened["severity"] == "critical"
    assert opened["value"] == pytest.approx(0.1)
    assert opened["threshold"] == 0.05
    assert opened["opened_at"] == T0 + 51
    assert opened["metric"] == "http_request"
    assert opened["rule_id"] == "r0"
    assert got[1][3]["closed_at"] == T0 + 91
    assert got[1][3]["value"] == 0.0


def test_a_dip_restarts_the_for_timer_and_a_blip_restarts_the_clear_timer():
    engine = rules_engine("p95(http_request.ms) > 500 for 10s", clear_s=5)
    ms = [100.0] * 5 + [900.0] * 8 + [100.0] + [900.0] * 12 + [100.0] * 3 + [900.0] + [100.0] * 10
    seconds = [http_second(T0 + i, 10, 0, ms=x) for i, x in enumerate(ms)]
    got = [(t, action) for t, action, _, _ in drive(engine, seconds)]
    # slow 5..12 (8 s: not enough), fast 13, slow 14..25: true since t=15, fires at t=25;
    # fast 26..28, slow 29, fast from 30: false since t=31, clears at t=36
    assert got == [(25, "open"), (36, "close")]


def test_rate_rule_fires_when_a_metric_stops():
    engine = rules_engine("rate(orders) < 1 for 5s")
    seconds = [http_second(T0 + i, 3, 0, metric="orders") if i < 10 else [] for i in range(20)]
    got = [(t, action) for t, action, _, _ in drive(engine, seconds)]
    assert got == [(16, "open")]  # no orders from second 10 (t=11): rate 0 < 1 for 5 s


def test_unscoped_rule_is_judged_per_metric():
    engine = rules_engine("error_rate >= 0.5")
    seconds = [http_second(T0, 4, 2, metric="a") + http_second(T0, 4, 0, metric="b")]
    seconds.append(http_second(T0 + 1, 4, 0, metric="a") + http_second(T0 + 1, 4, 3, metric="b"))
    got = [(t, action, key) for t, action, key, _ in drive(engine, seconds)]
    # a: 50% in second 0 -> opens at t=1; b: 75% in second 1 -> opens at t=2 (a is clearing then)
    assert got == [(1, "open", rule_key("r0", "a")), (2, "open", rule_key("r0", "b"))]


def test_window_smooths_the_judged_value():
    engine = rules_engine("http_request: error_rate > 0.3")
    # one bad second among fast ones: 100% errors once; over a 5 s window that is 20%
    seconds = [http_second(T0 + i, 10, 10 if i == 5 else 0) for i in range(10)]
    assert drive(engine, seconds, window_s=5) == []
    engine = rules_engine("http_request: error_rate > 0.3")
    assert [(t, a) for t, a, _, _ in drive(engine, seconds, window_s=1)] == [(6, "open")]


def test_deleting_or_changing_a_firing_rule_closes_its_alert_renaming_does_not():
    engine = rules_engine("rate > 1")
    got = drive(engine, [http_second(T0, 5, 0)])
    assert [(t, a) for t, a, _, _ in got] == [(1, "open")]
    renamed = rule_from_json({"rule": "rate > 1", "id": "r0", "name": "busy"})
    assert engine.set_rules([renamed], T0 + 2) == []
    assert engine.rule_states[rule_key("r0", "http_request")].rule.name == "busy"
    changed = rule_from_json({"rule": "rate > 2", "id": "r0"})
    closed = engine.set_rules([changed], T0 + 3)
    assert [(tr.action, tr.key) for tr in closed] == [("close", rule_key("r0", "http_request"))]
    assert "rule changed" in closed[0].alert["message"]
    drive(engine, [http_second(T0 + 3, 5, 0)], t0=T0 + 3)  # fires again under the new definition
    closed = engine.set_rules([], T0 + 5)
    assert [tr.action for tr in closed] == ["close"]
    assert "rule deleted" in closed[0].alert["message"]
    assert engine.open_keys() == set()


def test_adopted_rule_alert_clears_like_any_other():
    engine = rules_engine("http_request: error_rate > 0.05 for 1m", clear_s=3)
    key = rule_key("r0", "http_request")
    assert engine.adopt(key, T0 - 100, "warning")
    assert engine.open_keys() == {key}
    assert not engine.adopt(rule_key("gone", "http_request"), T0, "warning")
    assert not engine.adopt(rule_key("r0", "other_metric"), T0, "warning")
    got = drive(engine, [http_second(T0 + i, 10, 0) for i in range(5)])
    assert [(t, a, k) for t, a, k, _ in got] == [(4, "close", key)]  # false since t=1, clear_s 3
