"""The OpenAPI document matches the routes, and the live server honours it (schemathesis)."""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from backend.web.api.openapi import document
from tests.conftest import start_server

UNDOCUMENTED = {"/api/docs", "/api/docs/{name}"}  # the Swagger UI page itself, not API


def flask_routes(app) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        if path in UNDOCUMENTED:
            continue
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    return routes


def test_every_api_route_is_documented_and_nothing_else(app):
    documented = {path: set(ops) for path, ops in document()["paths"].items()}
    assert flask_routes(app) == documented


def test_openapi_json_and_docs_are_served(client):
    body = client.get("/api/openapi.json").get_json()
    assert body["openapi"].startswith("3.")
    assert "/api/metrics/aggregate" in body["paths"]
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert b"SwaggerUIBundle" in page.data
    with client.get("/api/docs/swagger-ui-bundle.js") as asset:
        assert asset.status_code == 200
        assert len(asset.data) > 100_000


@pytest.fixture(scope="module")
def api_server(redis_server, tmp_path_factory):
    names = {
        "REDIS_CHANNEL": "schemathesis:metrics",
        "KEY_PREFIX": "schemathesis:",
        "RECENT_KEY": "schemathesis:recent",
    }
    url = f"redis://{redis_server.host}:{redis_server.port}/8"
    server = start_server(url, names, tmp_path_factory.mktemp("schemathesis"))
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


@pytest.fixture(scope="module")
def api_schema(api_server):
    # The base URL is taken from where the document was loaded: the live server.
    return schemathesis.openapi.from_url(api_server.url + "/api/openapi.json")


def test_live_api_conforms_to_its_document(api_schema, monkeypatch, tmp_path):
    """Property-based requests for every operation; checks no 5xx and that status codes, content
    types and bodies are as documented. (Driven by hand: schemathesis' pytest plugin does not
    support pytest 9's nodes yet.)"""
    # Schemathesis keeps its caches and crash reports in ./.schemathesis: not in the work tree.
    monkeypatch.chdir(tmp_path)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            # An event's timestamp must fall within the retention (and its numbers be finite,
            # its labels short...), which a schema cannot say, so a schema-valid event may be
            # answered 400. Everything else must accept schema-valid data.
            # Likewise a timeseries window must be a whole number of steps.
            lenient = {"/api/ingest", "/api/metrics/timeseries"}
            excluded = [positive_data_acceptance] if case.path in lenient else []
            case.call_and_validate(excluded_checks=excluded)

        check()
