"""The OpenAPI 3 document of the REST API (/api/openapi.json) and Swagger UI (/api/docs).

Written by hand next to the views and kept honest by tests: every /api route must be documented
(and nothing else), and schemathesis drives the live server from this document and checks every
answer against it. No limit is written here as a number: the configured ones (`CONFIGURED_MAX`,
every `window`, the ingest batch size) are filled in from the deployment's settings by `document`,
the fixed ones are the constants the code validates with (generator.control.MAX_RATE, ...), and
tests/integration/test_openapi.py checks that for non-default settings each documented maximum is
the one enforced.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

from flask import Blueprint, current_app, jsonify, send_from_directory

from backend.config import DEFAULTS
from backend.core.events import ID_MAX, METRIC_RE, SOURCE_MAX, TAGS_MAX
from backend.web.api.metrics import HISTORY_LIMIT_MAX, recent_limit_max
from generator.control import MAX_RATE
from generator.traffic import PROFILES

bp = Blueprint("openapi", __name__, url_prefix="/api")

NAME = {"type": "string", "pattern": f"^{METRIC_RE.pattern}$"}
NUM_OR_NULL = {"type": "number", "nullable": True}
# No ts: the server stamps it on arrival (a fixed one would soon be past the retention).
INGEST_EXAMPLE = {
    "metric": "http_request",
    "value": {"ms": 42.5, "bytes": 512},
    "tags": {"endpoint": "/api/checkout"},
    "status": "ok",
    "source": "swagger",
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = _json(_ref("Error"), "Error")


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {
            "error": {"type": "string", "description": "what is wrong"},
            "status": {"type": "integer"},
            "param": {"type": "string", "description": "the query parameter at fault"},
            "rejected": {"type": "array", "items": _ref("Rejection")},
        },
    },
    "Rejection": {
        "type": "object",
        "required": ["reason", "detail"],
        "properties": {
            "index": {"type": "integer"},
            "reason": {"type": "string"},
            "detail": {"type": "string"},
        },
    },
    "EventIn": {
        "example": INGEST_EXAMPLE,
        "type": "object",
        "required": ["metric"],
        "description": "An event as a producer sends it (see docs/api.md for every rule).",
        "properties": {
            "metric": NAME,
            "value": {
                "description": "a finite number, an object of number/label fields, or null",
                "example": 42.5,
            },
            # No example: any fixed time would soon fall out of the retention and be rejected.
            "ts": {"description": "unix seconds, or ISO-8601 (no zone means UTC); absent: now"},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": TAGS_MAX},
            "source": {"type": "string", "maxLength": SOURCE_MAX},
            "status": {"type": "string", "enum": ["ok", "error"]},
            "id": {"type": "string", "minLength": 1, "maxLength": ID_MAX},
        },
    },
    "Event": {
        "type": "object",
        "required": ["id", "metric", "ts", "status"],
        "properties": {
            "id": {"type": "string"},
            "seq": {"type": "integer"},
            "metric": {"type": "string"},
            "value": {"description": "as the producer sent it"},
            "ts": {"type": "string", "description": "ISO-8601 UTC with milliseconds and Z"},
            "status": {"type": "string", "enum": ["ok", "error"]},
            "source": {"type": "string"},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Counts": {
        "type": "object",
        "required": ["count", "errors", "error_rate", "rate_per_sec"],
        "properties": {
            "count": {"type": "integer"},
            "errors": {"type": "integer"},
            "error_rate": {"type": "number"},
            "rate_per_sec": {"type": "number"},
        },
    },
    "FieldStats": {
        "type": "object",
        "required": ["count", "sum", "sum_overflow", "avg", "min", "max", "p50", "p95", "p99"],
        "properties": {
            "count": {"type": "integer"},
            "sum": {**NUM_OR_NULL, "description": "null when the sum overflowed (sum_overflow)"},
            "sum_overflow": {
                "type": "boolean",
                "description": "the sum left the float range (beyond ~1.8e308): sum and avg are null",
            },
            "avg": NUM_OR_NULL,
            "min": NUM_OR_NULL,
            "max": NUM_OR_NULL,
            "p50": NUM_OR_NULL,
            "p95": NUM_OR_NULL,
            "p99": NUM_OR_NULL,
        },
    },
    "MetricStats": {
        "allOf": [
            _ref("Counts"),
            {
                "type": "object",
                "required": ["fields"],
                "properties": {"fields": {"type": "object", "additionalProperties": _ref("FieldStats")}},
            },
        ]
    },
    "Aggregate": {
        "type": "object",
        "required": ["window_seconds", "from", "to", "aggregate", "metrics", "total"],
        "properties": {
            "window_seconds": {"type": "integer"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "aggregate": {"type": "object", "additionalProperties": {"type": "integer"}},
            "metrics": {"type": "object", "additionalProperties": _ref("MetricStats")},
            "total": _ref("Counts"),
        },
    },
    "Point": {
        "type": "object",
        "required": ["t", "count", "rate_per_sec", "errors", "error_rate", "avg", "p50", "p95", "p99"],
        "properties": {
            "t": {"type": "string"},
            "count": {"type": "integer"},
            "rate_per_sec": {"type": "number"},
            "errors": {"type": "integer"},
            "error_rate": {"type": "number"},
            "avg": NUM_OR_NULL,
            "p50": NUM_OR_NULL,
            "p95": NUM_OR_NULL,
            "p99": NUM_OR_NULL,
        },
    },
    "Timeseries": {
        "type": "object",
        "required": ["window_seconds", "step_seconds", "from", "to", "points"],
        "properties": {
            "window_seconds": {"type": "integer"},
            "step_seconds": {"type": "integer"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "metric": {"type": "string", "nullable": True},
            "field": {"type": "string", "nullable": True},
            "points": {"type": "array", "items": _ref("Point")},
        },
    },
    "GeneratorState": {
        "type": "object",
        "required": ["available", "running", "rate", "profile", "published"],
        "properties": {
            "available": {"type": "boolean"},
            "running": {"type": "boolean"},
            "rate": {"type": "number"},
            "profile": {"type": "string", "nullable": True},
            "published": {"type": "integer"},
        },
    },
}

LIMIT = {"type": "integer", "minimum": 1}
WINDOW = {"type": "integer", "minimum": 1}
SEQ = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}

PATHS = {
    "/api/health": {
        "get": {
            "summary": "Liveness; says whether Redis answers",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["status", "time", "redis"],
                        "properties": {
                            "status": {"type": "string", "enum": ["ok"]},
                            "time": {"type": "string"},
                            "redis": {"type": "string", "enum": ["ok", "down"]},
                            "worker": {"type": "object"},
                            "reads": {
                                "type": "object",
                                "description": "with a read process (READ_MODE): its pid "
                                "(process, null while it restarts) and the reads forwarded, answered "
                                "inline, timed out, and fetched for the tick; under eventlet, whether "
                                "connections are handed to it now (handoff) and how many were handed, "
                                "received back and refused (it was full)",
                            },
                        },
                    }
                )
            },
        }
    },
    "/api/ready": {
        "get": {
            "summary": "Readiness: Redis answers and a subscriber runs",
            "responses": {
                "200": _json(_ref("Readiness")),
                "503": _json(_ref("Readiness"), "Not ready"),
            },
        }
    },
    "/api/metrics/recent": {
        "get": {
            "summary": "Recent events, newest first; with after=SEQ, a resync from the history",
            "parameters": [
                _query(
                    "limit",
                    LIMIT,
                    f"how many (1..{HISTORY_LIMIT_MAX} with HISTORY_S > 0, else 1..RECENT_MAX; default 100)",
                ),
                _query("metric", NAME, "only this metric"),
                _query("after", SEQ, "only events with a larger seq, from the last HISTORY_S seconds"),
                _query(
                    "order",
                    {"type": "string", "enum": ["asc", "desc"]},
                    "with after: asc = the oldest first, paged by next_after; desc (default) = the newest",
                ),
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["count", "metrics"],
                        "properties": {
                            "count": {"type": "integer"},
                            "metrics": {"type": "array", "items": _ref("Event")},
                            "complete": {
                                "type": "boolean",
                                "description": "with after: every event with a larger seq is in this answer",
                            },
                            "oldest_seq": {
                                "type": "integer",
                                "nullable": True,
                                "description": "with after: the oldest seq the history holds",
                            },
                            "next_after": {
                                "type": "integer",
                                "description": "with after and order=asc: pass as after for the next page",
                            },
                        },
                    }
                ),
                "400": ERROR,
            },
        }
    },
    "/api/metrics/aggregate": {
        "get": {
            "summary": "Windowed aggregates",
            "parameters": [
                _query("window", WINDOW, "seconds (1..RETENTION_S, default 60)"),
                _query("metric", NAME, "only this metric"),
            ],
            "responses": {"200": _json(_ref("Aggregate")), "400": ERROR},
        }
    },
    "/api/metrics/timeseries": {
        "get": {
            "summary": "Points per step for charts",
            "parameters": [
                _query("window", WINDOW, "seconds (default 300)"),
                _query(
                    "step", {"type": "integer", "minimum": 1}, "seconds per point; window must be a multiple"
                ),
                _query("metric", NAME, "only this metric"),
                _query("field", NAME, "field for avg/p50/p95/p99"),
            ],
            "responses": {"200": _json(_ref("Timeseries")), "400": ERROR},
        }
    },
    "/api/metrics/rejected": {
        "get": {
            "summary": "Dead-lettered messages, newest first",
            "parameters": [_query("limit", LIMIT, "how many (1..DEAD_LETTER_MAX, default 100)")],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["count", "total", "reasons", "rejected"],
                        "properties": {
                            "count": {"type": "integer"},
                            "total": {"type": "integer"},
                            "reasons": {"type": "object", "additionalProperties": {"type": "integer"}},
                            "rejected": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["raw", "reason", "detail", "time"],
                                    "properties": {
                                        "raw": {"type": "string"},
                                        "reason": {"type": "string"},
                                        "detail": {"type": "string"},
                                        "time": {"type": "string"},
                                    },
                                },
                            },
                        },
                    }
                ),
                "400": ERROR,
            },
        }
    },
    "/api/metrics/stats": {
        "get": {
            "summary": "Lifetime counters",
            "responses": {"200": _json({"type": "object", "additionalProperties": {"type": "integer"}})},
        }
    },
    "/api/ingest": {
        "post": {
            "summary": "Publish events (all or nothing)",
            "parameters": [
                {
                    "name": "X-API-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "required when INGEST_API_KEY is set",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                _ref("EventIn"),
                                {
                                    "type": "array",
                                    "items": _ref("EventIn"),
                                    "minItems": 1,
                                },  # maxItems: INGEST_MAX_EVENTS
                            ],
                        },
                        # What Swagger UI's "Try it out" pre-fills: without it, it builds one from
                        # the schema (value {}, ts {}) that the API rightly rejects.
                        "example": INGEST_EXAMPLE,
                    }
                },
            },
            "responses": {
                "202": _json(
                    {
                        "type": "object",
                        "required": ["accepted", "ids"],
                        "properties": {
                            "accepted": {"type": "integer"},
                            "ids": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "Published",
                ),
                "400": ERROR,
                "401": ERROR,
                "413": ERROR,
                "415": ERROR,
                "429": _json(_ref("Error"), "Rate limit (INGEST_RATE_LIMIT) exceeded"),
            },
        }
    },
    "/api/generator": {
        "get": {
            "summary": "The built-in generator's state",
            "responses": {"200": _json(_ref("GeneratorState"))},
        },
        "post": {
            "summary": "Start/stop the built-in generator or change its rate",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": False,
                            "properties": {
                                "running": {"type": "boolean"},
                                "rate": {
                                    "type": "number",
                                    "exclusiveMinimum": True,
                                    "minimum": 0,
                                    "maximum": MAX_RATE,
                                },
                                "profile": {"type": "string", "enum": list(PROFILES)},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": _json(_ref("GeneratorState")),
                "400": ERROR,
                "401": ERROR,
                "409": _json(_ref("Error"), "No generator is running"),
            },
        },
    },
    "/api/openapi.json": {
        "get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}},
    },
}

SCHEMAS["Readiness"] = {
    "type": "object",
    "required": ["status", "time", "redis", "subscriber"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "unavailable"]},
        "time": {"type": "string"},
        "redis": {"type": "string", "enum": ["ok", "down"]},
        "subscriber": {"type": "string", "enum": ["ok", "down"]},
    },
}

EXTRA_PATHS: dict[str, dict] = {}  # filled by other API modules (analytics) at import


# The largest value a query parameter takes in a deployment configured with `config` (a Flask
# config): what the view passes to int_arg. Every `window` parameter is bounded by RETENTION_S.
CONFIGURED_MAX: dict[tuple[str, str], Callable[[Mapping], int]] = {
    ("/api/metrics/recent", "limit"): recent_limit_max,
    ("/api/metrics/rejected", "limit"): lambda config: config["DEAD_LETTER_MAX"],
}
WINDOW_MAX_SETTING = "RETENTION_S"


def _configured_max(path: str, name: str, config: Mapping) -> int | None:
    if (path, name) in CONFIGURED_MAX:
        return CONFIGURED_MAX[path, name](config)
    return config[WINDOW_MAX_SETTING] if name == "window" else None


def _apply_limits(paths: dict, config: Mapping) -> None:
    for path, operations in paths.items():
        for param in operations.get("get", {}).get("parameters", []):
            maximum = _configured_max(path, param["name"], config)
            if maximum is not None:
                param["schema"] = {**param["schema"], "maximum": maximum}
    body = paths["/api/ingest"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body["oneOf"][1]["maxItems"] = config["INGEST_MAX_EVENTS"]


_XRW = {
    "name": "X-Requested-With",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9]+$"},
    "example": "XMLHttpRequest",
    "description": "any value; needed (unless X-API-Key is sent) for a write without a JSON body, "
    "which a cross-site form could otherwise send (backend/web/security.py)",
}


def _document_write_guard(paths: dict) -> None:
    """Writes without a JSON body need X-Requested-With (or the key): say so on each of them."""
    for operations in paths.values():
        for method, op in operations.items():
            if method not in ("post", "put", "patch", "delete"):
                continue
            op.setdefault("responses", {}).setdefault("403", ERROR)
            if "requestBody" in op:
                continue
            params = op.setdefault("parameters", [])
            if not any(p.get("name") == _XRW["name"] for p in params):
                params.append(dict(_XRW))
            op["responses"].setdefault("415", ERROR)


def _document_read_timeout(paths: dict) -> None:
    """Reads answered by the read process (backend/web/readproxy.py) may time out there."""
    from backend.web.readproxy import PATH_PREFIXES

    for path, operations in paths.items():
        if path.startswith(PATH_PREFIXES) and "get" in operations:
            operations["get"].setdefault("responses", {}).setdefault(
                "504", _json(_ref("Error"), "The read process did not answer within READ_TIMEOUT_S")
            )


def document(config: Mapping | None = None) -> dict:
    """The document, with the limits this deployment is configured with (no config: the declared
    defaults)."""
    paths = copy.deepcopy({**PATHS, **EXTRA_PATHS})
    _apply_limits(paths, DEFAULTS.as_dict() if config is None else config)
    _document_write_guard(paths)
    _document_read_timeout(paths)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Pulseboard API",
            "version": "1.0.0",
            "description": "Real-time analytics over Redis Pub/Sub. Socket.IO events are described "
            "in docs/api.md.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(document(current_app.config))


_DOCS_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Pulseboard API</title>
<link rel="stylesheet" href="/api/docs/swagger-ui.css"></head><body><div id="swagger-ui"></div>
<script src="/api/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"""


@bp.get("/docs")
def docs():
    return _DOCS_PAGE, 200, {"Content-Type": "text/html; charset=utf-8"}


@bp.get("/docs/<path:name>")
def docs_asset(name: str):
    # swagger-ui-bundle ships the UI's static files, so the docs work offline and need no CDN.
    from swagger_ui_bundle import swagger_ui_path

    return send_from_directory(swagger_ui_path, name)
