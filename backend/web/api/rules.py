"""Alert rules: list, create or replace, delete. Stored in Redis, so every node sees the same set;
the evaluator picks changes up within a second. Grammar and JSON forms: docs/analytics.md."""

from __future__ import annotations

import uuid

from flask import Blueprint, jsonify, request

from backend.analytics import defaults
from backend.analytics.rules import (
    EXPR_PATTERN,
    EXTRA_KEYS,
    ID_RE,
    MAX_CLEAR_S,
    MAX_FOR_S,
    MAX_NAME,
    RULE_TEXT_PATTERN,
    RuleError,
    rule_from_json,
)
from backend.storage.alerts import RulesFull
from backend.tasks.analytics import analytics_store
from backend.web.api import openapi
from backend.web.api.params import require_api_key
from backend.web.errors import ApiError

bp = Blueprint("rules", __name__, url_prefix="/api")


@bp.get("/rules")
def list_rules():
    rules = [r.as_dict() for r in analytics_store().rules()]
    return jsonify({"count": len(rules), "rules": rules})


def _store_rule(body, rule_id: str | None = None):
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON rule (Content-Type: application/json)", field="body")
    if rule_id is not None:
        body = {**body, "id": rule_id}  # the URL names the rule
    # A rule under a built-in id overrides that built-in rule (and stays listed as built-in).
    source = "builtin" if isinstance(body.get("id"), str) and defaults.is_builtin_id(body["id"]) else "api"
    try:
        rule = rule_from_json(body, source=source, new_id=lambda: f"r-{uuid.uuid4().hex[:10]}")
    except RuleError as exc:
        raise ApiError(400, exc.message, field=exc.field) from None
    try:
        created = analytics_store().put_rule(rule)
    except RulesFull as exc:
        raise ApiError(409, str(exc)) from None
    return jsonify(rule.as_dict()), 201 if created else 200


@bp.post("/rules")
@require_api_key
def create_rule():
    return _store_rule(request.get_json(silent=True))


@bp.put("/rules/<rule_id>")
@require_api_key
def replace_rule(rule_id: str):
    _check_id(rule_id)
    return _store_rule(request.get_json(silent=True), rule_id)


@bp.patch("/rules/<rule_id>")
@require_api_key
def patch_rule(rule_id: str):
    """Change some keys of a rule (``{"enabled": false}``, ``{"silenced_until": ...}``); the rest
    stays as it is. On a built-in rule this stores an override."""
    _check_id(rule_id)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object of the keys to change", field="body")
    current = next((r for r in analytics_store().rules() if r.id == rule_id), None)
    if current is None:
        raise ApiError(404, f"no rule with id {rule_id[:80]!r}")
    base = {k: v for k, v in current.as_dict().items() if k in _PATCHABLE and v is not None}
    if not current.named:
        base.pop("name", None)  # it was the rule text: let it follow the edit
    if any(k in body for k in ("expr", "op", "threshold", "for_s", "metric")):
        base.pop("rule", None)
        base.update(metric=current.metric, expr=current.expr, op=current.op, threshold=current.threshold)
        base["for_s"] = current.for_s
    merged = {**base, **body}
    for key in [k for k, v in body.items() if v is None]:  # null removes an optional key
        merged.pop(key, None)
    return _store_rule(merged, rule_id)


_PATCHABLE = {"name", "severity", "clear_s", "rule", *EXTRA_KEYS}


def _check_id(rule_id: str) -> None:
    if not ID_RE.fullmatch(rule_id):
        raise ApiError(404, f"no rule with id {rule_id[:80]!r}")


@bp.delete("/rules/<rule_id>")
@require_api_key
def delete_rule(rule_id: str):
    _check_id(rule_id)
    if analytics_store().delete_rule(rule_id):
        body = {"deleted": rule_id}
        if defaults.is_builtin_id(rule_id):
            body["restored"] = True  # the override is gone; the built-in default applies again
        return jsonify(body)
    if defaults.is_builtin_id(rule_id):
        raise ApiError(
            409, f'{rule_id} is a built-in rule: turn it off with PATCH {{"enabled": false}} instead'
        )
    raise ApiError(404, f"no rule with id {rule_id[:80]!r}")


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
_NUM = {"type": "number", "nullable": True}
# The refinements with rules between them (critical beyond threshold, window_s only on counts, ...)
# are documented in docs/analytics.md; the schema names those a client can set on any rule.
_EXTRA_IN = {
    "enabled": {"type": "boolean"},
    "silenced_until": {
        "type": "number",
        "minimum": 0,
        "maximum": 4e9,
        "description": "unix s; the rule opens nothing before",
    },
}
_EXTRA_OUT = {
    **{k: _NUM for k in ("window_s", "min_rate", "clear_threshold", "critical", "critical_clear")},
    "baseline_factor": _NUM,
    "has_field": {"type": "string", "nullable": True},
    "enabled": {"type": "boolean"},
    "silenced_until": _NUM,
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
        "source": {"type": "string", "enum": ["api", "file", "builtin"]},
        "rule": {"type": "string", "description": "the canonical text form"},
        "builtin": {"type": "boolean", "description": "a built-in rule (or an override of one)"},
        **_EXTRA_OUT,
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
                **_EXTRA_IN,
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
                **_EXTRA_IN,
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
                **_EXTRA_IN,
            },
        },
    ]
}
_ERROR = openapi.ERROR
_RULE_BODY = {"required": True, "content": {"application/json": {"schema": openapi._ref("RuleIn")}}}
_RULE_WRITTEN = {  # what a create-or-replace answers
    "200": openapi._json(openapi._ref("Rule"), "Replaced"),
    "201": openapi._json(openapi._ref("Rule"), "Created"),
    "400": _ERROR,
    "401": _ERROR,
}
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
        "requestBody": _RULE_BODY,
        "responses": {
            **_RULE_WRITTEN,
            "409": openapi._json(openapi._ref("Error"), "RULES_MAX rules exist already"),
        },
    },
}
openapi.EXTRA_PATHS["/api/rules/{rule_id}"] = {
    "put": {
        "summary": "Create or replace the rule with this id (a built-in id stores an override)",
        "parameters": [{"name": "rule_id", "in": "path", "required": True, "schema": _ID}],
        "requestBody": _RULE_BODY,
        "responses": {
            **_RULE_WRITTEN,
            "409": _ERROR,
        },
    },
    "patch": {
        "summary": "Change some keys of a rule, e.g. enabled or silenced_until",
        "parameters": [{"name": "rule_id", "in": "path", "required": True, "schema": _ID}],
        # What the dashboard changes; the other RuleIn keys may be patched too (validated alike),
        # but documenting each combination as valid on its own would be untrue.
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "silenced_until": {
                                "type": "number",
                                "minimum": 0,
                                "maximum": 4e9,
                                "nullable": True,
                                "description": "unix seconds; null ends a silence",
                            },
                        },
                    }
                }
            },
        },
        "responses": {
            "200": openapi._json(openapi._ref("Rule"), "Changed"),
            "201": openapi._json(openapi._ref("Rule"), "Override of a built-in rule stored"),
            "400": _ERROR,
            "401": _ERROR,
            "404": _ERROR,
        },
    },
    "delete": {
        "summary": "Delete a rule (its open alerts close within a second)",
        "parameters": [{"name": "rule_id", "in": "path", "required": True, "schema": _ID}],
        "responses": {
            "200": openapi._json(
                {"type": "object", "required": ["deleted"], "properties": {"deleted": {"type": "string"}}}
            ),
            "401": _ERROR,
            "404": _ERROR,
            "409": _ERROR,
        },
    },
}
