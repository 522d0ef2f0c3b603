"""Glue between the app and analytics: one AnalyticsStore per app, and starting the evaluator.

Wiring (see docs/analytics.md): the process that runs the ingest worker calls
``start_evaluator(app, socketio, worker)`` right after starting the worker; the evaluator then
acts whenever that worker holds the lease.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app

from backend.analytics.settings import AnalyticsSettings
from backend.storage.alerts import AnalyticsStore
from backend.tasks.evaluator import Evaluator
from backend.web.runtime import get_runtime

log = logging.getLogger(__name__)

STORE_KEY = "pulseboard.analytics.store"
EVALUATOR_KEY = "pulseboard.analytics.evaluator"


def settings(app: Flask | None = None) -> AnalyticsSettings:
    return AnalyticsSettings.from_config((app or current_app).config)


def analytics_store(app: Flask | None = None) -> AnalyticsStore:
    app = app or current_app
    store = app.extensions.get(STORE_KEY)
    if store is None:
        s = settings(app)
        runtime = get_runtime(app)
        store = app.extensions[STORE_KEY] = AnalyticsStore(
            runtime.store.redis,
            runtime.store.keys,
            keep_closed=s.keep_closed,
            rules_max=s.rules_max,
            default_rules=s.default_rules,
            parts=runtime.store.parts,
        )
    return store


def start_evaluator(app: Flask, socketio, worker) -> Evaluator | None:
    """Start the evaluator (and the webhook sender) as background tasks, once per process."""
    if not settings(app).enabled:
        log.info("analytics: evaluator disabled (ANALYTICS_ENABLED=false)")
        return None
    existing = app.extensions.get(EVALUATOR_KEY)
    if existing is not None:
        return existing
    store = get_runtime(app).store
    evaluator = Evaluator(app.config, store.redis, store.keys, socketio, worker=worker, sleep=socketio.sleep)
    app.extensions[EVALUATOR_KEY] = evaluator
    socketio.start_background_task(evaluator.run)
    if evaluator.webhook is not None:
        socketio.start_background_task(evaluator.webhook.run)
    return evaluator


def stop_evaluator(app: Flask) -> None:
    evaluator = app.extensions.get(EVALUATOR_KEY)
    if evaluator is not None:
        evaluator.stop()
