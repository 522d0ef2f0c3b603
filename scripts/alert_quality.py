"""Alert quality on the generator's traffic: false alarms without incidents, then detection delay.

Starts an embedded Redis and a real server (`pulseboard serve`, default analytics settings), and
publishes the generator's mixed profile in real time with its own incident bursts turned off.

1. learn   -- the baselines need ANOMALY_MIN_HISTORY_S (120 s) before anything is judged;
2. clean   -- every alert opened here is a false alarm (the traffic has no incident);
3. incidents -- forces latency and error incidents on different endpoints, one at a time, and
   measures how long each takes to open an alert (data time: the alert's opened_at minus the
   incident's first second; wall time: until GET /api/alerts shows it) and to close after it ends.

    .venv/bin/python scripts/alert_quality.py                      # 10 clean minutes, ~17 min in all
    .venv/bin/python scripts/alert_quality.py --clean 60 --learn 130 --incidents 2   # a quick look

Prints the figures and writes them as JSON (--json). Not a test: the run is long and its figures
are what the note and docs/analytics.md report.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.core.timefmt import parse_iso
from bench.harness import Names, Redis, Server
from generator.traffic import TrafficModel

INCIDENTS = (  # kind, endpoint, knob: a mix of what the generator's own bursts do
    ("latency", "/api/products", {"latency_factor": 5.0}),
    ("errors", "/api/search", {"error_rate": 0.3}),
    ("latency", "/api/cart", {"latency_factor": 6.0}),
    ("errors", "/api/products/:id", {"error_rate": 0.25}),
    ("latency", "/api/users/me", {"latency_factor": 5.0}),
    ("errors", "/api/orders", {"error_rate": 0.3}),
)


class Traffic(threading.Thread):
    """The generator's traffic model, published in real time, 20 ticks a second."""

    def __init__(self, client: redis.Redis, channel: str, rate: float, seed: int):
        super().__init__(daemon=True)
        self.client, self.channel, self.rate = client, channel, rate
        self.model = TrafficModel("mixed", seed=seed, burst_every_s=0)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.last = time.time()
        self.published = 0

    def incident(self, kind: str, endpoint: str, duration_s: float, **knob):
        with self.lock:
            return self.model.force_incident(
                kind, time.time(), duration_s=duration_s, endpoint=endpoint, **knob
            )

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            now = time.time()
            n = int(self.rate * (now - self.last))
            if n <= 0:
                continue
            with self.lock:
                events = self.model.events(n, self.last, now)
            pipe = self.client.pipeline(transaction=False)
            for event in events:
                pipe.publish(self.channel, orjson.dumps(event))
            pipe.execute()
            self.published += n
            self.last = now

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


def alerts(server: Server) -> list[dict]:
    return server.http.get(server.url + "/api/alerts?state=all&limit=1000", timeout=5).json()["alerts"]


def label(a: dict) -> str:
    tags = a.get("tags") or {}
    where = "".join(f"[{k}={v}]" for k, v in tags.items())
    what = a["signal"] if not a.get("field") else f"{a['signal']}({a['field']})"
    return f"{a['metric']}{where} {what}"


def describe(a: dict) -> str:
    return f"{a['severity']:8} {a['message']}"


def wait_until(predicate, timeout: float, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(poll_s)
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="events/s (the generator's default)")
    ap.add_argument("--learn", type=float, default=150.0, help="s of traffic before the clean phase")
    ap.add_argument("--clean", type=float, default=600.0, help="s of traffic without incidents")
    ap.add_argument("--incidents", type=int, default=4, help="incidents forced after the clean phase")
    ap.add_argument("--incident-s", type=float, default=20.0, help="s each incident lasts")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=Path("bench-results/alert-quality.json"))
    args = ap.parse_args(argv)

    names = Names()
    store = Redis()
    server = Server(store.url, names, args.json.parent / "logs", label="alerts").wait_ready()
    traffic = Traffic(store.client, names.channel, args.rate, args.seed)
    result: dict = {"rate": args.rate, "learn_s": args.learn, "clean_s": args.clean}
    try:
        traffic.start()
        print(f"learning {args.learn:.0f} s at {args.rate:g} events/s ...", flush=True)
        time.sleep(args.learn)
        during_learning = alerts(server)
        clean_from = time.time()
        print(f"clean traffic for {args.clean:.0f} s ...", flush=True)
        time.sleep(args.clean)
        clean_to = time.time()
        false_alarms = [a for a in alerts(server) if clean_from <= parse_iso(a["opened_at"]) < clean_to]
        result.update(
            alerts_while_learning=len(during_learning),
            false_alarms=len(false_alarms),
            false_alarm_messages=[describe(a) for a in false_alarms],
        )
        print(f"false alarms in {args.clean:.0f} s: {len(false_alarms)}")
        for a in false_alarms:
            print("   ", describe(a))

        detections = []
        for kind, endpoint, knob in INCIDENTS[: args.incidents]:
            known = {a["id"] for a in alerts(server)}
            incident = traffic.incident(kind, endpoint, args.incident_s, **knob)
            started = time.monotonic()

            def new_alerts(known=known):
                return [a for a in alerts(server) if a["id"] not in known]

            found = wait_until(new_alerts, timeout=args.incident_s + 10)
            row = {"kind": kind, "endpoint": endpoint, **knob}
            if not found:
                row["detected"] = False
                print(f"{kind:8} {endpoint:20} NOT detected")
            else:
                wall_delay = time.monotonic() - started
                # the incident also shows in the `errors` and `latency` metrics: wait a little for
                # every alert it opens, then report the first and which ones name the endpoint
                time.sleep(3)
                found = new_alerts()
                first = min(found, key=lambda a: a["opened_at"])
                located = [a for a in found if (a.get("tags") or {}).get("endpoint") == endpoint]
                row.update(
                    alerts=[describe(a) for a in found],
                    located=bool(located),
                    located_delay_s=round(
                        min(parse_iso(a["opened_at"]) for a in located) - math.floor(incident.start), 2
                    )
                    if located
                    else None,
                    detected=True,
                    signal=first["signal"],
                    severity=first["severity"],
                    data_delay_s=round(parse_iso(first["opened_at"]) - math.floor(incident.start), 2),
                    wall_delay_s=round(wall_delay, 2),
                )
                # Closing: every alert it opened closed, counted from the incident's end.
                ids = {a["id"] for a in found}
                closed = wait_until(
                    lambda ids=ids: all(a["state"] == "closed" for a in alerts(server) if a["id"] in ids),
                    timeout=120,
                    poll_s=0.5,
                )
                row["closed_after_end_s"] = round(time.time() - incident.end, 1) if closed else None
                print(
                    f"{kind:8} {endpoint:20} {label(first):42} {first['severity']:8} "
                    f"data delay {row['data_delay_s']:5.2f} s  wall {row['wall_delay_s']:5.2f} s  "
                    f"closed {row['closed_after_end_s']} s after the end; "
                    f"{len(found)} alert(s); endpoint named after {row['located_delay_s']} s"
                )
            detections.append(row)
            time.sleep(10)  # the baselines froze during the incident; let them settle again
        result["incidents"] = detections
    finally:
        traffic.stop()
        server.stop()
        store.close()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
