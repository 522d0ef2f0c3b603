"""The built-in rules on a real server with default settings: a fresh server alerts on an error
burst without any rule created and without anomaly learning, and silence becomes "no data"."""

from __future__ import annotations

import threading
import time

import orjson
import redis

from tests.helpers import wait_for
from tests.integration.sio import Recorder


class ErrorTraffic(threading.Thread):
    """Publishes `rate` request-like events a second in real time (10 ticks a second) on one
    metric, the share `error_share` of them errors, spread evenly (no luck involved)."""

    def __init__(self, r: redis.Redis, channel: str, metric: str = "checkout", rate: int = 50):
        super().__init__(daemon=True)
        self.r, self.channel, self.metric, self.rate = r, channel, metric, rate
        self.error_share = 0.0
        self.paused = False
        self.stopping = threading.Event()
        self.sent = 0
        self._owed = 0.0

    def run(self) -> None:
        last = time.time()
        while not self.stopping.wait(0.1):
            now = time.time()
            n = int(self.rate * (now - last))
            if n <= 0:
                continue
            last += n / self.rate
            if self.paused:
                continue
            pipe = self.r.pipeline(transaction=False)
            for i in range(n):
                self._owed += self.error_share
                error = self._owed >= 1
                self._owed -= 1 if error else 0
                event = {
                    "metric": self.metric,
                    "value": {"ms": 40.0 + (i % 7) * 5},
                    "ts": now,
                    "status": "error" if error else "ok",
                    "tags": {"endpoint": "/api/checkout"},
                }
                pipe.publish(self.channel, orjson.dumps(event))
            pipe.execute()
            self.sent += n

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)


def prom(text: str, name: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " ") or (("{" in name) and line.startswith(name)):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def open_alerts(server, state: str) -> float:
    text = server.get("/metrics").text
    return sum(
        prom(text, f'pulseboard_alerts_open{{severity="{sev}",state="{state}"}}')
        for sev in ("warning", "critical")
    )


def test_a_fresh_server_opens_an_error_rate_alert_within_15_s_of_a_burst(server_factory, r):
    server = server_factory()  # default settings: built-in rules on, no rule stored
    rules = {x["id"]: x for x in server.get("/api/rules").json()["rules"]}
    assert rules["builtin-error-rate"]["builtin"] and rules["builtin-error-rate"]["enabled"]
    traffic = ErrorTraffic(r, server.channel)
    rec = Recorder(server.url)
    with rec:
        traffic.error_share = 0.01
        traffic.start()
        try:
            wait_for(lambda: traffic.sent >= 20 * 50, timeout=30, message="20 s of 1% errors")
            assert not [a for a in list(rec.alerts) if a["metric"] == "checkout"]
            traffic.error_share = 0.6
            opened = wait_for(
                lambda: [a for a in list(rec.alerts) if a.get("rule_id") == "builtin-error-rate"],
                timeout=15,
                message="the built-in error-rate alert within 15 s of the burst",
            )[0]
            assert opened["metric"] == "checkout" and opened["state"] == "open" and opened["kind"] == "rule"
            assert opened["value"] > 0.02
            listed = server.get("/api/alerts?state=open").json()["alerts"]
            assert opened["id"] in {a["id"] for a in listed}
            # and /metrics has the figures
            wait_for(lambda: open_alerts(server, "open") >= 1, timeout=5, message="/metrics open alerts")
            text = server.get("/metrics").text
            assert prom(text, "pulseboard_alert_evaluations_total") > 0
            assert prom(text, 'pulseboard_alert_changes_total{event="open"}') >= 1
            assert prom(text, "pulseboard_alert_evaluator_active") == 1
            # and when the metric goes silent it is "no data", not resolved
            traffic.paused = True
            nodata = wait_for(
                lambda: [a for a in list(rec.alerts) if a["id"] == opened["id"] and a["state"] == "nodata"],
                timeout=15,
                message="state nodata after the metric stopped",
            )[0]
            assert "stopped reporting" in nodata["message"] and nodata["closed_at"] is None
            wait_for(lambda: open_alerts(server, "nodata") >= 1, timeout=5, message="/metrics nodata alerts")
        finally:
            traffic.stop()
