"""Simulated traffic: plain dicts shaped like Pulseboard's wire events.

Pure and deterministic: no I/O, no clock reads, no Redis. The caller passes the timestamp of every
event, so the same seed and the same timestamps always give the same events, and incidents (which
are scheduled on event time, not wall time) replay exactly too. The publisher supplies wall-clock
time; tests supply synthetic time and can run a simulated hour in a second.

Profiles:

``mixed``
    Web-shop traffic: HTTP requests with log-normal latency on a diurnal wave, orders, signups,
    IoT sensor readings, page views, and the original design's ``latency`` and ``errors`` metrics.
    Every event has ``tags``, ``source: "generator"``, ``status`` and ``id``; ``ts`` is unix
    seconds (float). Incidents (error or latency spikes on one endpoint) start at random.

``original``
    Exactly the original design's shapes, ``{"metric", "value", "ts"}`` with ``ts`` an ISO-8601
    string without a zone (UTC), so we can prove old producers' events still work end to end.
    No incidents: the original generator had none.

Speed matters (the publisher must reach 20k events/s on one core), hence the precomputed pick
tables and the few attribute look-ups per event.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

PROFILES = ("mixed", "original")
DEFAULT_BURST_EVERY_S = 120.0
DAY_S = 86400.0

# Incident length and strength, as the brief for the dashboard demo asks: long enough to see on
# a 1-minute chart, short enough that a demo shows several.
INCIDENT_MIN_S = 10.0
INCIDENT_MAX_S = 30.0
LATENCY_FACTOR_RANGE = (5.0, 10.0)
ERROR_RATE_RANGE = (0.25, 0.6)

INCIDENT_KINDS = ("errors", "latency")


def _table(weighted: Sequence[tuple[object, int]]) -> tuple:
    """Expand (item, integer weight) pairs into a table indexed by ``int(random() * len)``.

    One multiply and one index per pick: several times cheaper than random.choices or bisect,
    and exact because the weights are integers.
    """
    out: list[object] = []
    for item, weight in weighted:
        out.extend([item] * weight)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: str
    method: str
    weight: int  # share of requests, per mille
    median_ms: float
    p4xx: float  # baseline probability of a 4xx answer
    p5xx: float  # baseline probability of a 5xx answer
    median_bytes: float
    client_errors: tuple[str, ...]  # which 4xx codes this route answers
    ok_code: str


# Low-cardinality endpoint templates (":id", not real ids): that is what a real access-log
# pipeline tags with, and it keeps the dashboard's per-tag breakdowns readable.
ROUTES: tuple[Route, ...] = (
    Route("/api/products", "GET", 220, 45.0, 0.01, 0.003, 8000, ("404",), "200"),
    Route("/api/products/:id", "GET", 180, 30.0, 0.03, 0.003, 3500, ("404",), "200"),
    Route("/api/search", "GET", 120, 120.0, 0.01, 0.006, 12000, ("400",), "200"),
    Route("/api/cart", "GET", 90, 35.0, 0.01, 0.003, 1500, ("401",), "200"),
    Route("/api/cart", "POST", 60, 60.0, 0.02, 0.004, 800, ("400", "409"), "201"),
    Route("/api/cart/:item", "DELETE", 15, 40.0, 0.02, 0.003, 0, ("404",), "204"),
    Route("/api/checkout", "POST", 25, 350.0, 0.03, 0.01, 1200, ("400", "402"), "201"),
    Route("/api/login", "POST", 40, 180.0, 0.08, 0.004, 600, ("401", "429"), "200"),
    Route("/api/users/me", "GET", 130, 25.0, 0.02, 0.002, 900, ("401",), "200"),
    Route("/api/users/me", "PUT", 10, 70.0, 0.03, 0.004, 900, ("400",), "200"),
    Route("/api/orders", "GET", 50, 80.0, 0.01, 0.004, 5000, ("401",), "200"),
    Route("/api/recommendations", "GET", 60, 200.0, 0.005, 0.005, 6000, ("404",), "200"),
)
assert sum(r.weight for r in ROUTES) == 1000

# Only endpoints with enough traffic for an incident to show on the dashboard.
INCIDENT_ROUTES = tuple(r for r in ROUTES if r.weight >= 50)

LATENCY_SIGMA = 0.55  # log-normal shape: p95 = median * e^(1.645 * sigma) ~ 2.5x median
DIURNAL_AMPLITUDE = 0.3  # latency and load swing +-30% over a day
DIURNAL_PEAK_UTC_H = 15.0  # afternoon in Europe, morning in the Americas

REGIONS = (
    ("us-east-1", 40, 1.0),
    ("eu-west-1", 30, 1.1),
    ("ap-southeast-1", 20, 1.4),
    ("sa-east-1", 10, 1.6),
)
SERVER_ERRORS = (("500", 50), ("502", 20), ("503", 20), ("504", 10))

# Permille shares of each metric in the mixed profile; during an error incident the `errors`
# metric (what services log on their own) rises along with the 5xx answers.
MIXED_MIX = {
    "http_request": 520,
    "page_views": 200,
    "sensor": 120,
    "latency": 80,
    "orders": 40,
    "errors": 25,
    "signups": 15,
}
MIXED_MIX_ERROR_INCIDENT = {**MIXED_MIX, "errors": 100, "page_views": 125}
assert sum(MIXED_MIX.values()) == 1000 == sum(MIXED_MIX_ERROR_INCIDENT.values())

# The original design doesn't say how its generator chose metrics; a uniform pick is the
# simplest reading, and its dashboard only counted events per metric anyway.
ORIGINAL_MIX = {"orders": 1, "page_views": 1, "signups": 1, "errors": 1, "latency": 1}

PAGES = (
    ("/", 30),
    ("/products", 25),
    ("/pricing", 12),
    ("/blog", 10),
    ("/docs", 10),
    ("/cart", 8),
    ("/about", 5),
)
CURRENCIES = (("USD", 55), ("EUR", 30), ("GBP", 15))
PAYMENTS = (("card", 70), ("paypal", 18), ("apple_pay", 8), ("bank_transfer", 4))
PLANS = (("free", 80), ("pro", 17), ("enterprise", 3))
TRIAL_DAYS = {"free": 0, "pro": 14, "enterprise": 30}
SIGNUP_CHANNELS = (("organic", 45), ("ads", 30), ("referral", 15), ("social", 10))
SERVICES = (("api-gateway", 40), ("postgres", 25), ("redis", 15), ("auth", 20))
SERVICE_MEDIAN_MS = {"api-gateway": 90.0, "postgres": 12.0, "redis": 1.5, "auth": 40.0}
ERROR_MESSAGES = {
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "upstream timeout",
}
SITES = ("berlin", "lisbon", "oslo", "austin")
DEVICES_PER_SITE = 6


@dataclass(frozen=True, slots=True)
class Incident:
    """A burst of trouble on one endpoint, from `start` (inclusive) to `end` (exclusive)."""

    kind: str  # "errors" | "latency"
    endpoint: str
    start: float
    end: float
    latency_factor: float = 1.0  # multiplies that endpoint's latency
    error_rate: float = 0.0  # that endpoint's 5xx probability while it lasts

    def describe(self) -> str:
        what = (
            f"5xx rate {self.error_rate:.0%}"
            if self.kind == "errors"
            else f"latency x{self.latency_factor:.1f}"
        )
        return f"{self.kind} incident on {self.endpoint}: {what} for {self.end - self.start:.0f}s"

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "endpoint": self.endpoint,
            "start": self.start,
            "end": self.end,
            "latency_factor": self.latency_factor,
            "error_rate": self.error_rate,
        }


def diurnal_factor(ts: float, day_s: float = DAY_S) -> float:
    """Load multiplier in [1 - A, 1 + A], peaking at DIURNAL_PEAK_UTC_H each (possibly short) day."""
    phase = (ts % day_s) / day_s - DIURNAL_PEAK_UTC_H / 24.0
    return 1.0 + DIURNAL_AMPLITUDE * math.cos(2.0 * math.pi * phase)


def iso_utc(ts: float) -> str:
    """The original design's timestamp: ISO-8601, microseconds, no zone, meaning UTC."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


class TrafficModel:
    """Generates events for one profile. Not thread-safe: one model per generating thread.

    ``burst_every_s`` is the mean gap between incidents (exponentially distributed, so they
    arrive like a Poisson process); 0 disables them. ``day_s`` shortens the diurnal cycle,
    e.g. to make a whole day visible in a ten-minute demo. ``id_prefix`` defaults to one drawn
    from the seed (so a seeded run is fully reproducible); a publisher should pass a fresh one
    per run, because consumers may drop events whose id they have seen.
    """

    def __init__(
        self,
        profile: str = "mixed",
        seed: int | None = None,
        burst_every_s: float = DEFAULT_BURST_EVERY_S,
        day_s: float = DAY_S,
        id_prefix: str | None = None,
    ):
        if burst_every_s < 0 or not math.isfinite(burst_every_s):
            raise ValueError(f"burst_every_s must be >= 0, got {burst_every_s!r}")
        if day_s <= 0:
            raise ValueError(f"day_s must be > 0, got {day_s!r}")
        self._rng = random.Random(seed)
        self.burst_every_s = float(burst_every_s)
        self.day_s = float(day_s)
        self.id_prefix = id_prefix if id_prefix is not None else f"{self._rng.getrandbits(32):08x}-"
        self._seq = 0
        self.incident: Incident | None = None
        self.incidents_started = 0
        # Event time at which the incident state next changes (an incident starts or ends);
        # one float comparison per event keeps incidents off the hot path.
        self._next_change: float | None = None

        self._routes = _table([(r, r.weight) for r in ROUTES])
        self._incident_routes = _table([(r, r.weight) for r in INCIDENT_ROUTES])
        self._regions = _table([((name, factor), w) for name, w, factor in REGIONS])
        self._server_errors = _table(SERVER_ERRORS)
        self._pages = _table(PAGES)
        self._currencies = _table(CURRENCIES)
        self._payments = _table(PAYMENTS)
        self._plans = _table(PLANS)
        self._signup_channels = _table(SIGNUP_CHANNELS)
        self._services = _table(SERVICES)
        # Fixed per-device baselines so each device's chart is a steady line of its own.
        self._devices = tuple(
            (f"{site}-{n:02d}", site, 19.0 + 1.1 * n + 0.5 * s, 35.0 + 4.0 * n - 2.0 * s)
            for s, site in enumerate(SITES)
            for n in range(1, DEVICES_PER_SITE + 1)
        )
        builders: dict[str, Callable[[float], dict]] = {
            "http_request": self._http_request,
            "page_views": self._page_views,
            "sensor": self._sensor,
            "latency": self._latency,
            "orders": self._orders,
            "errors": self._errors,
            "signups": self._signups,
        }
        self._mixed = _table([(builders[m], w) for m, w in MIXED_MIX.items()])
        self._mixed_error_incident = _table([(builders[m], w) for m, w in MIXED_MIX_ERROR_INCIDENT.items()])
        original = {
            "orders": self._orig_orders,
            "page_views": self._orig_page_views,
            "signups": self._orig_signups,
            "errors": self._orig_errors,
            "latency": self._orig_latency,
        }
        self._original = _table([(original[m], w) for m, w in ORIGINAL_MIX.items()])
        self._profile = ""
        self.profile = profile

    # -- public API ----------------------------------------------------------------------------

    @property
    def profile(self) -> str:
        return self._profile

    @profile.setter
    def profile(self, value: str) -> None:
        if value not in PROFILES:
            raise ValueError(f"unknown profile {value!r}; choose one of {', '.join(PROFILES)}")
        self._profile = value

    def event(self, ts: float) -> dict:
        """One event at unix time `ts`."""
        if self._profile == "original":
            return self._original[int(self._rng.random() * len(self._original))](ts)
        if self._next_change is None or ts >= self._next_change:
            self._advance_incidents(ts)
        table = (
            self._mixed_error_incident if self.incident and self.incident.kind == "errors" else self._mixed
        )
        return table[int(self._rng.random() * len(table))](ts)

    def events(self, n: int, t0: float, t1: float) -> list[dict]:
        """`n` events with timestamps spread evenly over (t0, t1] -- one publisher tick's worth."""
        if n <= 0:
            return []
        step = (t1 - t0) / n
        event = self.event
        return [event(t0 + step * (i + 1)) for i in range(n)]

    def incident_at(self, ts: float) -> Incident | None:
        """The incident in force at event time `ts` (advancing the schedule to it)."""
        if self._profile != "original" and (self._next_change is None or ts >= self._next_change):
            self._advance_incidents(ts)
        return self.incident

    def force_incident(
        self,
        kind: str,
        start: float,
        duration_s: float = 20.0,
        endpoint: str | None = None,
        latency_factor: float | None = None,
        error_rate: float | None = None,
    ) -> Incident:
        """Start an incident now, replacing any current one (for tests and demos)."""
        self.incident = self._make_incident(kind, start, duration_s, endpoint, latency_factor, error_rate)
        self.incidents_started += 1
        self._next_change = self.incident.end
        return self.incident

    # -- incidents -------------------------------------------------------------------------------

    def _advance_incidents(self, ts: float) -> None:
        # A loop, because a caller may jump far ahead in time (e.g. after a long pause).
        while True:
            if self._next_change is None:
                self._next_change = self._schedule_next(ts)
            if ts < self._next_change:
                return
            if self.incident is not None:
                ended_at = self.incident.end
                self.incident = None
                self._next_change = self._schedule_next(ended_at)
                continue
            start = self._next_change
            rng = self._rng
            kind = INCIDENT_KINDS[int(rng.random() * len(INCIDENT_KINDS))]
            duration = rng.uniform(INCIDENT_MIN_S, INCIDENT_MAX_S)
            self.incident = self._make_incident(kind, start, duration, None, None, None)
            self.incidents_started += 1
            self._next_change = self.incident.end

    def _schedule_next(self, after: float) -> float:
        if self.burst_every_s <= 0:
            return math.inf
        return after + self._rng.expovariate(1.0 / self.burst_every_s)

    def _make_incident(self, kind, start, duration_s, endpoint, latency_factor, error_rate) -> Incident:
        if kind not in INCIDENT_KINDS:
            raise ValueError(f"unknown incident kind {kind!r}; choose one of {', '.join(INCIDENT_KINDS)}")
        rng = self._rng
        if endpoint is None:
            endpoint = self._incident_routes[int(rng.random() * len(self._incident_routes))].endpoint
        elif endpoint not in {r.endpoint for r in ROUTES}:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        if kind == "latency":
            factor = latency_factor if latency_factor is not None else rng.uniform(*LATENCY_FACTOR_RANGE)
            return Incident(kind, endpoint, start, start + duration_s, latency_factor=factor)
        rate = error_rate if error_rate is not None else rng.uniform(*ERROR_RATE_RANGE)
        return Incident(kind, endpoint, start, start + duration_s, error_rate=rate)

    # -- mixed profile -------------------------------------------------------------------------

    def _event(self, metric: str, value: dict, ts: float, tags: dict, status: str = "ok") -> dict:
        """A mixed-profile event: the wire contract's envelope around one metric's value and tags."""
        return {
            "metric": metric,
            "value": value,
            "ts": ts,
            "tags": tags,
            "source": "generator",
            "status": status,
            "id": self._next_id(),
        }

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self.id_prefix}{self._seq:x}"

    def _http_request(self, ts: float) -> dict:
        rng = self._rng
        r = rng.random
        route: Route = self._routes[int(r() * len(self._routes))]
        region, region_factor = self._regions[int(r() * len(self._regions))]
        median = route.median_ms * region_factor * diurnal_factor(ts, self.day_s)
        p5xx = route.p5xx
        incident = self.incident
        if incident is not None and incident.endpoint == route.endpoint:
            median *= incident.latency_factor
            if incident.error_rate > p5xx:
                p5xx = incident.error_rate
        ms = median * math.exp(LATENCY_SIGMA * rng.gauss(0.0, 1.0))
        u = r()
        status = "ok"
        if u < p5xx:
            code = self._server_errors[int(r() * len(self._server_errors))]
            status = "error"
            size = 150
            if code == "504":
                # A gateway timeout took the gateway's whole budget, not the route's usual time.
                ms = 5000.0 + 25000.0 * r()
            elif code != "500":
                ms *= 0.2  # the proxy answered without reaching the app
        elif u < p5xx + route.p4xx:
            errs = route.client_errors
            code = errs[int(r() * len(errs))]
            size = 200
        else:
            code = route.ok_code
            size = (
                0
                if route.median_bytes == 0
                else int(route.median_bytes * math.exp(0.5 * rng.gauss(0.0, 1.0)))
            )
        return self._event(
            "http_request",
            {"ms": round(ms, 2), "bytes": size},
            ts,
            {
                "endpoint": route.endpoint,
                "method": route.method,
                "status_code": code,
                "region": region,
            },
            status,
        )

    def _page_views(self, ts: float) -> dict:
        r = self._rng.random
        # Views per client batch: geometric-ish, busier at the daily peak.
        count = 1 + int(-math.log(1.0 - r()) * 4.0 * diurnal_factor(ts, self.day_s))
        return self._event(
            "page_views", {"count": count}, ts, {"page": self._pages[int(r() * len(self._pages))]}
        )

    def _sensor(self, ts: float) -> dict:
        rng = self._rng
        device, site, base_temp, base_humidity = self._devices[int(rng.random() * len(self._devices))]
        # Rooms warm up in the afternoon; humidity moves the other way.
        swing = diurnal_factor(ts, self.day_s) - 1.0
        temp = base_temp + 6.0 * swing + rng.gauss(0.0, 0.3)
        humidity = min(100.0, max(0.0, base_humidity - 15.0 * swing + rng.gauss(0.0, 1.0)))
        return self._event(
            "sensor",
            {"temp_c": round(temp, 2), "humidity": round(humidity, 1)},
            ts,
            {"device": device, "site": site},
        )

    def _latency(self, ts: float) -> dict:
        rng = self._rng
        service = self._services[int(rng.random() * len(self._services))]
        median = SERVICE_MEDIAN_MS[service] * diurnal_factor(ts, self.day_s)
        incident = self.incident
        if incident is not None and service == "api-gateway":
            median *= incident.latency_factor  # the gateway sees the slow endpoint behind it
        ms = median * math.exp(LATENCY_SIGMA * rng.gauss(0.0, 1.0))
        return self._event("latency", {"ms": round(ms, 2)}, ts, {"service": service})

    def _orders(self, ts: float) -> dict:
        rng = self._rng
        r = rng.random
        items = 1 + int(-math.log(1.0 - r()) * 1.5)
        amount = items * 22.0 * math.exp(0.6 * rng.gauss(0.0, 1.0))
        u = r()
        order_status = "completed" if u < 0.9 else ("pending" if u < 0.98 else "failed")
        return self._event(
            "orders",
            {"amount": round(amount, 2), "items": items, "status": order_status},
            ts,
            {
                "currency": self._currencies[int(r() * len(self._currencies))],
                "payment": self._payments[int(r() * len(self._payments))],
            },
            "error" if order_status == "failed" else "ok",
        )

    def _errors(self, ts: float) -> dict:
        r = self._rng.random
        incident = self.incident
        service = self._services[int(r() * len(self._services))]
        if incident is not None and incident.kind == "errors":
            service = "api-gateway"
        code = int(self._server_errors[int(r() * len(self._server_errors))])
        return self._event(
            "errors", {"code": code, "msg": ERROR_MESSAGES[code]}, ts, {"service": service}, "error"
        )

    def _signups(self, ts: float) -> dict:
        r = self._rng.random
        plan = self._plans[int(r() * len(self._plans))]
        return self._event(
            "signups",
            {"plan": plan, "trial_days": TRIAL_DAYS[plan]},
            ts,
            {"channel": self._signup_channels[int(r() * len(self._signup_channels))]},
        )

    # -- original profile ----------------------------------------------------------------------

    def _orig_orders(self, ts: float) -> dict:
        rng = self._rng
        amount = round(min(999.99, 60.0 * math.exp(0.7 * rng.gauss(0.0, 1.0))), 2)
        status = "completed" if rng.random() < 0.8 else "pending"
        return {"metric": "orders", "value": {"amount": amount, "status": status}, "ts": iso_utc(ts)}

    def _orig_page_views(self, ts: float) -> dict:
        count = 1 + int(self._rng.random() * 20)
        return {"metric": "page_views", "value": {"count": count}, "ts": iso_utc(ts)}

    def _orig_signups(self, ts: float) -> dict:
        plan = self._plans[int(self._rng.random() * len(self._plans))]
        return {"metric": "signups", "value": {"plan": plan}, "ts": iso_utc(ts)}

    def _orig_errors(self, ts: float) -> dict:
        code = int(self._server_errors[int(self._rng.random() * len(self._server_errors))])
        return {"metric": "errors", "value": {"code": code, "msg": "simulated"}, "ts": iso_utc(ts)}

    def _orig_latency(self, ts: float) -> dict:
        ms = int(120.0 * math.exp(LATENCY_SIGMA * self._rng.gauss(0.0, 1.0)))
        return {"metric": "latency", "value": {"ms": ms}, "ts": iso_utc(ts)}
