"""Every limit /api/openapi.json documents is the one the API enforces, for non-default settings
too: the numbers come from the settings and constants the views validate with, not from copies."""

from __future__ import annotations

import pytest

from backend import create_app
from backend.config import DEFAULTS
from backend.web.api.openapi import CONFIGURED_MAX, document
from generator.control import MAX_RATE
from generator.traffic import PROFILES

# All differ from the declared defaults (HISTORY_S=0: `limit` of /recent is bounded by RECENT_MAX).
CHANGED = {
    "RETENTION_S": 1234,
    "DEAD_LETTER_MAX": 7,
    "HISTORY_S": 0,
    "RECENT_MAX": 9,
    "INGEST_MAX_EVENTS": 3,
    "INGEST_RATE_LIMIT": "",
}


@pytest.fixture
def limited(redis_url, names):
    for key, value in CHANGED.items():
        assert getattr(DEFAULTS, key) != value, key
    app = create_app({"TESTING": True, "REDIS_URL": redis_url, "ASYNC_MODE": "threading", **names, **CHANGED})
    client = app.test_client()
    return client, client.get("/api/openapi.json").get_json()


def _bounded_query_params(doc: dict):
    for path, operations in doc["paths"].items():
        if "{" in path or "get" not in operations:
            continue
        params = [p for p in operations["get"].get("parameters", []) if p["in"] == "query"]
        for param in params:
            schema = param["schema"]
            if schema.get("type") == "integer" and "maximum" in schema:
                yield path, param, params


def _required(params: list[dict], but: str) -> dict:
    """A valid value for every required parameter but `but`."""
    out = {}
    for p in params:
        if p["required"] and p["name"] != but:
            out[p["name"]] = (
                p["schema"].get("minimum", 1) if p["schema"].get("type") == "integer" else "endpoint"
            )
    return out


def _blames(resp, name: str) -> bool:
    return resp.status_code == 400 and (resp.get_json() or {}).get("param") == name


def test_every_documented_query_maximum_is_the_enforced_one(limited):
    client, doc = limited
    checked = {}
    for path, param, params in _bounded_query_params(doc):
        name, schema = param["name"], param["schema"]
        base = _required(params, name)
        at_max = client.get(path, query_string={**base, name: schema["maximum"]})
        assert not _blames(at_max, name), (path, name, schema, at_max.get_json())
        over = client.get(path, query_string={**base, name: schema["maximum"] + 1})
        assert _blames(over, name), (path, name, schema, over.status_code, over.get_json())
        under = client.get(path, query_string={**base, name: schema.get("minimum", 0) - 1})
        assert _blames(under, name), (path, name, schema, under.status_code)
        checked[path, name] = schema["maximum"]
    # The configured limits were among them, at their configured values.
    assert checked[("/api/metrics/recent", "limit")] == CHANGED["RECENT_MAX"]
    assert checked[("/api/metrics/rejected", "limit")] == CHANGED["DEAD_LETTER_MAX"]
    windows = {path: v for (path, name), v in checked.items() if name == "window"}
    assert set(windows) >= {
        "/api/metrics/aggregate",
        "/api/metrics/timeseries",
        "/api/metrics/top",
        "/api/metrics/trends",
    }
    assert set(windows.values()) == {CHANGED["RETENTION_S"]}
    assert set(CONFIGURED_MAX) <= set(checked)


def test_the_documented_batch_size_is_the_enforced_one(limited):
    client, doc = limited
    body = doc["paths"]["/api/ingest"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    most = body["oneOf"][1]["maxItems"]
    assert most == CHANGED["INGEST_MAX_EVENTS"]
    event = {"metric": "limits_test", "value": 1}
    assert client.post("/api/ingest", json=[event] * most).status_code == 202
    assert client.post("/api/ingest", json=[event] * (most + 1)).status_code == 413


def test_the_generator_limits_are_the_generators_own(limited):
    client, doc = limited
    props = doc["paths"]["/api/generator"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"
    ]
    assert props["rate"]["maximum"] == MAX_RATE
    assert props["profile"]["enum"] == list(PROFILES)
    headers = {"X-Requested-With": "test"}
    over = client.post("/api/generator", json={"rate": MAX_RATE * 1.01}, headers=headers)
    assert over.status_code == 400 and "rate" in over.get_json()["error"]
    unknown = client.post("/api/generator", json={"profile": "no-such-profile"}, headers=headers)
    assert unknown.status_code == 400


def test_without_a_config_the_document_shows_the_declared_defaults():
    doc = document()
    aggregate = {p["name"]: p["schema"] for p in doc["paths"]["/api/metrics/aggregate"]["get"]["parameters"]}
    assert aggregate["window"]["maximum"] == DEFAULTS.RETENTION_S
