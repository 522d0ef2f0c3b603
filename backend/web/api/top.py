"""Top-N tag values and rate trends, under /api/metrics next to the aggregates.

Both read Redis only: top-N merges the per-tag buckets (Keys.tag_bucket) of the window, trends
the per-metric event counters of the plain buckets (filtered server-side with HSCAN MATCH, so no
sketch is transferred). Neither touches what /api/metrics/aggregate reads or caches.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request

from backend.analytics.top import ORDERS, rank
from backend.analytics.trend import classify
from backend.core.layout import is_latency_field
from backend.core.timefmt import iso_ms
from backend.tasks.analytics import analytics_store, settings
from backend.web.api import openapi
from backend.web.api.params import int_arg, name_arg
from backend.web.errors import ApiError

bp = Blueprint("analytics_metrics", __name__, url_prefix="/api/metrics")

MAX_N = 100
TREND_MIN_WINDOW_S = 10
TREND_PER_SECOND_MAX_S = 900  # longer windows use per-minute rates


@bp.get("/top")
def top():
    cfg = current_app.config
    window = int_arg("window", 300, 1, cfg["RETENTION_S"])
    by = name_arg("by")
    if by is None:
        raise ApiError(400, "by (the tag to rank values of, e.g. endpoint) is required", param="by")
    metric = name_arg("metric")
    n = int_arg("n", 10, 1, MAX_N)
    order = request.args.get("order") or "count"
    if order not in ORDERS:
        raise ApiError(400, f"order must be one of {', '.join(ORDERS)}, got {order[:40]!r}", param="order")
    field = name_arg("field") or "ms"
    if not is_latency_field(field):
        raise ApiError(
            400,
            f"field must be latency-like (ms or *_ms: those have per-tag sketches), got {field!r}",
            param="field",
        )
    if settings().top_max_tag_values <= 0:
        raise ApiError(409, "per-tag counters are off (TOP_MAX_TAG_VALUES=0)")
    to_s, stats = analytics_store().tag_window(window, by=by, metric=metric, field=field)
    ranked = rank(stats.values, order=order, n=n, window_s=window, with_p95=True)
    return jsonify(
        {
            "window_seconds": window,
            "from": iso_ms(to_s - window),
            "to": iso_ms(to_s),
            "metric": metric,
            "by": by,
            "order": order,
            "field": field,
            "n": n,
            **ranked,
        }
    )


@bp.get("/trends")
def trends():
    cfg = current_app.config
    window = int_arg("window", 300, TREND_MIN_WINDOW_S, cfg["RETENTION_S"])
    metric = name_arg("metric")
    now_s = int(time.time())  # the current second is still filling: left out
    if window <= TREND_PER_SECOND_MAX_S:
        res, to_s, steps = 1, now_s, window
    else:
        res, to_s = 60, now_s - now_s % 60
        steps = window // 60
    from_s = to_s - steps * res
    starts = list(range(from_s, to_s, res))
    series = analytics_store().count_series(starts, res)
    min_change = settings().trend_min_change
    out = {}
    for name in sorted(series):
        if metric is not None and name != metric:
            continue
        points = [(start - from_s, count / res) for start, count in zip(starts, series[name], strict=True)]
        fit = classify(points, window_s=steps * res, min_change=min_change)
        out[name] = {
            "trend": fit["trend"],
            "slope_per_s": fit["slope_per_s"],
            "relative_slope": fit["relative_slope"],
            "mean_rate": fit["mean"],
            "points": fit["points"],
        }
    return jsonify(
        {
            "window_seconds": steps * res,
            "step_seconds": res,
            "from": iso_ms(from_s),
            "to": iso_ms(to_s),
            "trends": out,
        }
    )


# --- OpenAPI -----------------------------------------------------------------------------------
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,100}$"}
_TOP_ROW = {
    "type": "object",
    "required": ["value", "count", "errors", "error_rate", "rate_per_sec", "p95"],
    "properties": {
        "value": {"type": "string"},
        "count": {"type": "integer"},
        "errors": {"type": "integer"},
        "error_rate": {"type": "number"},
        "rate_per_sec": {"type": "number"},
        "p95": {"type": "number", "nullable": True},
    },
}
openapi.SCHEMAS["TopRow"] = _TOP_ROW
openapi.EXTRA_PATHS["/api/metrics/top"] = {
    "get": {
        "summary": "Tag values with the most events or errors, or the highest p95, over a window",
        "parameters": [
            {
                **openapi._query("by", _NAME, "the tag to rank the values of (endpoint, region, ...)"),
                "required": True,
            },
            openapi._query(
                "window",
                {"type": "integer", "minimum": 1},  # maximum: RETENTION_S (openapi.document)
                "seconds (default 300)",
            ),
            openapi._query("metric", _NAME, "only this metric (default: all metrics with the tag)"),
            openapi._query("n", {"type": "integer", "minimum": 1, "maximum": MAX_N}, "rows (default 10)"),
            openapi._query("order", {"type": "string", "enum": list(ORDERS)}, "default count"),
            openapi._query(
                "field",
                {"type": "string", "pattern": r"^(ms|[A-Za-z0-9_.:-]{1,61}_ms)$"},
                "latency-like field for p95 (default ms)",
            ),
        ],
        "responses": {
            "200": openapi._json(
                {
                    "type": "object",
                    "required": [
                        "window_seconds",
                        "from",
                        "to",
                        "by",
                        "order",
                        "field",
                        "n",
                        "distinct",
                        "top",
                        "other",
                    ],
                    "properties": {
                        "window_seconds": {"type": "integer"},
                        "from": {"type": "string"},
                        "to": {"type": "string"},
                        "metric": {"type": "string", "nullable": True},
                        "by": {"type": "string"},
                        "order": {"type": "string", "enum": list(ORDERS)},
                        "field": {"type": "string"},
                        "n": {"type": "integer"},
                        "distinct": {"type": "integer"},
                        "top": {"type": "array", "items": openapi._ref("TopRow")},
                        "other": {**openapi._ref("TopRow"), "nullable": True},
                    },
                }
            ),
            "400": openapi.ERROR,
            "409": openapi._json(openapi._ref("Error"), "per-tag counters are off"),
        },
    }
}
openapi.EXTRA_PATHS["/api/metrics/trends"] = {
    "get": {
        "summary": "Rising / falling / stable per metric, from the least-squares slope of its rate",
        "parameters": [
            openapi._query(
                "window",
                {"type": "integer", "minimum": TREND_MIN_WINDOW_S},  # maximum: RETENTION_S
                "seconds (default 300); over 900 uses per-minute rates",
            ),
            openapi._query("metric", _NAME, "only this metric"),
        ],
        "responses": {
            "200": openapi._json(
                {
                    "type": "object",
                    "required": ["window_seconds", "step_seconds", "from", "to", "trends"],
                    "properties": {
                        "window_seconds": {"type": "integer"},
                        "step_seconds": {"type": "integer"},
                        "from": {"type": "string"},
                        "to": {"type": "string"},
                        "trends": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["trend", "slope_per_s", "relative_slope", "mean_rate", "points"],
                                "properties": {
                                    "trend": {"type": "string", "enum": ["rising", "falling", "stable"]},
                                    "slope_per_s": {"type": "number"},
                                    "relative_slope": {"type": "number", "nullable": True},
                                    "mean_rate": {"type": "number"},
                                    "points": {"type": "integer"},
                                },
                            },
                        },
                    },
                }
            ),
            "400": openapi.ERROR,
        },
    }
}
