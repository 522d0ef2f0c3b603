"""Runs the core over a fixed corpus and prints what it made, as JSON (test_native.py).

    python tests/unit/core_corpus.py ROOT NOW

ROOT is put first on sys.path, so `backend.core` is ROOT's: the repository's (compiled when its
build is current) or a copy without a build (pure Python). Both runs must print the same.
The corpus: valid events of every shape the generator makes, one of each kind of mistake, and
seeded random mutations of valid events; then batches of the valid ones through the accumulator
(seconds, minutes, per-tag counters with values past the admission limit, a held minute), and
the hashes they make read back as an hour's aggregate, a series and a per-tag breakdown.
"""

from __future__ import annotations

import json
import random
import sys

sys.path.insert(0, sys.argv[1])
NOW = float(sys.argv[2])

import orjson  # noqa: E402

from backend.core import native  # noqa: E402
from backend.core.aggregate import (  # noqa: E402
    BatchAccumulator,
    MinuteHold,
    TagAdmission,
    apply_delta,
    release,
)
from backend.core.events import Rejection, parse_event  # noqa: E402
from backend.core.sketch import Sketch  # noqa: E402
from backend.core.window import TagStats, WindowStats, plan_window, timeseries  # noqa: E402

WEIRD = [
    None,
    True,
    False,
    0,
    -1,
    7,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    0.0,
    -0.0,
    1.5,
    -2.25,
    1e308,
    1e-308,
    5e-324,
    12345678901234567890,
    "",
    "x",
    "ok",
    "error",
    "é" * 3,
    "a" * 300,
    "2026-11-30T20:00:00Z",
    "2026-11-30T20:00:00.123+02:00",
    "not a time",
    [],
    [1, 2],
    {},
    {"ms": 3.5},
    {"ms": "label"},
    {"bad key!": 1},
    {"n": None, "b": True},
    {"x": [1]},
    {"k": "v"},
    {"k": 1},
    {"": "v"},
    NOW,
    NOW - 10,
    NOW + 10,
    NOW - 4000,
    NOW + 4000,
    int(NOW),
    str(NOW),
    "metric.name-1:x",
    "bad metric",
    "m" * 200,
]
KEYS = ["metric", "value", "ts", "status", "id", "source", "tags", "extra", "seq", "_x", "pt"]


def valid(rng: random.Random, i: int) -> dict:
    kind = i % 5
    ts = NOW - rng.uniform(0, 200) if i % 7 else NOW - rng.uniform(0, 3500)
    if kind == 0:
        return {
            "metric": "http_request",
            "value": {"ms": round(rng.lognormvariate(3, 1), 2), "bytes": rng.randint(0, 5000)},
            "tags": {
                "endpoint": f"/api/{rng.choice('abcdefgh')}",
                "method": rng.choice(["GET", "POST"]),
                "status_code": rng.choice(["200", "404", "500"]),
            },
            "source": "generator",
            "status": rng.choice(["ok", "ok", "error"]),
            "ts": ts,
        }
    if kind == 1:
        return {
            "metric": "page_views",
            "value": {"count": rng.randint(1, 9)},
            "tags": {"page": "/"},
            "ts": ts,
        }
    if kind == 2:
        return {"metric": "cpu", "value": round(rng.uniform(-5, 100), 3), "ts": ts}
    if kind == 3:
        return {"metric": "signups", "value": None, "ts": ts, "id": f"e{i}", "pt": ts}
    return {
        "metric": "latency",
        "value": {"p_ms": rng.expovariate(0.1), "label": "x", "on": True, "none": None},
        "ts": f"{ts:.6f}",
        "status": "ok",
    }


def outcome(raw: bytes, accepted: list) -> list:
    try:
        ev = parse_event(raw, now=NOW, retention_s=3600, future_tolerance_s=300, max_bytes=4096)
    except Rejection as rej:
        return ["rejected", rej.reason, rej.detail]
    accepted.append(ev)
    data = dict(ev.data)
    if "id" in data and raw.find(b'"id"') < 0:
        data["id"] = "generated"  # a fresh id per run
    return ["ok", data, ev.ts, ev.metric, ev.fields, ev.error]


def deltas_json(deltas: dict) -> list:
    return sorted([list(key), d.incr, d.incr_float, d.mins, d.maxs] for key, d in deltas.items())


def main() -> None:
    rng = random.Random(20261130)
    events = [valid(rng, i) for i in range(600)]
    raws = [orjson.dumps(e) for e in events]
    raws += [b"", b"{", b"[]", b'"x"', b"1", b"null", b"{}", b"x" * 5000, b'{"metric": "a", "value": 1e999}']
    for _ in range(1500):
        event = dict(rng.choice(events))
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(KEYS)
            if rng.random() < 0.2:
                event.pop(key, None)
            else:
                event[key] = rng.choice(WEIRD)
        raws.append(json.dumps(event).encode())  # (orjson refuses integers past 64 bits)
    accepted: list = []
    outcomes = [outcome(r, accepted) for r in raws]
    admission = TagAdmission(4)  # fewer than the corpus's endpoints: some go to __other__
    batches, holds = [], []
    hashes: dict = {}
    tag_hashes: dict = {}
    for start in range(0, len(accepted), 97):
        acc = BatchAccumulator(4, admission=admission)
        for ev in accepted[start : start + 97]:
            acc.add(ev)
        hold = MinuteHold(int(NOW) - int(NOW) % 60)
        deltas, tag_deltas = acc.deltas(hold), acc.tag_deltas(hold)
        batches.append([len(acc), deltas_json(deltas), deltas_json(tag_deltas)])
        holds.append(hold)
        for into, more in ((hashes, deltas), (tag_hashes, tag_deltas)):
            for bucket, delta in more.items():
                apply_delta(into.setdefault(bucket, {}), delta)
    held, held_tags = release(holds)
    for into, more in ((hashes, held), (tag_hashes, held_tags)):
        for bucket, delta in more.items():
            apply_delta(into.setdefault(bucket, {}), delta)

    def as_redis(h: dict) -> dict:
        return {k.encode(): repr(v).encode() for k, v in h.items()}

    to_s = int(NOW)
    plan = plan_window(to_s, 3600)
    hour = WindowStats.from_hashes(as_redis(hashes.get(bucket, {})) for bucket in plan)
    endpoints = TagStats("endpoint", metric="http_request", field="ms")
    for bucket in plan:
        endpoints.merge_hash(as_redis(tag_hashes.get(bucket, {})))
    minutes = {start: as_redis(h) for (res, start), h in hashes.items() if res == 60}
    series = timeseries(
        minutes, from_s=to_s - 3600, to_s=to_s, step_s=300, res=60, metric="http_request", field="ms"
    )

    sketch = Sketch()
    for ev in accepted:
        for x in ev.fields.values():
            sketch.add(x)
    print(
        json.dumps(
            {
                "compiled": native.compiled(),
                "state": native.state,
                "outcomes": outcomes,
                "batches": batches,
                "held": [deltas_json(held), deltas_json(held_tags)],
                "hour": hour.to_aggregate(window_s=3600, from_s=to_s - 3600, to_s=to_s),
                "endpoints": endpoints.values,
                "series": series,
                "quantiles": sketch.quantiles((0.0, 0.5, 0.95, 0.99, 1.0)),
                "sketch": Sketch({k: str(n) for k, n in sketch.bins.items()}) == sketch,
            }
        )
    )


if __name__ == "__main__":
    main()
