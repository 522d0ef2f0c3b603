"""Analytics against a real Redis: the evaluator on a controlled clock and the REST API in process
(the live server end to end: test_analytics_live.py)."""

from __future__ import annotations

import random
import time
from collections import defaultdict

import pytest
import redis

from backend import create_app
from backend.analytics.rules import rule_from_json
from backend.core.aggregate import BatchAccumulator
from backend.core.events import validate
from backend.storage.alerts import AnalyticsStore
from backend.storage.keys import Keys
from backend.storage.store import Store, connect
from backend.tasks.evaluator import Evaluator

T0 = 1_773_835_200  # a minute boundary, in the past: the controlled clock's epoch


@pytest.fixture
def keys(names) -> Keys:
    return Keys(prefix=names["KEY_PREFIX"], recent=names["RECENT_KEY"])


@pytest.fixture
def store(redis_url, keys):
    s = Store(connect(redis_url), keys, recent_max=50, retention_s=10**9, dead_letter_max=10)
    yield s
    s.redis.close()


def write_seconds(store: Store, seconds: dict[int, list[dict]], stamped: bool = False) -> None:
    """Write events into their per-second buckets the way the worker does (tags included); events
    are stamped mid-second unless `stamped`."""
    for sec, events in sorted(seconds.items()):
        acc = BatchAccumulator(100)
        for obj in events:
            obj = obj if stamped else {"ts": sec + 0.5, **obj}
            acc.add(validate(obj, now=sec + 1, retention_s=10**9, future_tolerance_s=10))
        store.write_batch([], acc.deltas(), [], received=len(events), tag_deltas=acc.tag_deltas())


def errors_second(n: int, errors: int, metric: str = "api") -> list[dict]:
    return [
        {"metric": metric, "value": {"ms": 20.0}, "status": "error" if i < errors else "ok"} for i in range(n)
    ]


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Role:
    """Stands in for the ingest worker: only its lease role matters to the evaluator."""

    def __init__(self, role: str):
        self.role = role


FAST = {
    "ANALYTICS_SETTLE_MS": 500,
    "ANALYTICS_WINDOW_S": 1,
    "ANALYTICS_HISTORY_S": 30,
    "ALERT_CLEAR_S": 3,
    "ANOMALY_ENABLED": False,
    "ALERT_DEFAULT_RULES": False,  # the built-in rules have tests of their own
}


def evaluator(store, config=None, *, clock, worker=None) -> Evaluator:
    return Evaluator(
        {**FAST, **(config or {})},
        store.redis,
        store.keys,
        None,
        worker=worker,
        clock=clock,
        sleep=lambda s: None,
    )


# --- the evaluator on a controlled clock ---------------------------------------------------------------
def test_rule_alert_opens_and_closes_at_the_right_seconds(store):
    analytics = AnalyticsStore(store.redis, store.keys)
    analytics.put_rule(rule_from_json({"rule": "api: error_rate > 0.2 for 3s", "id": "bad"}))
    # errors in seconds 40..49 of the epoch minute, clean around them
    write_seconds(store, {T0 + i: errors_second(10, 5 if 40 <= i < 50 else 0) for i in range(70)})
    clock = Clock(T0 + 36)  # due: second 34 (over 1.5 s ago at settle 0.5)
    ev = evaluator(store, clock=clock)
    ev.tick()
    assert ev.engine is not None and ev.next_second == T0 + 35
    timeline = []
    for i in range(37, 72):
        clock.t = T0 + i
        ev.tick()
        timeline.append((i, [(a["state"], a["id"]) for a in analytics.list("all", 10)]))
    # true from second 40 (judged at t=41): open at t=44, judged when second 43 is due (clock 45)
    states = {i: [s for s, _ in alerts] for i, alerts in timeline}
    assert states[44] == [] and states[45] == ["open"]
    # false from second 50 (t=51): clears at t=54, judged at clock 55
    assert states[54] == ["open"] and states[55] == ["closed"]
    (alert,) = analytics.list("closed", 10)
    assert alert["opened_at"] == "2026-03-18T12:00:44.000Z"  # data time, not when it was judged
    assert alert["closed_at"] == "2026-03-18T12:00:54.000Z"
    assert alert["kind"] == "rule" and alert["rule_id"] == "bad" and alert["value"] == 0.0
    assert ev.evaluated == 35  # seconds 35..69, each judged once, live


def test_a_restart_adopts_open_alerts_and_closes_what_ended_meanwhile(store):
    analytics = AnalyticsStore(store.redis, store.keys)
    analytics.put_rule(rule_from_json({"rule": "api: error_rate > 0.2", "id": "a"}))
    analytics.put_rule(rule_from_json({"rule": "other: error_rate > 0.2", "id": "b"}))
    bad = {T0 + i: errors_second(10, 5) + errors_second(10, 5 if i < 20 else 0, "other") for i in range(60)}
    write_seconds(store, bad)
    clock = Clock(T0 + 12)
    first = evaluator(store, clock=clock)
    first.tick()  # replays history: both conditions hold now, so both open
    opened = {a["rule_id"]: a["id"] for a in analytics.list("open", 10)}
    assert set(opened) == {"a", "b"}
    # the evaluator goes away; "other" recovers at second 20; a new evaluator starts at t=40
    clock.t = T0 + 40
    second = evaluator(store, clock=clock)
    second.tick()
    still = analytics.list("open", 10)
    assert [(a["rule_id"], a["id"]) for a in still] == [("a", opened["a"])]  # same alert, adopted
    (closed,) = analytics.list("closed", 10)
    assert closed["id"] == opened["b"] and "resolved" in closed["message"]
    # closed when the replay saw it clear (false from second 20, t=21, + ALERT_CLEAR_S 3), not at restart
    assert closed["closed_at"] == "2026-03-18T12:00:24.000Z"
    # and a standby evaluator does nothing at all
    standby = evaluator(store, clock=clock, worker=Role("standby"))
    standby.tick()
    assert standby.engine is None and len(analytics.list("all", 10)) == 2


def test_two_evaluators_at_once_open_one_alert(store):
    """A failover's overlap: both judge the same second; the by-key index makes them agree."""
    analytics = AnalyticsStore(store.redis, store.keys)
    analytics.put_rule(rule_from_json({"rule": "api: error_rate > 0.2", "id": "a"}))
    write_seconds(store, {T0 + i: errors_second(10, 0 if i < 20 else 5) for i in range(30)})
    clock = Clock(T0 + 15)
    one, two = evaluator(store, clock=clock), evaluator(store, clock=clock)
    one.tick()
    two.tick()
    clock.t = T0 + 25
    one.tick()
    two.tick()
    alerts = analytics.list("all", 10)
    assert len(alerts) == 1 and alerts[0]["state"] == "open"
    assert one.ids == two.ids
    assert one.published == 1 and two.published == 0  # pushed once


def test_rules_file_replaces_file_rules_and_keeps_api_rules(store, tmp_path):
    analytics = AnalyticsStore(store.redis, store.keys)
    analytics.put_rule(rule_from_json({"rule": "rate > 1", "id": "mine"}))
    analytics.put_rule(rule_from_json({"rule": "rate > 2", "id": "stale"}, source="file"))
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - error_rate > 0.05 for 30s\n"
        "  - {id: slow, name: slow api, metric: api, expr: p95(ms), op: '>', threshold: 500, for_s: 60}\n"
    )
    ev = evaluator(store, {"RULES_FILE": str(path)}, clock=Clock(T0 + 100))
    ev.tick()
    rules = {r.id: r for r in analytics.rules()}
    assert "stale" not in rules and "mine" in rules
    assert (
        rules["slow"].source == "file" and rules["slow"].text == "api: p95(ms) > 500 for 1m severity warning"
    )
    assert {r.source for r in rules.values()} == {"api", "file"} and len(rules) == 3
    # a broken file leaves the stored rules alone
    path.write_text("rules:\n  - rate >\n")
    evaluator(store, {"RULES_FILE": str(path)}, clock=Clock(T0 + 100)).tick()
    assert {r.id for r in analytics.rules()} == set(rules)


def test_closed_alerts_are_trimmed_to_the_limit(store):
    analytics = AnalyticsStore(store.redis, store.keys, keep_closed=3)
    ids = []
    for i in range(5):
        alert_id, created = analytics.open_alert(f"k{i}", {"message": str(i), "state": "open"}, T0 + i)
        assert created
        ids.append(alert_id)
        assert analytics.close_alert(alert_id, f"k{i}", {"closed_at": "x"}, T0 + i)["state"] == "closed"
    assert [a["id"] for a in analytics.list("closed", 10)] == ids[:1:-1]
    assert analytics.get(ids[0]) is None and analytics.get(ids[1]) is None  # hashes deleted too
    assert analytics.close_alert(ids[4], "k4", {}, T0) is None  # closing twice does nothing


# --- the REST API in process -------------------------------------------------------------------------
@pytest.fixture
def api(redis_url, names):
    app = create_app(
        {"TESTING": True, "REDIS_URL": redis_url, "ASYNC_MODE": "threading", "RULES_MAX": 3, **names}
    )
    client = app.test_client()
    # what a script sends for a write without a JSON body (ack, delete): see test_failures.py
    client.environ_base["HTTP_X_REQUESTED_WITH"] = "test"
    return client


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rule": "error_rate > 5"}, "rule"),
        ({"rule": "http_request:error_rate > 0.05"}, "rule"),
        ({"rule": "rate > 1 for 3 fortnights"}, "rule"),
        ({"expr": "p95(ms)", "op": "=>", "threshold": 1}, "op"),
        ({"expr": "p95(ms)", "op": ">", "threshold": "high"}, "threshold"),
        ({"expr": "p95(ms)", "op": ">"}, "threshold"),
        ({"expr": "p95(ms)", "op": ">", "threshold": 1, "severity": "page"}, "severity"),
        ({"expr": "p95(ms)", "op": ">", "threshold": 1, "for_s": -5}, "for_s"),
        ({"expr": "p95(ms)", "op": ">", "threshold": 1, "colour": "red"}, "colour"),
        ([1, 2], "body"),
    ],
)
def test_rule_validation_errors_are_400_naming_the_field(api, body, field):
    resp = api.post("/api/rules", json=body)
    assert resp.status_code == 400
    got = resp.get_json()
    assert got["field"] == field and got["status"] == 400 and got["error"]


def test_rules_crud(api):
    assert api.post("/api/rules", data="rate > 1", content_type="text/plain").status_code == 400
    created = api.post("/api/rules", json={"rule": "http_request: error_rate > 5% for 30s", "name": "5xx"})
    assert created.status_code == 201
    rule = created.get_json()
    assert rule["id"].startswith("r-") and rule["threshold"] == 0.05 and rule["for_s"] == 30
    assert rule["rule"] == "http_request: error_rate > 0.05 for 30s severity warning"
    replaced = api.post(
        "/api/rules", json={"id": rule["id"], "rule": "error_rate > 0.1", "severity": "critical"}
    )
    assert replaced.status_code == 200 and replaced.get_json()["metric"] is None
    api.post("/api/rules", json={"expr": "p95(ms)", "op": ">", "threshold": 500, "metric": "latency"})
    api.post("/api/rules", json={"rule": "rate(orders) < 1 for 2m"})
    listed = [r for r in api.get("/api/rules").get_json()["rules"] if not r["builtin"]]
    assert len(listed) == 3 and {r["signal"] for r in listed} == {"error_rate", "p95", "rate"}
    full = api.post("/api/rules", json={"rule": "rate > 100"})
    assert full.status_code == 409 and "RULES_MAX" in full.get_json()["error"]
    assert api.delete(f"/api/rules/{rule['id']}").get_json() == {"deleted": rule["id"]}
    assert api.delete(f"/api/rules/{rule['id']}").status_code == 404
    assert api.delete("/api/rules/not%20an%20id").status_code == 404
    assert len([r for r in api.get("/api/rules").get_json()["rules"] if not r["builtin"]]) == 2


def test_built_in_rules_are_listed_can_be_turned_off_and_restored(api):
    listed = {r["id"]: r for r in api.get("/api/rules").get_json()["rules"]}
    assert {"builtin-error-rate", "builtin-latency-p95", "builtin-no-data"} <= set(listed)
    err = listed["builtin-error-rate"]
    assert err["builtin"] is True and err["enabled"] is True and err["source"] == "builtin"
    assert (err["threshold"], err["clear_threshold"], err["critical"], err["critical_clear"]) == (
        0.02,
        0.01,
        0.05,
        0.02,
    )
    assert (err["window_s"], err["min_rate"]) == (60, 2)  # 120 events/min
    off = api.patch("/api/rules/builtin-error-rate", json={"enabled": False})
    assert off.status_code == 201 and off.get_json()["enabled"] is False and off.get_json()["builtin"] is True
    again = {r["id"]: r for r in api.get("/api/rules").get_json()["rules"]}["builtin-error-rate"]
    assert again["enabled"] is False and again["critical"] == 0.05  # the rest kept
    bad = api.patch("/api/rules/builtin-error-rate", json={"clear_threshold": 0.5})
    assert bad.status_code == 400 and bad.get_json()["field"] == "clear_threshold"
    assert api.delete("/api/rules/builtin-error-rate").get_json() == {
        "deleted": "builtin-error-rate",
        "restored": True,
    }
    assert {r["id"]: r for r in api.get("/api/rules").get_json()["rules"]}["builtin-error-rate"][
        "enabled"
    ] is True
    assert api.delete("/api/rules/builtin-no-data").status_code == 409
    assert api.patch("/api/rules/nope", json={"enabled": False}).status_code == 404
    put = api.put("/api/rules/my-rule", json={"rule": "rate > 5"})
    assert put.status_code == 201 and put.get_json()["id"] == "my-rule"


def test_writes_need_the_api_key_when_one_is_set(redis_url, names):
    client = create_app(
        {"TESTING": True, "REDIS_URL": redis_url, "ASYNC_MODE": "threading", "INGEST_API_KEY": "k", **names}
    ).test_client()
    assert client.post("/api/rules", json={"rule": "rate > 1"}).status_code == 401
    assert client.post("/api/rules", json={"rule": "rate > 1"}, headers={"X-API-Key": "k"}).status_code == 201
    assert client.delete("/api/rules/x").status_code == 401
    assert client.post("/api/alerts/x/ack").status_code == 401
    assert client.get("/api/rules").status_code == 200


def test_alerts_list_and_ack(api, redis_url, names, keys):
    analytics = AnalyticsStore(redis.Redis.from_url(redis_url), keys)
    opened = [
        analytics.open_alert(f"k{i}", {"state": "open", "message": f"m{i}"}, T0 + i)[0] for i in range(3)
    ]
    analytics.close_alert(opened[0], "k0", {"closed_at": "2026-03-18T12:00:09.000Z"}, T0 + 9)
    assert [a["id"] for a in api.get("/api/alerts?state=open").get_json()["alerts"]] == opened[:0:-1]
    assert [a["id"] for a in api.get("/api/alerts?state=closed").get_json()["alerts"]] == opened[:1]
    body = api.get("/api/alerts").get_json()
    assert body["state"] == "all" and [a["id"] for a in body["alerts"]] == [opened[2], opened[1], opened[0]]
    assert [a["id"] for a in api.get("/api/alerts?limit=1").get_json()["alerts"]] == [opened[2]]
    assert "key" not in body["alerts"][0]  # internal
    acked = api.post(f"/api/alerts/{opened[1]}/ack")
    assert acked.status_code == 200 and acked.get_json()["acked"] is True and acked.get_json()["acked_at"]
    assert api.get("/api/alerts?state=open").get_json()["alerts"][1]["acked"] is True
    assert api.post(f"/api/alerts/{opened[0]}/ack").get_json()["state"] == "closed"  # closed ones too
    assert api.post("/api/alerts/nope/ack").status_code == 404
    assert api.get("/api/alerts?state=bogus").get_json()["param"] == "state"
    assert api.get("/api/alerts?limit=0").status_code == 400


def test_top_and_trends_parameters(api):
    assert api.get("/api/metrics/top").get_json()["param"] == "by"
    assert api.get("/api/metrics/top?by=endpoint&order=slowest").get_json()["param"] == "order"
    assert api.get("/api/metrics/top?by=endpoint&field=bytes").get_json()["param"] == "field"
    assert api.get("/api/metrics/top?by=endpoint&n=101").get_json()["param"] == "n"
    assert api.get("/api/metrics/trends?window=5").get_json()["param"] == "window"
    empty = api.get("/api/metrics/top?by=endpoint").get_json()
    assert (empty["top"], empty["other"], empty["distinct"], empty["field"]) == ([], None, 0, "ms")


def test_trends_from_the_buckets(api, store):
    now = int(time.time())
    rng = random.Random(3)
    seconds: dict[int, list[dict]] = defaultdict(list)
    for i in range(130):  # from 125 s ago to 5 s ahead: any request in the next seconds sees 120 full ones
        sec = now - 125 + i
        seconds[sec] += [{"metric": "growing"}] * (5 + i // 4)
        seconds[sec] += [{"metric": "steady"}] * (20 + rng.randint(-3, 3))
        seconds[sec] += [{"metric": "shrinking"}] * max(1, 40 - i // 4)
    write_seconds(store, seconds)
    body = api.get("/api/metrics/trends?window=120").get_json()
    assert (body["window_seconds"], body["step_seconds"]) == (120, 1)
    trends = body["trends"]
    assert {m: t["trend"] for m, t in trends.items()} == {
        "growing": "rising",
        "steady": "stable",
        "shrinking": "falling",
    }
    assert trends["growing"]["slope_per_s"] == pytest.approx(0.25, rel=0.05)
    assert trends["growing"]["points"] == 120
    only = api.get("/api/metrics/trends?window=120&metric=steady").get_json()["trends"]
    assert list(only) == ["steady"]
    hour = api.get("/api/metrics/trends?window=3600").get_json()
    assert hour["step_seconds"] == 60 and hour["trends"]["growing"]["points"] == 60
