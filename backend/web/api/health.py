"""Liveness and readiness."""

from __future__ import annotations

import contextlib
import time

import redis
from flask import Blueprint, jsonify

from backend.core.timefmt import iso_ms
from backend.web.runtime import get_runtime

bp = Blueprint("health", __name__, url_prefix="/api")

WORKER_STALE_S = 5.0  # a worker that has not reported for this long is left out (and forgotten)


def _now_iso() -> str:
    return iso_ms(time.time())


@bp.get("/health")
def health():
    """Liveness: the process answers. Always 200; says whether Redis answers too."""
    runtime = get_runtime()
    redis_ok = runtime.store.ping()
    body = {"status": "ok", "time": _now_iso(), "redis": "ok" if redis_ok else "down"}
    workers = []
    if redis_ok:
        with contextlib.suppress(redis.RedisError):
            workers = runtime.store.workers(stale_after_s=WORKER_STALE_S)
    body["workers"] = workers
    if runtime.worker is not None:
        body["worker"] = runtime.worker.status()  # this process's own, even while Redis is down
    elif workers:
        body["worker"] = workers[0]  # the active one when there is one (sorted first)
    if runtime.read_proxy is not None:
        # The read process this node forwards GET /api/metrics/* to (backend/web/readproxy.py).
        body["reads"] = {"process": runtime.reader_process.pid(), **runtime.read_proxy.status()}
        if runtime.handoff is not None:  # its connections handed over (backend/web/handoff.py)
            body["reads"].update(runtime.handoff.status())
    return jsonify(body)


@bp.get("/ready")
def ready():
    """Readiness: 200 only when Redis answers and a subscriber is running (here or elsewhere)."""
    runtime = get_runtime()
    redis_ok = runtime.store.ping()
    if runtime.worker is not None:
        subscriber_ok = bool(runtime.worker.subscribed)
    else:
        try:
            subscriber_ok = redis_ok and runtime.store.worker_alive()
        except Exception:
            subscriber_ok = False
    ok = redis_ok and subscriber_ok
    body = {
        "status": "ready" if ok else "unavailable",
        "time": _now_iso(),
        "redis": "ok" if redis_ok else "down",
        "subscriber": "ok" if subscriber_ok else "down",
    }
    return jsonify(body), 200 if ok else 503
