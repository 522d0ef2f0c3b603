"""Analytics on top of the aggregate buckets: anomalies, threshold rules, alerts, trends, top-N.

Pure logic (no Flask, no Redis), testable with a controlled clock:
    signals     per-metric values over a short trailing window (rate, error rate, percentiles)
    anomaly     EWMA baselines and z-scores, severity, hysteresis, frozen baselines
    rules       the rule grammar, JSON validation, canonical form
    hysteresis  the open/close state machine shared by rules and anomalies
    engine      one evaluation step: signals in, alert transitions out
    trend       online least-squares slope and its classification
    top         ranking tag values by count, errors or p95

I/O:
    storage     rules and alerts in Redis, bucket reads for the evaluator, top-N and trends
    webhook     a bounded queue and a background sender with retries
    evaluator   the once-a-second task in the process holding the worker lease
    settings    the analytics settings read from the Flask config

See docs/analytics.md.
"""
