"""`from`/`to` on /api/metrics/aggregate and /timeseries, and the per-tag time series (`tag=`)."""

from __future__ import annotations

import math
import time

import pytest

from backend import create_app
from backend.storage.keys import Keys
from backend.storage.store import Store, connect
from tests.integration.test_analytics import write_seconds


@pytest.fixture
def api(redis_url, names):
    app = create_app(
        {"TESTING": True, "REDIS_URL": redis_url, "ASYNC_MODE": "threading", "RETENTION_S": 3600, **names}
    )
    return app.test_client()


@pytest.fixture
def store(redis_url, names):
    s = Store(
        connect(redis_url),
        Keys(prefix=names["KEY_PREFIX"], recent=names["RECENT_KEY"]),
        recent_max=50,
        retention_s=3600,
        dead_letter_max=10,
    )
    yield s
    s.redis.close()


def events(n: int, errors: int, endpoint: str, ms: float) -> list[dict]:
    return [
        {
            "metric": "web",
            "value": {"ms": ms},
            "status": "error" if i < errors else "ok",
            "tags": {"endpoint": endpoint},
        }
        for i in range(n)
    ]


def test_an_absolute_range_reads_that_range_only(api, store):
    base = (math.floor(time.time()) - 600) // 60 * 60  # minutes ago, on a step boundary
    write_seconds(store, {base + i: events(10, 1, "/a", 20.0) + events(5, 5, "/b", 400.0) for i in range(30)})
    write_seconds(store, {base + 100 + i: events(3, 0, "/a", 20.0) for i in range(10)})
    body = api.get(f"/api/metrics/aggregate?from={base}&to={base + 30}").get_json()
    assert body["total"]["count"] == 30 * 15 and body["window_seconds"] == 30
    iso_from = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + 100))
    body = api.get(f"/api/metrics/aggregate?from={iso_from}&window=10&to={base + 110}").get_json()
    assert body["total"]["count"] == 30
    ts = api.get(f"/api/metrics/timeseries?from={base}&to={base + 30}&step=10&metric=web&field=ms").get_json()
    assert [p["count"] for p in ts["points"]] == [150, 150, 150]
    assert ts["from"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base)))


def test_the_per_tag_series_is_that_tag_values_slice(api, store):
    base = (math.floor(time.time()) - 300) // 60 * 60
    write_seconds(store, {base + i: events(10, 1, "/a", 20.0) + events(5, 5, "/b", 400.0) for i in range(20)})
    ts = api.get(
        f"/api/metrics/timeseries?from={base}&to={base + 20}&step=10&metric=web&field=ms&tag=endpoint=/b"
    ).get_json()
    assert ts["tag"] == {"endpoint": "/b"}
    assert [(p["count"], p["errors"]) for p in ts["points"]] == [(50, 50), (50, 50)]
    assert all(p["p95"] == pytest.approx(400.0, rel=0.06) for p in ts["points"])  # the per-tag sketch: ~5%
    other = api.get(f"/api/metrics/timeseries?from={base}&to={base + 20}&step=10&tag=endpoint=/a").get_json()
    assert [p["count"] for p in other["points"]] == [100, 100] and other["points"][0]["p95"] is None


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("from=yesterday", "from"),
        ("from=0&to=10", "from"),  # long gone: outside the retention
        ("to={in_an_hour}", "to"),  # filled in at run time: ids must not depend on the clock (xdist)
        ("from=2000&to=1000", "from"),
        ("tag=endpoint", "tag"),
    ],
)
def test_bad_ranges_are_400_naming_the_parameter(api, query, param):
    query = query.format(in_an_hour=int(time.time()) + 3600)
    for path in ("/api/metrics/timeseries", "/api/metrics/aggregate"):
        if param == "tag" and path.endswith("aggregate"):
            continue
        resp = api.get(f"{path}?{query}")
        assert resp.status_code == 400 and resp.get_json()["param"] == param, (path, resp.get_json())
    assert "retention" in api.get("/api/metrics/aggregate?from=0&to=10").get_json()["error"]


def test_without_a_range_nothing_changed(api):
    assert api.get("/api/metrics/timeseries?window=61").status_code == 200  # step 1 by default
    assert api.get("/api/metrics/timeseries?window=61&step=2").get_json()["param"] == "step"
