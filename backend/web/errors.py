"""One JSON error helper for every API error, and handlers that route HTTP errors through it."""

from __future__ import annotations

import logging
import threading
import time

import redis
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from backend.storage.store import PoolExhausted

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raise from a view to answer `{"error": message, **extra}` with `status`."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def error_response(status: int, message: str, *, headers: dict | None = None, **extra):
    body = {"error": message, "status": status, **extra}
    return jsonify(body), status, headers or {}


class RedisOutage:
    """Logs one line when requests start failing for want of Redis and one when it answers again,
    instead of a traceback per request. While down, a request that did not need Redis checks
    (at most once a second, one PING) whether it is back."""

    CHECK_EVERY_S = 1.0

    def __init__(self):
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.failed = 0
        self._checked = 0.0

    def failing(self, exc: Exception) -> None:
        with self._lock:
            self.failed += 1
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        log.warning("redis unavailable (%s: %s); answering 503 until it is back", type(exc).__name__, exc)

    def maybe_recovered(self, ping) -> None:
        if self.down_since is None:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._checked < self.CHECK_EVERY_S:
                return
            self._checked = now
        if not ping():
            return
        with self._lock:
            if self.down_since is None:
                return
            down_s, failed = now - self.down_since, self.failed
            self.down_since, self.failed = None, 0
        log.warning("redis reachable again after %.1fs; %d requests answered 503 meanwhile", down_s, failed)


def register_error_handlers(app: Flask) -> None:
    outage = app.extensions["redis_outage"] = RedisOutage()
    retry_after = str(max(1, round(app.config["REDIS_RETRY_AFTER_S"])))

    @app.errorhandler(PoolExhausted)
    def _pool_exhausted(exc: PoolExhausted):
        # Overload, not an outage: logged by the access log's 503s, not here (it can be thousands).
        return error_response(
            503,
            "server busy: no Redis connection free, retry later",
            headers={"Retry-After": retry_after},
            detail=str(exc),
        )

    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    def _redis_down(exc: redis.RedisError):
        outage.failing(exc)
        return error_response(
            503,
            "redis unavailable",
            headers={"Retry-After": retry_after},
            detail=f"{type(exc).__name__}: {exc}",
        )

    @app.after_request
    def _note_recovery(response):
        if outage.down_since is not None and response.status_code < 500:
            from backend.web.runtime import get_runtime

            outage.maybe_recovered(get_runtime().store.ping)
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.message, **exc.extra)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # The dashboard's HTML routes keep Werkzeug's pages; everything under /api speaks JSON.
        if not request.path.startswith("/api"):
            return exc
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"request body too large (limit {app.config['MAX_CONTENT_LENGTH']} bytes)"
        headers = {}
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(exc.code or 500, message, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal server error")
