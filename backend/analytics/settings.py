"""The analytics settings, taken from the app config. They are declared (name, type, default, unit,
bounds) once, in backend/config.py's `Settings`, section "analytics"; this module only turns them
into the evaluator's terms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backend.analytics.anomaly import AnomalySettings
from backend.config import DEFAULTS as DECLARED
from backend.config import specs

SETTINGS = tuple(s.name for s in specs() if s.section.startswith("analytics"))
# What a partial config (tests, tools) falls back to: the declared defaults, never the environment.
DEFAULTS = {key: getattr(DECLARED, key) for key in SETTINGS}


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
        """From a Flask config (or any mapping; missing keys take their declared defaults). The
        values are checked against their declarations: SettingError names a bad one."""
        v = DECLARED.replace({key: config[key] for key in SETTINGS if key in config})
        return cls(
            enabled=v.ANALYTICS_ENABLED,
            settle_s=v.ANALYTICS_SETTLE_MS / 1000.0,
            window_s=v.ANALYTICS_WINDOW_S,
            history_s=v.ANALYTICS_HISTORY_S,
            anomalies=v.ANOMALY_ENABLED,
            anomaly=AnomalySettings(
                warning_z=v.ANOMALY_WARNING_Z,
                critical_z=v.ANOMALY_CRITICAL_Z,
                clear_z=v.ANOMALY_CLEAR_Z,
                span_s=float(v.ANOMALY_SPAN_S),
                min_history_s=v.ANOMALY_MIN_HISTORY_S,
                clear_s=v.ALERT_CLEAR_S,
                for_s=v.ANOMALY_FOR_S,
                min_events=v.ANOMALY_MIN_EVENTS,
                max_open_s=float(v.ANOMALY_MAX_OPEN_S),
                window_s=v.ANALYTICS_WINDOW_S,
            ),
            anomaly_tags=v.ANOMALY_TAGS,
            clear_s=v.ALERT_CLEAR_S,
            keep_closed=v.ALERTS_KEEP_CLOSED,
            rules_file=v.RULES_FILE,
            rules_max=v.RULES_MAX,
            default_rules=v.ALERT_DEFAULT_RULES,
            webhook_url=v.ALERT_WEBHOOK_URL,
            webhook_timeout_s=v.ALERT_WEBHOOK_TIMEOUT_S,
            webhook_attempts=v.ALERT_WEBHOOK_ATTEMPTS,
            webhook_backoff_s=v.ALERT_WEBHOOK_BACKOFF_S,
            webhook_backoff_max_s=v.ALERT_WEBHOOK_BACKOFF_MAX_S,
            webhook_queue=v.ALERT_WEBHOOK_QUEUE,
            top_max_tag_values=v.TOP_MAX_TAG_VALUES,
            trend_min_change=v.TREND_MIN_CHANGE,
        )
