# ruff: noqa: F811 -- the fixtures imported from test_analytics.py are redefined as arguments
"""Analytics end to end on the live server: generator incidents and rules -> `alert` events over
Socket.IO, webhooks, top-N against exact counts."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter, defaultdict

import numpy as np
import orjson
import redis
import requests

from backend.core.aggregate import TAG_ALPHA
from backend.core.layout import OTHER
from generator.traffic import TrafficModel
from tests.helpers import wait_for
from tests.integration.sio import Recorder
from tests.integration.test_analytics import errors_second, keys, store, write_seconds  # noqa: F401
from tests.unit.test_analytics_webhook import Hook


def publish(r: redis.Redis, channel: str, events: list) -> None:
    pipe = r.pipeline(transaction=False)
    for event in events:
        pipe.publish(channel, orjson.dumps(event))
    pipe.execute()


class Traffic(threading.Thread):
    """Publishes the generator's mixed profile in real time, 20 ticks a second, from `start_at`."""

    def __init__(self, r: redis.Redis, channel: str, rate: float, model: TrafficModel, start_at: float):
        super().__init__(daemon=True)
        self.r, self.channel, self.rate, self.model = r, channel, rate, model
        self.last = start_at
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.published = 0

    def incident(self, kind: str, duration_s: float, **kw):
        with self.lock:
            return self.model.force_incident(kind, max(time.time(), self.last), duration_s=duration_s, **kw)

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            now = time.time()
            n = int(self.rate * (now - self.last))
            if n > 0:
                with self.lock:
                    events = self.model.events(n, self.last, now)
                publish(self.r, self.channel, events)
                self.published += n
                self.last = now

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


def alert_recorder(url: str) -> tuple[Recorder, list[dict]]:
    rec = Recorder(url)
    return rec, rec.alerts


def test_generator_incident_opens_an_anomaly_alert_and_it_closes_after(server_factory, r, store, keys):
    """Baselines come from history replayed when the evaluator becomes active: the test holds the
    worker lease (so the server's worker and evaluator stand by), writes 90 s of the generator's
    traffic straight into the buckets, lets go of the lease, and publishes live traffic from where
    the history ends. Then a forced latency incident must open an alert and close it after."""
    rate = 400
    r.set(keys.worker_lease, "the-test-holds-it", px=60_000)
    server = server_factory(
        wait_ready=False,
        env={
            "ANALYTICS_HISTORY_S": "90",
            "ANOMALY_MIN_HISTORY_S": "60",
            "ANALYTICS_WINDOW_S": "3",
            "ANALYTICS_SETTLE_MS": "300",
            "ALERT_CLEAR_S": "3",
            "ALERT_DEFAULT_RULES": "false",  # this is about anomaly detection
        },
    )
    wait_for(lambda: _up(server), timeout=20, message="server up")
    assert server.get("/api/alerts").json()["count"] == 0
    model = TrafficModel("mixed", seed=1, burst_every_s=0)
    now = time.time()
    history_end = math.floor(now) + 5
    write_seconds(
        store,
        {
            sec: [{k: v for k, v in e.items() if k != "id"} for e in model.events(rate, sec, sec + 1 - 1e-6)]
            for sec in range(history_end - 90, history_end)
        },
        stamped=True,
    )
    rec, alerts = alert_recorder(server.url)
    traffic = Traffic(r, server.channel, rate, model, start_at=history_end)
    with rec:
        r.delete(keys.worker_lease)
        wait_for(lambda: server.get("/api/ready").status_code == 200, message="worker active")
        traffic.start()
        try:
            wait_for(lambda: time.time() > history_end + 2, timeout=15, message="live traffic")
            before = list(alerts)
            incident = traffic.incident("latency", 8.0, endpoint="/api/products", latency_factor=8.0)
            started = time.monotonic()

            def p95_alerts(state):
                return [
                    a
                    for a in list(alerts)
                    if a["metric"] == "http_request" and a["signal"] == "p95" and a["state"] == state
                ]

            opened = wait_for(lambda: p95_alerts("open"), timeout=10, message="p95 alert open")[0]
            detected_after = time.monotonic() - started
            located = wait_for(  # and the endpoint's own series names where it is
                lambda: [a for a in list(alerts) if (a.get("tags") or {}).get("endpoint") == "/api/products"],
                timeout=10,
                message="an alert on the endpoint",
            )[0]
            closed = wait_for(  # that one (the endpoint's own p95 alert may close first)
                lambda: [a for a in p95_alerts("closed") if a["id"] == opened["id"]],
                timeout=20,
                message="p95 alert closed",
            )[0]
        finally:
            traffic.stop()
    assert not [a for a in before if a["metric"] == "http_request"], before
    assert detected_after < 6, detected_after
    assert opened["kind"] == "anomaly" and opened["field"] == "ms" and opened["direction"] == "above"
    assert opened["zscore"] >= 4 and opened["severity"] in ("warning", "critical")
    # It opens while the incident's share of the window is still growing: the value at that moment
    # is well above the baseline, not yet at its peak (a run saw 1.99x).
    assert opened["value"] > 1.5 * opened["baseline"]
    assert located["metric"] == "http_request" and located["kind"] == "anomaly"
    assert closed["id"] == opened["id"] and closed["closed_at"] > opened["opened_at"]
    assert closed["closed_at"] >= incident_end_iso(incident.end)
    stored = server.get("/api/alerts?state=closed").json()["alerts"]
    assert opened["id"] in {a["id"] for a in stored}
    assert "replayed 90s" in server.log()


def _up(server) -> bool:
    try:
        return server.get("/api/health").status_code == 200
    except requests.RequestException:
        return False


def incident_end_iso(ts: float) -> str:
    from backend.core.timefmt import iso_ms

    return iso_ms(math.floor(ts))


def test_rule_fires_is_acked_clears_and_calls_the_webhook(server_factory, r):
    with Hook() as hook:
        server = server_factory(
            env={
                "ALERT_WEBHOOK_URL": hook.url,
                "ALERT_CLEAR_S": "2",
                "ANALYTICS_SETTLE_MS": "300",
                "ALERT_DEFAULT_RULES": "false",
            }
        )
        rec, alerts = alert_recorder(server.url)
        with rec:
            resp = server.post(
                "/api/rules", json={"rule": "checkout: error_rate > 0.5 for 2s severity critical"}
            )
            assert resp.status_code == 201
            rule_id = resp.json()["id"]
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline and not any(a["state"] == "open" for a in list(alerts)):
                publish(r, server.channel, errors_second(20, 15, "checkout"))
                time.sleep(0.1)
            opened = wait_for(lambda: [a for a in list(alerts) if a["state"] == "open"], message="open")[0]
            assert (opened["kind"], opened["rule_id"], opened["severity"]) == ("rule", rule_id, "critical")
            assert opened["threshold"] == 0.5 and opened["value"] > 0.5
            listed = server.get("/api/alerts?state=open").json()["alerts"]
            assert [a["id"] for a in listed] == [opened["id"]]
            assert (
                server.post(f"/api/alerts/{opened['id']}/ack", headers={"X-Requested-With": "t"}).json()[
                    "acked"
                ]
                is True
            )
            wait_for(lambda: [a for a in list(alerts) if a.get("acked")], message="ack pushed")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(a["state"] == "closed" for a in list(alerts)):
                publish(r, server.channel, errors_second(20, 0, "checkout"))
                time.sleep(0.1)
            closed = wait_for(lambda: [a for a in list(alerts) if a["state"] == "closed"], message="closed")[
                0
            ]
        assert closed["id"] == opened["id"] and closed["acked"] is True
        wait_for(lambda: len(hook.bodies) >= 2, message="two webhook calls")
        assert [(b["event"], b["alert"]["id"]) for b in hook.bodies] == [
            ("open", opened["id"]),
            ("close", opened["id"]),
        ]


def test_top_n_matches_exact_counts(server_factory, r):
    server = server_factory()
    rng = random.Random(9)
    endpoints = ["/a", "/b", "/c", "/d|pipe", "/e"]
    events, exact = [], defaultdict(lambda: [0, 0, []])
    for i in range(3000):
        endpoint = rng.choices(endpoints, weights=[50, 20, 15, 10, 5])[0]
        region = rng.choice(["eu", "us"])
        ms = rng.lognormvariate(3 + endpoints.index(endpoint) * 0.3, 0.5)
        error = rng.random() < 0.05 * (1 + endpoints.index(endpoint))
        metric = "api" if i % 4 else "web"
        events.append(
            {
                "metric": metric,
                "value": {"ms": ms},
                "tags": {"endpoint": endpoint, "region": region},
                "status": "error" if error else "ok",
            }
        )
        if metric == "api":
            e = exact[endpoint]
            e[0] += 1
            e[1] += error
            e[2].append(ms)
    publish(r, server.channel, events)
    wait_for(
        lambda: server.get("/api/metrics/aggregate?window=60").json()["total"]["count"] == 3000,
        timeout=15,
        message="3000 aggregated",
    )
    body = server.get("/api/metrics/top?window=60&metric=api&by=endpoint&n=10").json()
    assert [(row["value"], row["count"], row["errors"]) for row in body["top"]] == sorted(
        ((v, c, e) for v, (c, e, _) in exact.items()), key=lambda t: (-t[1], t[0])
    )
    assert body["distinct"] == 5 and body["other"] is None
    for row in body["top"]:
        samples = sorted(exact[row["value"]][2])
        p95 = float(np.quantile(samples, 0.95, method="inverted_cdf"))
        assert abs(row["p95"] - p95) / p95 <= TAG_ALPHA * (1 + 1e-9)
    by_errors = server.get("/api/metrics/top?window=60&metric=api&by=endpoint&order=errors&n=2").json()
    assert [row["value"] for row in by_errors["top"]] == [
        v for v, _ in sorted(exact.items(), key=lambda kv: (-kv[1][1], -kv[1][1] / kv[1][0], kv[0]))[:2]
    ]
    by_p95 = server.get("/api/metrics/top?window=60&metric=api&by=endpoint&order=p95&n=1").json()
    assert by_p95["top"][0]["value"] == "/e"  # the slowest by construction
    regions = server.get("/api/metrics/top?window=60&by=region").json()  # every metric
    assert sum(row["count"] for row in regions["top"]) == 3000
    assert Counter(e["tags"]["region"] for e in events) == {
        row["value"]: row["count"] for row in regions["top"]
    }


def test_tag_values_past_the_limit_are_counted_as_other(server_factory, r):
    server = server_factory(env={"TOP_MAX_TAG_VALUES": "3"})
    ts = time.time()  # one second, one minute: the first three users seen are the admitted ones
    events = [{"metric": "login", "tags": {"user": f"u{i % 10}"}, "ts": ts} for i in range(100)]
    publish(r, server.channel, events)
    wait_for(
        lambda: server.get("/api/metrics/aggregate?window=60").json()["total"]["count"] == 100,
        message="100 aggregated",
    )
    body = server.get("/api/metrics/top?window=60&by=user&metric=login").json()
    assert [row["count"] for row in body["top"]] == [10, 10, 10]
    assert body["other"]["value"] == OTHER and body["other"]["count"] == 70
