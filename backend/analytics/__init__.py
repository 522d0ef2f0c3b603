"""Analytics on top of the aggregate buckets: anomalies, threshold rules, alerts, trends, top-N.

Pure logic (no Flask, no Redis), testable with a controlled clock:
    signals     per-metric values over a short trailing window (rate, error rate, percentiles)
    anomaly     EWMA baselines and z-scores, severity, hysteresis, frozen baselines
    rules       the rule grammar, JSON validation, canonical form
    hysteresis  the open/close state machine shared by rules and anomalies
    engine      one evaluation step: signals in, alert transitions out
    trend       online least-squares slope and its classification
    top         ranking tag values by count, errors or p95

    settings    the analytics settings read from the Flask config

Their I/O lives with the other stages: rules, alerts and bucket reads in backend/storage/alerts.py,
the once-a-second evaluator and the webhook sender in backend/tasks/.

See docs/analytics.md.
"""
