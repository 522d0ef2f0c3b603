"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from flask import Blueprint, Response

from backend import telemetry

bp = Blueprint("telemetry", __name__)


@bp.get("/metrics")
def metrics():
    body, content_type = telemetry.render()
    return Response(body, content_type=content_type)
