"""Recent events, windowed aggregates, time series and the dead-letter list."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from backend.api.params import int_arg, name_arg, optional_int_arg
from backend.errors import ApiError
from backend.runtime import get_runtime

bp = Blueprint("metrics", __name__, url_prefix="/api/metrics")

MAX_POINTS = 3600  # timeseries points per request


HISTORY_LIMIT_MAX = 10_000  # events per `after` request (page on with next_after)


def recent_limit_max(cfg) -> int:
    """Without `after` the answer holds at most RECENT_MAX events anyway."""
    return HISTORY_LIMIT_MAX if cfg["HISTORY_S"] > 0 else cfg["RECENT_MAX"]


@bp.get("/recent")
def recent():
    """Newest first. With `after=SEQ` (a resync after a gap): the events with a larger seq from
    the last HISTORY_S, `complete` saying whether that is all of them; `order=asc` returns the
    oldest first and `next_after` to page on."""
    cfg = current_app.config
    after = optional_int_arg("after", 0, 2**63 - 1)
    history = after is not None and cfg["HISTORY_S"] > 0
    limit = int_arg("limit", 100, 1, recent_limit_max(cfg))
    metric = name_arg("metric")
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "order must be asc or desc", param="order")
    store = get_runtime().store
    if not history:
        events = store.recent(limit, metric=metric, after=after)
        return jsonify({"count": len(events), "metrics": events})
    found = store.history_after(after, limit, metric, oldest_first=order == "asc")
    body = {"count": len(found["events"]), "metrics": found["events"], "complete": found["complete"]}
    body["oldest_seq"] = found["oldest_seq"]
    if found["next_after"] is not None:
        body["next_after"] = found["next_after"]
    return jsonify(body)


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
