"""Recent events, windowed aggregates, time series and the dead-letter list."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from backend.api.params import int_arg, name_arg, optional_int_arg
from backend.errors import ApiError
from backend.runtime import get_runtime

bp = Blueprint("metrics", __name__, url_prefix="/api/metrics")

MAX_POINTS = 3600  # timeseries points per request


@bp.get("/recent")
def recent():
    cfg = current_app.config
    limit = int_arg("limit", 100, 1, cfg["RECENT_MAX"])
    metric = name_arg("metric")
    after = optional_int_arg("after", 0, 2**63 - 1)
    events = get_runtime().store.recent(limit, metric=metric, after=after)
    return jsonify({"count": len(events), "metrics": events})


@bp.get("/aggregate")
def aggregate():
    retention = current_app.config["RETENTION_S"]
    window = int_arg("window", 60, 1, retention)
    metric = name_arg("metric")
    return jsonify(get_runtime().store.aggregate(window, metric=metric))


@bp.get("/timeseries")
def timeseries():
    retention = current_app.config["RETENTION_S"]
    window = int_arg("window", 300, 1, retention)
    step = int_arg("step", max(1, window // 60), 1, window)
    if window % step:
        raise ApiError(400, f"window ({window}) must be a multiple of step ({step})", param="step")
    if window // step > MAX_POINTS:
        raise ApiError(400, f"window/step gives {window // step} points; at most {MAX_POINTS}", param="step")
    metric = name_arg("metric")
    field = name_arg("field")
    return jsonify(get_runtime().store.timeseries(window, step, metric, field))


@bp.get("/rejected")
def rejected():
    cfg = current_app.config
    limit = int_arg("limit", 100, 1, cfg["DEAD_LETTER_MAX"])
    store = get_runtime().store
    items = store.rejected(limit)
    stats = store.stats()
    reasons = {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("rejected:")}
    return jsonify(
        {"count": len(items), "total": stats.get("rejected", 0), "reasons": reasons, "rejected": items}
    )


@bp.get("/stats")
def stats():
    return jsonify(get_runtime().store.stats())
