"""Recent events, windowed aggregates, time series and the dead-letter list."""

from __future__ import annotations

import math
import time

from flask import Blueprint, current_app, jsonify, request

from backend.core.events import NAME_RE
from backend.core.sketch import Sketch
from backend.core.timefmt import iso_ms, parse_iso
from backend.core.window import TagStats, counts_json, timeseries_plan
from backend.web.api.params import int_arg, name_arg
from backend.web.errors import ApiError
from backend.web.jsonprovider import json_in_parts
from backend.web.offload import pause
from backend.web.runtime import get_runtime

bp = Blueprint("metrics", __name__, url_prefix="/api/metrics")

MAX_POINTS = 3600  # timeseries points per request
MAX_TAG_BUCKETS = 3600  # per-tag hashes read by one tag-filtered timeseries
STREAM_ROWS = 64  # an aggregate with more metrics is encoded this many at a time (loop in between)
FUTURE_TOLERANCE_S = 60  # `to` a little ahead of this server's clock is taken as now


def _time_arg(name: str) -> float | None:
    """`from`/`to`: ISO-8601 or unix seconds."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            value = parse_iso(raw)
        except ValueError:
            raise ApiError(
                400, f"{name} must be ISO-8601 or unix seconds, got {raw[:40]!r}", param=name
            ) from None
    if not math.isfinite(value):
        raise ApiError(400, f"{name} must be a finite time", param=name)
    return value


def _range(default_window: int) -> tuple[int, int | None]:
    """(window seconds, end second or None for "now") from `window`, or from `from`/`to` (either may
    be left out: `to` defaults to now, `from` to `to` - window). Within retention, or a 400."""
    retention = current_app.config["RETENTION_S"]
    start, end = _time_arg("from"), _time_arg("to")
    if start is None and end is None:
        return int_arg("window", default_window, 1, retention), None
    now = time.time()
    if end is None:
        end = now
    elif end > now + FUTURE_TOLERANCE_S:
        raise ApiError(400, f"to ({iso_ms(end)}) is in the future (now {iso_ms(now)})", param="to")
    end = min(end, now)
    if start is None:
        start = end - int_arg("window", default_window, 1, retention)
    if start >= end:
        raise ApiError(400, "from must be before to", param="from")
    oldest = now - retention
    if start < oldest:
        raise ApiError(
            400,
            f"from ({iso_ms(start)}) is outside the retention: data older than RETENTION_S={retention}s "
            f"({iso_ms(oldest)}) is gone",
            param="from",
        )
    to_s = math.ceil(end)
    return max(1, to_s - math.floor(start)), to_s


def _tag_arg() -> tuple[str, str] | None:
    """`tag=<key>=<value>` (e.g. endpoint=/api/orders): one tag value's slice."""
    raw = request.args.get("tag")
    if raw is None or raw == "":
        return None
    key, sep, value = raw.partition("=")
    if not sep or not NAME_RE.fullmatch(key) or not value or len(value) > 200:
        raise ApiError(400, f"tag must look like endpoint=/api/orders, got {raw[:80]!r}", param="tag")
    return key, value


HISTORY_LIMIT_MAX = 10_000  # events per `after` request (page on with next_after)


def recent_limit_max(cfg) -> int:
    """Without `after` the answer holds at most RECENT_MAX events anyway."""
    return HISTORY_LIMIT_MAX if cfg["HISTORY_S"] > 0 else cfg["RECENT_MAX"]


def _afters(partitions: int) -> dict[int, int] | None:
    """`after=SEQ` or, with several partitions, `after=SEQ,SEQ,...`: the newest seq the client
    holds of each partition (a seq names its partition: seq % INGEST_PARTITIONS). At most one
    per partition; a partition left out is read from the start of its history."""
    raw = request.args.get("after")
    if raw in (None, ""):
        return None
    items = raw.split(",")
    if len(items) > partitions:
        raise ApiError(400, f"after names at most {partitions} seq(s), one per partition", param="after")
    out: dict[int, int] = {}
    for item in items:
        if not item.strip().isdigit() or int(item) >= 2**63:
            raise ApiError(
                400, f"after must be a seq or seqs separated by commas, got {raw[:80]!r}", param="after"
            )
        seq = int(item)
        if seq % partitions in out:
            raise ApiError(400, f"after names partition {seq % partitions} twice", param="after")
        out[seq % partitions] = seq
    return out


@bp.get("/recent")
def recent():
    """Newest first. With `after=SEQ` (a resync after a gap): the events with a larger seq from
    the last HISTORY_S, `complete` saying whether that is all of them; `order=asc` returns the
    oldest first and `next_after` to page on. With several partitions `after` (and `next_after`)
    hold one seq per partition, and events of different partitions come in time order."""
    cfg = current_app.config
    store = get_runtime().store
    partitions = len(store.parts)
    afters = _afters(partitions)
    history = afters is not None and cfg["HISTORY_S"] > 0
    limit = int_arg("limit", 100, 1, recent_limit_max(cfg))
    metric = name_arg("metric")
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "order must be asc or desc", param="order")
    if not history:
        after = min(afters.values()) if afters else None
        events = store.recent(limit, metric=metric, after=after)
        return jsonify({"count": len(events), "metrics": events})
    if partitions == 1:
        found = store.history_after(afters[0], limit, metric, oldest_first=order == "asc")
    else:
        found = store.history_after_partitions(afters, limit, metric, oldest_first=order == "asc")
    body = {"count": len(found["events"]), "metrics": found["events"], "complete": found["complete"]}
    if partitions == 1:
        body["oldest_seq"] = found["oldest_seq"]
    if found["next_after"] is not None:
        nxt = found["next_after"]
        body["next_after"] = nxt if partitions == 1 else ",".join(str(nxt[k]) for k in sorted(nxt))
    return jsonify(body)


@bp.get("/aggregate")
def aggregate():
    window, to_s = _range(60)
    metric = name_arg("metric")
    now = None if to_s is None else to_s - 1  # the store's window ends with the second `now` is in
    body = get_runtime().store.aggregate(window, metric=metric, now=now)
    if len(body["metrics"]) > STREAM_ROWS:  # wide data: encoded in parts, deliveries in between
        return json_in_parts(body, "metrics", STREAM_ROWS, pause)
    return jsonify(body)


@bp.get("/timeseries")
def timeseries():
    window, to_s = _range(300)
    retention = current_app.config["RETENTION_S"]
    default_step = max(1, window // 60) if to_s is None else max(1, -(-window // 60))
    step = int_arg("step", default_step, 1, max(window, 1))
    if window % step:
        if to_s is None:
            raise ApiError(400, f"window ({window}) must be a multiple of step ({step})", param="step")
        window = min(retention, -(-window // step) * step)  # a from/to range: widen to whole steps
    if window // step > MAX_POINTS:
        raise ApiError(400, f"window/step gives {window // step} points; at most {MAX_POINTS}", param="step")
    metric = name_arg("metric")
    field = name_arg("field")
    tag = _tag_arg()
    store = get_runtime().store
    if tag is not None:
        return jsonify(_tag_timeseries(store, window, step, to_s, metric, field, tag))
    if to_s is None:
        return jsonify(store.timeseries(window, step, metric, field))
    # The store's steps end with the open one after `now`: aim `now` so they end at to_s.
    aligned = -(-to_s // step) * step
    return jsonify(store.timeseries(window, step, metric, field, now=aligned - step - 1))


def _tag_timeseries(store, window: int, step: int, to_s: int | None, metric, field, tag) -> dict:
    """Points of one tag value, from the per-tag buckets top-N reads (TOP_MAX_TAG_VALUES > 0):
    exact counts and errors, p50/p95/p99 of a latency field from the per-tag sketch (~5% relative
    error), no avg (per-tag buckets keep no sums)."""
    if current_app.config["TOP_MAX_TAG_VALUES"] <= 0:
        raise ApiError(409, "per-tag counters are off (TOP_MAX_TAG_VALUES=0): no tag filter", param="tag")
    by, value = tag
    end = to_s if to_s is not None else int(time.time()) + 1
    end = -(-end // step) * step
    res, starts = timeseries_plan(end, window, step)
    if len(starts) > MAX_TAG_BUCKETS:
        raise ApiError(
            400, f"a tag filter reads at most {MAX_TAG_BUCKETS} buckets; use a larger step", param="step"
        )
    pipe = store.redis.pipeline(transaction=False)
    reads = [(start, keys.tag_bucket(res, start)) for start in starts for keys in store.parts]
    for _, key in reads:
        pipe.hgetall(key)
    from_s = end - window
    steps = [TagStats(by, metric=metric, field=field) for _ in range(window // step)]
    for (start, _), h in zip(reads, pipe.execute(), strict=True):
        if h:
            steps[(start - from_s) // step].merge_hash(h)
    points = []
    for i, stats in enumerate(steps):
        count, errors, bins = stats.values.get(value, (0, 0, {}))
        point = {"t": iso_ms(from_s + i * step), **counts_json(count, errors, step), "avg": None}
        sketch = Sketch({k: n for k, n in bins.items() if n > 0}) if field is not None and bins else None
        for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            point[label] = sketch.quantile(q) if sketch is not None else None
        points.append(point)
    return {
        "window_seconds": window,
        "step_seconds": step,
        "from": iso_ms(from_s),
        "to": iso_ms(end),
        "metric": metric,
        "field": field,
        "tag": {by: value},
        "points": points,
    }


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
