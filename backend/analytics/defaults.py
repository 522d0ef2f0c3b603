"""The built-in rules: alerting that works on a fresh server, before anomaly detection has learned.

Shaped after Netdata's stock web-log alerts. They live in code, not in Redis, so every node lists
the same ones; a rule stored under a built-in id (POST/PUT/PATCH with that id) overrides it, e.g.
``{"enabled": false}``, and deleting the override restores the default.

- ``builtin-error-rate``: per metric carrying an ``ms`` field (request-like metrics; a metric that
  counts errors, like the generator's ``errors``, is 100% errors by design), error rate over the
  last 60 s, armed only above 120 events/min; warning above 2% (clears below 1%), critical above
  5% (back to warning below 2%).
- ``builtin-latency-p95``: p95(ms) over the analytics window above 1000 ms and above 3x its
  recent baseline for 10 s, with at least 4 events/s.
- ``builtin-no-data``: a metric that was flowing (at least 1 event/s over the 10 s before) has
  sent nothing for 10 s, for another 20 s. Its alert is in state ``nodata``.
"""

from __future__ import annotations

from backend.analytics.rules import Rule, rule_from_json

ERROR_RATE_ID = "builtin-error-rate"
LATENCY_ID = "builtin-latency-p95"
NO_DATA_ID = "builtin-no-data"

_DEFINITIONS = (
    {
        "id": ERROR_RATE_ID,
        "name": "Error rate",
        "expr": "error_rate",
        "op": ">",
        "threshold": 0.02,
        "clear_threshold": 0.01,
        "critical": 0.05,
        "critical_clear": 0.02,
        "window_s": 60,
        "min_rate": 2.0,
        "has_field": "ms",
        "severity": "warning",
    },
    {
        "id": LATENCY_ID,
        "name": "Latency p95",
        "expr": "p95(ms)",
        "op": ">",
        "threshold": 1000,
        "baseline_factor": 3,
        "min_rate": 4.0,
        "for_s": 10,
        "severity": "warning",
    },
    {
        "id": NO_DATA_ID,
        "name": "No data",
        "expr": "rate",
        "op": "<=",
        "threshold": 0,
        "window_s": 10,
        "min_rate": 1.0,
        "for_s": 20,
        "clear_s": 0,
        "severity": "warning",
    },
)


def defaults() -> list[Rule]:
    return [rule_from_json(d, source="builtin") for d in _DEFINITIONS]


DEFAULTS = {r.id: r for r in defaults()}


def is_builtin_id(rule_id: str) -> bool:
    return rule_id in DEFAULTS


def merge(stored: list[Rule], *, enabled: bool = True) -> list[Rule]:
    """Stored rules, plus the defaults not overridden by a stored rule of the same id."""
    if not enabled:
        return [r for r in stored if not r.builtin]
    have = {r.id for r in stored}
    return [*stored, *(r for rid, r in DEFAULTS.items() if rid not in have)]


def is_no_data_rule(rule: Rule) -> bool:
    """`rate <= 0` (or `< x` at most 0): nothing arrived. Its alerts are in state `nodata`."""
    return rule.signal == "rate" and not rule.upward and rule.threshold <= 0 and rule.min_rate is not None
