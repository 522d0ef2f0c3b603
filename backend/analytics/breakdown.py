"""Breakdown series: a metric's events with one tag value (``http_request[endpoint=/api/orders]``),
watched for anomalies beside the metric itself.

A per-metric watch misses an incident on a small part of the traffic: 30% errors on an endpoint
that serves 3% of the requests add under one point to the metric's error rate, and a slow fast
endpoint does not move the p95 that the slow endpoints set. Watching the error rate and the p95 of
each value of a few chosen tags (ANOMALY_TAGS, default ``endpoint``) catches those and says where
the trouble is. The per-tag counters written for top-N (backend/core/layout.py) are the input,
so this costs no extra work on the ingest path.

A series name is never a valid metric name (metric names cannot hold ``[``), and tag values are
kept percent-encoded in it, so it cannot hold the ``|`` that alert keys are split on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from backend.core.layout import OTHER, decode_tag_value, encode_tag_value, parse_tag_name
from backend.core.state import FieldState, MetricState


def series_name(metric: str, tag: str, value: str) -> str:
    return f"{metric}[{tag}={encode_tag_value(value)}]"


def is_series(name: str) -> bool:
    return "[" in name


def split_series(name: str) -> tuple[str, dict[str, str] | None]:
    """(metric, {tag: value}) of a series name; (name, None) for a plain metric."""
    if not name.endswith("]") or "[" not in name:
        return name, None
    metric, _, inner = name[:-1].partition("[")
    tag, _, encoded = inner.partition("=")
    return metric, {tag: decode_tag_value(encoded)}


def tag_series(h: Mapping, tags: Iterable[str]) -> dict[str, MetricState]:
    """The breakdown series of one per-second per-tag hash, shaped like ``WindowStats.metrics``:
    series name -> MetricState of its events, errors and latency fields' sketch bins.

    Only count, errors and sketch bins exist per tag value (no sum, min or max), which is all the
    error-rate and p95 watches read. Values past the per-tag limit (``__other__``) are a mix of
    anything and are not watched."""
    wanted = set(tags)
    out: dict[str, MetricState] = {}
    if not wanted:
        return out
    for raw, count in h.items():
        parsed = parse_tag_name(raw)
        if parsed is None:
            continue
        metric, tag, value, kind, fname, bk = parsed
        if tag not in wanted or value == OTHER:
            continue
        name = series_name(metric, tag, value)
        s = out.get(name)
        if s is None:
            s = out[name] = MetricState()
        n = int(count)
        if kind == "c":
            s.count += n
        elif kind == "e":
            s.errors += n
        else:
            f = s.fields.get(fname)
            if f is None:
                f = s.fields[fname] = FieldState()
            f.count += n
            f.bins[bk] = f.bins.get(bk, 0) + n
    return out
