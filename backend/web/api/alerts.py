"""Alerts: the open ones and the recently closed ones, and acknowledging them.

Acknowledging marks an alert as seen (it stays open until its condition clears) and pushes the
updated alert to every Socket.IO client as an `alert` event, like every other change."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify, request

from backend.tasks.analytics import analytics_store
from backend.tasks.evaluator import public
from backend.web.api import openapi
from backend.web.api.params import int_arg, require_api_key
from backend.web.errors import ApiError
from backend.web.extensions import socketio

bp = Blueprint("alerts", __name__, url_prefix="/api")

STATES = ("open", "closed", "all")
MAX_LIMIT = 1000
ALERT_ID_RE = r"^[A-Za-z0-9_-]{1,64}$"


@bp.get("/alerts")
def list_alerts():
    state = request.args.get("state") or "all"
    if state not in STATES:
        raise ApiError(400, f"state must be one of {', '.join(STATES)}, got {state[:40]!r}", param="state")
    limit = int_arg("limit", 100, 1, MAX_LIMIT)
    alerts = [public(a) for a in analytics_store().list(state, limit)]
    return jsonify({"count": len(alerts), "state": state, "alerts": alerts})


@bp.post("/alerts/<alert_id>/ack")
@require_api_key
def ack_alert(alert_id: str):
    alert = analytics_store().ack(alert_id, time.time()) if len(alert_id) <= 64 else None
    if alert is None:
        raise ApiError(404, f"no alert with id {alert_id[:80]!r}")
    alert = public(alert)
    socketio.emit("alert", alert)
    return jsonify(alert)


# --- OpenAPI -----------------------------------------------------------------------------------
_TIME = {"type": "string", "description": "ISO-8601 UTC"}
_TIME_OR_NULL = {**_TIME, "nullable": True}
_NUM_OR_NULL = {"type": "number", "nullable": True}
_STR_OR_NULL = {"type": "string", "nullable": True}
openapi.SCHEMAS["Alert"] = {
    "type": "object",
    "required": [
        "id",
        "kind",
        "metric",
        "field",
        "signal",
        "severity",
        "state",
        "value",
        "threshold",
        "zscore",
        "opened_at",
        "closed_at",
        "acked",
        "message",
    ],
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string", "enum": ["anomaly", "rule"]},
        "metric": {"type": "string"},
        "tags": {
            "type": "object",
            "nullable": True,
            "additionalProperties": {"type": "string"},
            "description": 'anomaly alerts on one tag value (ANOMALY_TAGS), e.g. {"endpoint": "/api/orders"}',
        },
        "field": _STR_OR_NULL,
        "signal": {"type": "string"},
        "direction": {"type": "string", "enum": ["above", "below"]},
        "severity": {"type": "string", "enum": ["warning", "critical"]},
        "state": {"type": "string", "enum": ["open", "closed"]},
        "value": _NUM_OR_NULL,
        "threshold": {**_NUM_OR_NULL, "description": "rule alerts"},
        "zscore": {**_NUM_OR_NULL, "description": "anomaly alerts"},
        "baseline": {**_NUM_OR_NULL, "description": "anomaly alerts: the baseline mean"},
        "rule_id": _STR_OR_NULL,
        "rule": _STR_OR_NULL,
        "opened_at": _TIME,
        "closed_at": _TIME_OR_NULL,
        "updated_at": _TIME,
        "acked": {"type": "boolean"},
        "acked_at": _TIME_OR_NULL,
        "message": {"type": "string"},
    },
}
_ID_PARAM = {
    "name": "alert_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": ALERT_ID_RE},
}
openapi.EXTRA_PATHS["/api/alerts"] = {
    "get": {
        "summary": "Alerts, newest first (open ones before closed ones for state=all)",
        "parameters": [
            openapi._query("state", {"type": "string", "enum": list(STATES)}, "default all"),
            openapi._query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "default 100"),
        ],
        "responses": {
            "200": openapi._json(
                {
                    "type": "object",
                    "required": ["count", "state", "alerts"],
                    "properties": {
                        "count": {"type": "integer"},
                        "state": {"type": "string", "enum": list(STATES)},
                        "alerts": {"type": "array", "items": openapi._ref("Alert")},
                    },
                }
            ),
            "400": openapi.ERROR,
        },
    }
}
openapi.EXTRA_PATHS["/api/alerts/{alert_id}/ack"] = {
    "post": {
        "summary": "Acknowledge an alert",
        "parameters": [_ID_PARAM],
        "responses": {
            "200": openapi._json(openapi._ref("Alert")),
            "401": openapi.ERROR,
            "404": openapi.ERROR,
        },
    }
}
