"""Alert rules: list, create or replace, delete. Stored in Redis, so every node sees the same set;
the evaluator picks changes up within a second. Grammar and JSON forms: docs/analytics.md."""

from __future__ import annotations

import uuid

from flask import Blueprint, jsonify, request

from backend.analytics.rules import (
    EXPR_PATTERN,
    ID_RE,
    MAX_CLEAR_S,
    MAX_FOR_S,
    MAX_NAME,
    RULE_TEXT_PATTERN,
    RuleError,
    rule_from_json,
)
from backend.analytics.service import analytics_store
from backend.analytics.storage import RulesFull
from backend.api import openapi
from backend.api.params import require_api_key
from backend.errors import ApiError

bp = Blueprint("rules", __name__, url_prefix="/api")


@bp.get("/rules")
def list_rules():
    rules = [r.as_dict() for r in analytics_store().rules()]
    return jsonify({"count": len(rules), "rules": rules})


@bp.post("/rules")
@require_api_key
def create_rule():
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "the body must be a JSON rule (Content-Type: application/json)", field="body")
    try:
        rule = rule_from_json(body, new_id=lambda: f"r-{uuid.uuid4().hex[:10]}")
    except RuleError as exc:
        raise ApiError(400, exc.message, field=exc.field) from None
    try:
        created = analytics_store().put_rule(rule)
    except RulesFull as exc:
        raise ApiError(409, str(exc)) from None
    return jsonify(rule.as_dict()), 201 if created else 200


@bp.delete("/rules/<rule_id>")
@require_api_key
def delete_rule(rule_id: str):
    if not ID_RE.fullmatch(rule_id) or not analytics_store().delete_rule(rule_id):
        raise ApiError(404, f"no rule with id {rule_id[:80]!r}")
    return jsonify({"deleted": rule_id})


# --- OpenAPI -----------------------------------------------------------------------------------
_ID = {"type": "string", "pattern": f"^{ID_RE.pattern}$"}
_COMMON = {
    "id": {**_ID, "description": "optional; a new id is made when absent, an existing id is replaced"},
    "name": {"type": "string", "maxLength": MAX_NAME, "description": "default: the rule text"},
    "severity": {"type": "string", "enum": ["warning", "critical"]},
    "clear_s": {
        "type": "number",
        "minimum": 0,
        "maximum": MAX_CLEAR_S,
        "description": "seconds false before the alert closes (default ALERT_CLEAR_S)",
    },
}
_STRUCTURED = {
    "metric": {**openapi.NAME, "nullable": True, "description": "scope; null or absent: every metric"},
    "op": {"type": "string", "enum": [">", ">=", "<", "<="]},
    "for_s": {"type": "number", "minimum": 0, "maximum": MAX_FOR_S},
    **_COMMON,
}
openapi.SCHEMAS["Rule"] = {
    "type": "object",
    "required": [
        "id",
        "name",
        "metric",
        "signal",
        "field",
        "expr",
        "op",
        "threshold",
        "for_s",
        "clear_s",
        "severity",
        "source",
        "rule",
    ],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "metric": {"type": "string", "nullable": True},
        "signal": {
            "type": "string",
            "enum": ["rate", "error_rate", "avg", "min", "max", "p50", "p95", "p99"],
        },
        "field": {"type": "string", "nullable": True},
        "expr": {"type": "string"},
        "op": {"type": "string", "enum": [">", ">=", "<", "<="]},
        "threshold": {"type": "number"},
        "for_s": {"type": "number"},
        "clear_s": {"type": "number", "nullable": True},
        "severity": {"type": "string", "enum": ["warning", "critical"]},
        "source": {"type": "string", "enum": ["api", "file"]},
        "rule": {"type": "string", "description": "the canonical text form"},
    },
}
openapi.SCHEMAS["RuleIn"] = {
    "oneOf": [
        {
            "type": "object",
            "required": ["rule"],
            "additionalProperties": False,
            "properties": {
                "rule": {
                    "type": "string",
                    "pattern": RULE_TEXT_PATTERN,
                    "example": "error_rate > 0.05 for 30s",
                },
                **_COMMON,
            },
        },
        {
            "type": "object",
            "required": ["expr", "op", "threshold"],
            "additionalProperties": False,
            "properties": {
                "expr": {"type": "string", "enum": ["error_rate"]},
                "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                **_STRUCTURED,
            },
        },
        {
            "type": "object",
            "required": ["expr", "op", "threshold"],
            "additionalProperties": False,
            "properties": {
                "expr": {"type": "string", "pattern": EXPR_PATTERN, "example": "p95(ms)"},
                "threshold": {"type": "number", "minimum": -1e12, "maximum": 1e12},
                **_STRUCTURED,
            },
        },
    ]
}
_ERROR = openapi.ERROR
openapi.EXTRA_PATHS["/api/rules"] = {
    "get": {
        "summary": "Alert rules",
        "responses": {
            "200": openapi._json(
                {
                    "type": "object",
                    "required": ["count", "rules"],
                    "properties": {
                        "count": {"type": "integer"},
                        "rules": {"type": "array", "items": openapi._ref("Rule")},
                    },
                }
            )
        },
    },
    "post": {
        "summary": "Create (201) or replace (200, same id) a rule",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": openapi._ref("RuleIn")}},
        },
        "responses": {
            "200": openapi._json(openapi._ref("Rule"), "Replaced"),
            "201": openapi._json(openapi._ref("Rule"), "Created"),
            "400": _ERROR,
            "401": _ERROR,
            "409": openapi._json(openapi._ref("Error"), "RULES_MAX rules exist already"),
        },
    },
}
openapi.EXTRA_PATHS["/api/rules/{rule_id}"] = {
    "delete": {
        "summary": "Delete a rule (its open alerts close within a second)",
        "parameters": [{"name": "rule_id", "in": "path", "required": True, "schema": _ID}],
        "responses": {
            "200": openapi._json(
                {"type": "object", "required": ["deleted"], "properties": {"deleted": {"type": "string"}}}
            ),
            "401": _ERROR,
            "404": _ERROR,
        },
    }
}
