"""The analytics settings, read from the app config (backend/config.py holds their defaults,
units and environment names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backend.analytics.anomaly import AnomalySettings
from backend.config import Config

SETTINGS = (
    "ANALYTICS_ENABLED",
    "ANALYTICS_SETTLE_MS",
    "ANALYTICS_WINDOW_S",
    "ANALYTICS_HISTORY_S",
    "ANOMALY_ENABLED",
    "ANOMALY_WARNING_Z",
    "ANOMALY_CRITICAL_Z",
    "ANOMALY_CLEAR_Z",
    "ANOMALY_SPAN_S",
    "ANOMALY_MIN_HISTORY_S",
    "ANOMALY_FOR_S",
    "ANOMALY_MIN_EVENTS",
    "ANOMALY_MAX_OPEN_S",
    "ANOMALY_TAGS",
    "ALERT_CLEAR_S",
    "ALERTS_KEEP_CLOSED",
    "RULES_FILE",
    "RULES_MAX",
    "ALERT_DEFAULT_RULES",
    "ALERT_WEBHOOK_URL",
    "ALERT_WEBHOOK_TIMEOUT_S",
    "ALERT_WEBHOOK_ATTEMPTS",
    "ALERT_WEBHOOK_BACKOFF_S",
    "ALERT_WEBHOOK_BACKOFF_MAX_S",
    "ALERT_WEBHOOK_QUEUE",
    "TOP_MAX_TAG_VALUES",
    "TREND_MIN_CHANGE",
)
# Defaults (and units) live in backend/config.py; a partial config (tests, tools) falls back to them.
DEFAULTS = {key: getattr(Config, key) for key in SETTINGS}


@dataclass(frozen=True)
class AnalyticsSettings:
    enabled: bool
    settle_s: float
    window_s: int
    history_s: int
    anomalies: bool
    anomaly: AnomalySettings
    anomaly_tags: tuple[str, ...]
    clear_s: float
    keep_closed: int
    rules_file: str
    rules_max: int
    default_rules: bool
    webhook_url: str
    webhook_timeout_s: float
    webhook_attempts: int
    webhook_backoff_s: float
    webhook_backoff_max_s: float
    webhook_queue: int
    top_max_tag_values: int
    trend_min_change: float

    @classmethod
    def from_config(cls, config: Mapping) -> AnalyticsSettings:
        def get(key: str):
            return config.get(key, DEFAULTS[key])

        window_s = int(get("ANALYTICS_WINDOW_S"))
        if window_s < 1:
            raise ValueError("ANALYTICS_WINDOW_S must be >= 1")
        return cls(
            enabled=bool(get("ANALYTICS_ENABLED")),
            settle_s=max(0.0, get("ANALYTICS_SETTLE_MS") / 1000.0),
            window_s=window_s,
            history_s=max(0, int(get("ANALYTICS_HISTORY_S"))),
            anomalies=bool(get("ANOMALY_ENABLED")),
            anomaly=AnomalySettings(
                warning_z=float(get("ANOMALY_WARNING_Z")),
                critical_z=float(get("ANOMALY_CRITICAL_Z")),
                clear_z=float(get("ANOMALY_CLEAR_Z")),
                span_s=float(get("ANOMALY_SPAN_S")),
                min_history_s=int(get("ANOMALY_MIN_HISTORY_S")),
                clear_s=float(get("ALERT_CLEAR_S")),
                for_s=float(get("ANOMALY_FOR_S")),
                min_events=int(get("ANOMALY_MIN_EVENTS")),
                max_open_s=float(get("ANOMALY_MAX_OPEN_S")),
                window_s=window_s,
            ),
            anomaly_tags=tuple(get("ANOMALY_TAGS")),
            clear_s=float(get("ALERT_CLEAR_S")),
            keep_closed=max(1, int(get("ALERTS_KEEP_CLOSED"))),
            rules_file=str(get("RULES_FILE") or ""),
            rules_max=max(1, int(get("RULES_MAX"))),
            default_rules=bool(get("ALERT_DEFAULT_RULES")),
            webhook_url=str(get("ALERT_WEBHOOK_URL") or ""),
            webhook_timeout_s=float(get("ALERT_WEBHOOK_TIMEOUT_S")),
            webhook_attempts=max(1, int(get("ALERT_WEBHOOK_ATTEMPTS"))),
            webhook_backoff_s=float(get("ALERT_WEBHOOK_BACKOFF_S")),
            webhook_backoff_max_s=float(get("ALERT_WEBHOOK_BACKOFF_MAX_S")),
            webhook_queue=max(1, int(get("ALERT_WEBHOOK_QUEUE"))),
            top_max_tag_values=max(0, int(get("TOP_MAX_TAG_VALUES"))),
            trend_min_change=float(get("TREND_MIN_CHANGE")),
        )
