"""REST contract against the in-process app and a real Redis (no worker running)."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.helpers import wait_for


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/metrics/aggregate?window=0", "window"),
        ("/api/metrics/aggregate?window=3601", "window"),
        ("/api/metrics/aggregate?window=abc", "window"),
        ("/api/metrics/recent?limit=0", "limit"),
        ("/api/metrics/recent?limit=10001", "limit"),
        ("/api/metrics/recent?after=-1", "after"),
        ("/api/metrics/recent?metric=bad%20name", "metric"),
        ("/api/metrics/timeseries?window=60&step=7", "step"),
        ("/api/metrics/timeseries?window=3600&step=0", "step"),
        ("/api/metrics/rejected?limit=x", "limit"),
    ],
)
def test_bad_query_parameters_answer_400_json(client, path, param):
    resp = client.get(path)
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["param"] == param
    assert param in body["error"]


def test_unknown_api_path_is_json_404(client):
    resp = client.get("/api/nope")
    assert resp.status_code == 404
    assert resp.get_json()["error"]


def test_wrong_method_is_json_405(client):
    resp = client.delete("/api/metrics/recent")
    assert resp.status_code == 405
    assert "error" in resp.get_json()


def test_aggregate_empty_window_shape(client):
    body = client.get("/api/metrics/aggregate?window=60").get_json()
    assert body["window_seconds"] == 60
    assert body["aggregate"] == {}
    assert body["metrics"] == {}
    assert body["total"] == {"count": 0, "errors": 0, "error_rate": 0.0, "rate_per_sec": 0.0}
    assert body["from"].endswith("Z") and body["to"].endswith("Z")


def test_responses_are_compact_json_with_sorted_keys(client):
    resp = client.get("/api/metrics/aggregate?window=60")
    assert resp.mimetype == "application/json"
    raw = resp.get_data()
    assert raw.startswith(b'{"aggregate":{},"from":"') and raw.endswith(b"}\n")
    keys = list(orjson.loads(raw))
    assert keys == sorted(keys) == ["aggregate", "from", "metrics", "to", "total", "window_seconds"]
    assert b": " not in raw and b", " not in raw


def test_ready_is_503_without_a_subscriber(client):
    resp = client.get("/api/ready")
    assert resp.status_code == 503
    assert resp.get_json()["subscriber"] == "down"
    assert resp.get_json()["redis"] == "ok"


class TestIngest:
    def test_rejects_non_json_content_type(self, client):
        resp = client.post("/api/ingest", data="metric=x", content_type="text/plain")
        assert resp.status_code == 415
        assert "application/json" in resp.get_json()["error"]

    def test_rejects_bad_json(self, client):
        resp = client.post("/api/ingest", data="{oops", content_type="application/json")
        assert resp.status_code == 400
        assert "not valid JSON" in resp.get_json()["error"]

    def test_rejects_empty_list(self, client):
        resp = client.post("/api/ingest", json=[])
        assert resp.status_code == 400

    def test_all_or_nothing_with_reasons_per_item(self, client, r, app):
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(app.config["REDIS_CHANNEL"])
        resp = client.post(
            "/api/ingest",
            json=[
                {"metric": "ok", "value": 1},
                {"metric": "", "value": 1},
                {"metric": "ok", "value": "text"},
                {"value": 3},
            ],
        )
        assert resp.status_code == 400
        body = resp.get_json()
        assert "nothing was published" in body["error"]
        assert [(item["index"], item["reason"]) for item in body["rejected"]] == [
            (1, "invalid_metric"),
            (2, "invalid_value"),
            (3, "missing_metric"),
        ]
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            assert pubsub.get_message(timeout=0.05) is None
        pubsub.close()

    def test_accepts_and_publishes_normalized_events(self, client, r, app):
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(app.config["REDIS_CHANNEL"])
        resp = client.post("/api/ingest", json={"metric": "latency", "value": {"ms": 412}})
        assert resp.status_code == 202
        assert resp.get_json()["accepted"] == 1
        message = wait_for(lambda: pubsub.get_message(timeout=0.1), message="the published event")
        event = orjson.loads(message["data"])
        assert event["metric"] == "latency"
        assert event["id"] == resp.get_json()["ids"][0]
        assert event["ts"].endswith("Z")
        pubsub.close()

    def test_too_many_events_is_413(self, client, app):
        app.config["INGEST_MAX_EVENTS"] = 3
        resp = client.post("/api/ingest", json=[{"metric": "m"}] * 4)
        assert resp.status_code == 413
        assert "at most 3" in resp.get_json()["error"]

    def test_body_over_limit_is_413(self, client, app):
        app.config["MAX_CONTENT_LENGTH"] = 1000
        resp = client.post(
            "/api/ingest",
            data=b'{"metric": "m", "source": "' + b"x" * 2000 + b'"}',
            content_type="application/json",
        )
        assert resp.status_code == 413
        assert "1000 bytes" in resp.get_json()["error"]

    def test_rate_limited_per_client_with_json_429(self, client, app):
        app.config["INGEST_RATE_LIMIT"] = "3/minute"
        statuses = [client.post("/api/ingest", json={"metric": "m"}).status_code for _ in range(4)]
        assert statuses == [202, 202, 202, 429]
        resp = client.post("/api/ingest", json={"metric": "m"})
        assert resp.status_code == 429
        assert "3 per 1 minute" in resp.get_json()["error"]
        assert resp.headers["Retry-After"]

    def test_api_key_required_when_configured(self, client, app):
        app.config["INGEST_API_KEY"] = "s3cret"
        assert client.post("/api/ingest", json={"metric": "m"}).status_code == 401
        wrong = client.post("/api/ingest", json={"metric": "m"}, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401
        right = client.post("/api/ingest", json={"metric": "m"}, headers={"X-API-Key": "s3cret"})
        assert right.status_code == 202


class TestGeneratorControl:
    def test_unavailable_without_a_generator(self, client):
        assert client.get("/api/generator").get_json()["available"] is False
        resp = client.post("/api/generator", json={"running": False})
        assert resp.status_code == 409

    @pytest.mark.parametrize(
        "body", [{"running": "yes"}, {"rate": -1}, {"rate": True}, {"bogus": 1}, {}, {"profile": "nope"}]
    )
    def test_bad_control_bodies_are_400(self, client, body):
        resp = client.post("/api/generator", json=body)
        assert resp.status_code == 400
        assert resp.get_json()["error"]

    def test_control_is_written_for_a_live_generator(self, client, app, r):
        keys = app.extensions["pulseboard"].store.keys
        r.hset(
            keys.generator_status,
            mapping={"running": "1", "rate": "200", "profile": "mixed", "published": "5"},
        )
        resp = client.post("/api/generator", json={"running": False, "rate": 50})
        assert resp.status_code == 200
        assert resp.get_json()["running"] is False
        assert resp.get_json()["rate"] == 50.0
        control = {k.decode(): v.decode() for k, v in r.hgetall(keys.generator_control).items()}
        assert control == {"running": "0", "rate": "50.0"}


def test_dashboard_index_served(client):
    with client.get("/") as resp:  # a file response: close it, as a real server would
        assert resp.status_code == 200
        assert b"Pulseboard" in resp.data


def test_a_wide_aggregate_is_encoded_in_parts_to_the_same_bytes(app):
    from backend.web.jsonprovider import encode_in_parts

    row = {"count": 3, "errors": 0, "fields": {"ms": {"p50": 1.5, "max": 2.0, "min": None}}}
    body = {
        "window_seconds": 60,
        "aggregate": {f"m{i:03}": 3 for i in range(200)},
        "metrics": {f"m{i:03}": dict(row, count=i) for i in reversed(range(200))},
        "total": {"count": 600},
        "from": "2026-01-01T00:00:00.000Z",
        "to": "2026-01-01T00:01:00.000Z",
    }
    pauses = []
    with app.app_context():
        whole = app.json.response(body).get_data()
    parts = list(encode_in_parts(body, "metrics", 16, lambda: pauses.append(1)))
    assert b"".join(parts) == whole
    assert len(pauses) == 200 // 16 + (200 % 16 > 0) - 1


def test_an_aggregate_of_many_metrics_is_streamed_as_the_same_document(app, client):
    import time

    from backend.core.aggregate import BatchAccumulator
    from backend.core.events import validate
    from backend.web.api.metrics import STREAM_ROWS

    store = app.extensions["pulseboard"].store
    now = time.time()
    acc = BatchAccumulator()
    n = STREAM_ROWS * 3 + 5
    for i in range(n):
        event = {"metric": f"wide{i:04}", "value": {"ms": i + 1.0}, "ts": now - 1}
        acc.add(validate(event, now=now, retention_s=3600, future_tolerance_s=300))
    store.write_batch([], acc.deltas(), [], received=n)
    resp = client.get("/api/metrics/aggregate?window=60")
    assert resp.status_code == 200 and resp.is_streamed
    raw = resp.get_data()
    body = orjson.loads(raw)
    assert body["total"]["count"] == n and len(body["metrics"]) == n
    assert body["metrics"]["wide0007"]["fields"]["ms"]["max"] == 8.0
    assert raw == orjson.dumps(body, option=orjson.OPT_SORT_KEYS) + b"\n"  # what jsonify writes
