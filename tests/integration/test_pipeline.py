"""End to end: publish on the real channel, read REST and a real Socket.IO client."""

from __future__ import annotations

import itertools
import math
import time
import uuid

import numpy as np
import orjson
import pytest
import redis

from backend.cli.embedded_redis import EmbeddedRedis
from tests.helpers import wait_for
from tests.integration.sio import Recorder


def publish(r: redis.Redis, channel: str, events: list) -> None:
    pipe = r.pipeline(transaction=False)
    for event in events:
        pipe.publish(channel, event if isinstance(event, (bytes, str)) else orjson.dumps(event))
    pipe.execute()


def test_health_and_ready(live_server):
    health = live_server.get("/api/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["redis"] == "ok"
    ready = live_server.get("/api/ready")
    assert ready.status_code == 200
    assert ready.json()["subscriber"] == "ok"


def test_every_event_reaches_batch_client_once_in_seq_order(live_server, r):
    n = 2000
    with Recorder(live_server.url, batch_window=60) as rec:
        wait_for(lambda: rec.sub_acks, message="subscribe ack")
        assert rec.sub_acks[0] == {"ok": True, "mode": "batch", "window": 60}
        ids = [f"e{i}" for i in range(n)]
        publish(r, live_server.channel, [{"metric": "load", "value": i, "id": ids[i]} for i in range(n)])
        wait_for(lambda: len(rec.batched_events()) >= n, timeout=20, message=f"{n} events")
        # Everything is broadcast in order, so a duplicate of the originals would come before this.
        publish(r, live_server.channel, [{"metric": "load", "value": n, "id": "end"}])
        wait_for(lambda: rec.batched_events()[-1]["id"] == "end", message="the end marker")
        got = rec.batched_events()[:-1]
        assert [e["id"] for e in got] == ids
        seqs = [e["seq"] for e in got]
        assert all(b > a for a, b in itertools.pairwise(seqs))
        assert rec.metric == []  # batch clients do not also get per-event messages
        assert len(rec.batches) < n / 10  # they really were batched


def test_legacy_client_gets_connected_and_one_metric_per_event(live_server, r):
    with Recorder(live_server.url) as rec:
        wait_for(lambda: rec.connected_msgs, message="connected")
        assert rec.connected_msgs[0]["msg"] == "connected"
        publish(r, live_server.channel, [{"metric": "orders", "value": {"amount": i}} for i in range(20)])
        wait_for(lambda: len(rec.metric) >= 20, message="20 metric events")
        assert [e["value"]["amount"] for e in rec.metric] == list(range(20))
        assert rec.batches == []


def test_original_design_events_end_to_end(live_server, r):
    originals = [
        {
            "metric": "orders",
            "value": {"amount": 123.45, "status": "completed"},
            "ts": "2026-11-23T10:00:00.123456",
        },
        {"metric": "page_views", "value": {"count": 12}},
        {"metric": "signups", "value": {"plan": "pro"}},
        {"metric": "errors", "value": {"code": 502, "msg": "simulated"}},
        {"metric": "latency", "value": {"ms": 412}},
    ]
    now_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".123456"
    for event in originals:
        event["ts"] = now_iso  # the original generator sends zone-less UTC with microseconds
    with Recorder(live_server.url) as rec:
        publish(r, live_server.channel, originals)
        wait_for(lambda: len(rec.metric) >= 5, message="original events")
    for sent, got in zip(originals, rec.metric, strict=True):
        assert got["metric"] == sent["metric"]
        assert got["value"] == sent["value"]
        assert got["ts"] == now_iso[:23] + "Z"
        assert isinstance(got["seq"], int)
    recent = live_server.get("/api/metrics/recent").json()
    assert recent["count"] == 5
    assert [e["metric"] for e in recent["metrics"]] == [e["metric"] for e in reversed(originals)]
    agg = live_server.get("/api/metrics/aggregate?window=60").json()
    assert agg["aggregate"] == {"orders": 1, "page_views": 1, "signups": 1, "errors": 1, "latency": 1}
    assert agg["metrics"]["latency"]["fields"]["ms"]["max"] == 412


def test_bad_message_between_two_good_is_dead_lettered(live_server, r):
    with Recorder(live_server.url, batch_window=60) as rec:
        wait_for(lambda: rec.sub_acks, message="subscribe ack")
        publish(
            r,
            live_server.channel,
            [
                {"metric": "ok1", "value": 1},
                b"{not json",
                {"metric": "bad metric!", "value": 1},
                b'{"metric": "ok2", "value": 2}',
            ],
        )
        wait_for(lambda: len(rec.batched_events()) >= 2, message="the two good events")
    assert [e["metric"] for e in rec.batched_events()] == ["ok1", "ok2"]
    rejected = wait_for(lambda: live_server.get("/api/metrics/rejected").json(), message="rejected")
    assert rejected["count"] == 2
    assert rejected["total"] == 2
    reasons = [item["reason"] for item in rejected["rejected"]]
    assert sorted(reasons) == ["invalid_json", "invalid_metric"]
    assert rejected["reasons"] == {"invalid_json": 1, "invalid_metric": 1}
    assert {item["raw"] for item in rejected["rejected"]} >= {"{not json"}
    assert all(item["detail"] and item["time"].endswith("Z") for item in rejected["rejected"])
    assert live_server.get("/api/ready").status_code == 200


def test_recent_after_seq_resync(live_server, r):
    publish(r, live_server.channel, [{"metric": "m", "value": i} for i in range(30)])
    wait_for(
        lambda: live_server.get("/api/metrics/recent?limit=500").json()["count"] == 30, message="30 stored"
    )
    events = live_server.get("/api/metrics/recent?limit=500").json()["metrics"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs, reverse=True)
    pivot = seqs[10]
    newer = live_server.get(f"/api/metrics/recent?after={pivot}&limit=500").json()
    assert [e["seq"] for e in newer["metrics"]] == seqs[:10]
    assert newer["count"] == 10


def test_aggregate_counts_sums_exact_and_percentiles_close(live_server, r):
    import random

    rnd = random.Random(7)
    values = [rnd.lognormvariate(4, 1) for _ in range(3000)]
    events = [
        {"metric": "api", "value": {"ms": v}, "status": "error" if i % 10 == 0 else "ok"}
        for i, v in enumerate(values)
    ]
    publish(r, live_server.channel, events)
    wait_for(
        lambda: live_server.get("/api/metrics/aggregate?window=60").json()["total"]["count"] == 3000,
        timeout=15,
        message="3000 aggregated",
    )
    body = live_server.get("/api/metrics/aggregate?window=60&metric=api").json()
    api = body["metrics"]["api"]
    assert api["count"] == 3000
    assert api["errors"] == 300
    assert api["error_rate"] == pytest.approx(0.1)
    ms = api["fields"]["ms"]
    assert ms["count"] == 3000
    assert ms["sum"] == pytest.approx(math.fsum(values), rel=1e-9)
    assert ms["min"] == min(values)
    assert ms["max"] == max(values)
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        exact = float(np.quantile(values, q, method="inverted_cdf"))  # nearest rank
        assert abs(ms[key] - exact) / exact <= 0.01, (key, ms[key], exact)
    assert body["window_seconds"] == 60
    assert body["total"]["rate_per_sec"] == pytest.approx(3000 / 60, rel=1e-3)


def test_timeseries_points_cover_the_window(live_server, r):
    publish(r, live_server.channel, [{"metric": "api", "value": {"ms": 10 + i}} for i in range(100)])
    wait_for(
        lambda: live_server.get("/api/metrics/aggregate?window=60").json()["total"]["count"] == 100,
        message="100 aggregated",
    )
    body = live_server.get("/api/metrics/timeseries?window=60&step=5&metric=api&field=ms").json()
    assert body["step_seconds"] == 5
    assert len(body["points"]) == 12
    assert sum(p["count"] for p in body["points"]) == 100
    filled = [p for p in body["points"] if p["count"]]
    assert filled and all(p["p50"] is not None for p in filled)


def test_batch_client_receives_aggregate_ticks_for_its_window(live_server, r):
    with Recorder(live_server.url, batch_window=10) as rec:
        publish(r, live_server.channel, [{"metric": "tick", "value": 1}] * 5)
        agg = wait_for(
            lambda: [a for a in rec.aggregates if a["total"]["count"] == 5],
            timeout=10,
            message="an aggregate with the 5 events",
        )
        assert agg[0]["window_seconds"] == 10
        before = len(rec.aggregates)
        wait_for(lambda: len(rec.aggregates) >= before + 2, timeout=5, message="two more ticks")


def test_generator_state_is_pushed_as_its_published_count_moves(live_server, r, names):
    """The built-in generator reports into a status hash about once a second; the tick pushes a
    `generator` event when anything in it changes, the published count included."""
    status = f"{names['KEY_PREFIX']}generator:status"
    r.hset(status, mapping={"running": "1", "rate": "200", "profile": "mixed", "published": "100"})
    with Recorder(live_server.url) as rec:
        wait_for(lambda: [g for g in list(rec.generator) if g["published"] == 100], message="first state")
        r.hset(status, "published", "300")
        wait_for(lambda: [g for g in list(rec.generator) if g["published"] == 300], message="the count moved")
    assert all(g["running"] and g["rate"] == 200 for g in rec.generator)


def test_ingest_api_publishes_valid_events(live_server):
    with Recorder(live_server.url, batch_window=60) as rec:
        wait_for(lambda: rec.sub_acks, message="subscribe ack")
        resp = live_server.post(
            "/api/ingest", json=[{"metric": "cpu", "value": 0.5}, {"metric": "cpu", "value": 0.7}]
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["accepted"] == 2
        wait_for(lambda: len(rec.batched_events()) >= 2, message="ingested events broadcast")
    assert [e["value"] for e in rec.batched_events()] == [0.5, 0.7]
    assert [e["id"] for e in rec.batched_events()] == resp.json()["ids"]


def test_redis_restart_mid_stream_recovers(server_factory, names, tmp_path):
    with EmbeddedRedis() as own_redis:
        url = own_redis.url
        server = server_factory(redis_url=url)
        r = redis.Redis.from_url(url)
        with Recorder(server.url, batch_window=60) as rec:
            wait_for(lambda: rec.sub_acks, message="subscribe ack")
            publish(r, server.channel, [{"metric": "before", "value": i} for i in range(10)])
            wait_for(lambda: len(rec.batched_events()) >= 10, message="events before the outage")

            own_redis.stop()
            wait_for(lambda: server.get("/api/ready").status_code == 503, message="readiness 503")
            assert server.get("/api/health").json()["redis"] == "down"

            own_redis.start()
            wait_for(lambda: server.get("/api/ready").status_code == 200, timeout=15, message="readiness 200")
            r = redis.Redis.from_url(url)
            marker = uuid.uuid4().hex
            publish(r, server.channel, [{"metric": "after", "value": i, "source": marker} for i in range(10)])
            wait_for(
                lambda: len([e for e in rec.batched_events() if e.get("source") == marker]) == 10,
                timeout=15,
                message="events after the restart",
            )
        assert "resubscribed" in server.log()
        assert server.process.poll() is None


@pytest.mark.parametrize("mode", ["gevent", "threading"])
def test_other_async_modes_serve_the_stream(server_factory, r, mode):
    server = server_factory(args=("--async-mode", mode))
    with Recorder(server.url, batch_window=60) as rec:
        wait_for(lambda: rec.sub_acks, message="subscribe ack")
        publish(r, server.channel, [{"metric": "mode", "value": i} for i in range(50)])
        wait_for(lambda: len(rec.batched_events()) >= 50, message=f"50 events under {mode}")
    assert [e["value"] for e in rec.batched_events()] == list(range(50))
    assert server.get("/api/ready").status_code == 200
