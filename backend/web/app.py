"""The application factory: configure, bind extensions, register blueprints. Nothing else.

Background tasks (the ingest worker and the tick) are started by the entry point
(`backend.cli.serve.start_background`), not here, so tests and tools can build an app without them.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from backend.config import SettingError, load, names
from backend.core import jsonutil
from backend.realtime.cluster_manager import ClusterRedisManager
from backend.storage.client import cluster_node_url, limiter_storage_uri
from backend.storage.store import Store
from backend.web.errors import register_error_handlers
from backend.web.extensions import limiter, socketio
from backend.web.jsonprovider import OrjsonProvider
from backend.web.runtime import EXTENSION_KEY, Runtime
from backend.web.security import register_security, socketio_origin_check


def create_app(config: dict | None = None) -> Flask:
    """`config` overrides settings (validated like the environment's) and adds other Flask keys."""
    app = Flask(__name__, static_folder=None)
    app.json = OrjsonProvider(app)
    app.config.from_mapping(load().replace(config or {}).as_dict())  # the environment is read here
    app.config.update({k: v for k, v in (config or {}).items() if k not in names()})  # TESTING etc.
    if not app.config["REDIS_URL"]:
        raise SettingError(
            "REDIS_URL is not set: point it at a Redis server, or use `pulseboard up`, "
            "which starts an embedded one"
        )

    register_error_handlers(app)
    if app.config["TRUSTED_PROXIES"]:
        n = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)

    # Counters live in Redis so every web node enforces one shared limit per client.
    # On a cluster limits needs its cluster storage (redis+cluster://node): a plain redis://
    # client of one node answers MOVED for the counters other masters own (HTTP 500).
    app.config.setdefault(
        "RATELIMIT_STORAGE_URI",
        limiter_storage_uri(app.config["REDIS_URL"])
        if app.config["REDIS_CLUSTER"]
        else app.config["REDIS_URL"],
    )
    app.config.setdefault("RATELIMIT_KEY_PREFIX", app.config["KEY_PREFIX"] + "ratelimit")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    # A moving window counts every hit of the last period exactly: a fixed window let twice the
    # limit through across a window boundary (199 of "100/second" in 0.41 s).
    app.config.setdefault("RATELIMIT_STRATEGY", app.config["RATE_LIMIT_STRATEGY"])
    # Not swallowed: with Redis down the limiter's ConnectionError reaches the one Redis-down
    # handler (backend/web/errors.py: 503 "redis unavailable", one log line per outage) instead of a
    # logged traceback per request; the write behind the limit would fail anyway.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", False)
    limiter.init_app(app)

    origins = app.config["CORS_ORIGINS"]
    # init_app merges its options into the ones kept from an earlier call (tests build many apps
    # in one process): a manager left there would outlive the app that made it.
    socketio.server_options.pop("client_manager", None)
    queue: dict = {"message_queue": None}
    if app.config["MESSAGE_QUEUE"]:
        if app.config["REDIS_CLUSTER"]:
            # Sharded Pub/Sub on one hash-tagged channel through the slot map (the stock
            # RedisManager would talk to the one node in REDIS_URL and broadcast every emit to
            # every node); same default channel name as Flask-SocketIO's.
            queue["client_manager"] = ClusterRedisManager(
                cluster_node_url(app.config["REDIS_URL"]), channel="flask-socketio"
            )
        else:
            queue["message_queue"] = app.config["REDIS_URL"]
    socketio.init_app(
        app,
        **queue,
        async_mode=app.config["ASYNC_MODE"],
        # None: same-origin only (Engine.IO's default); "*"; or the listed origins plus our own.
        cors_allowed_origins="*" if origins == ["*"] else socketio_origin_check(origins) if origins else None,
        json=jsonutil,
        serializer=jsonutil.JsonPacket,
        max_http_buffer_size=app.config["MAX_CONTENT_LENGTH"],
        # A client that stops reading still has kernel buffers to fill (megabytes: minutes at a
        # few hundred events/s), so bytes alone find it late; a missed PONG finds it within
        # interval + timeout whatever the rate.
        ping_interval=app.config["PING_INTERVAL_S"],
        ping_timeout=app.config["PING_TIMEOUT_S"],
    )
    register_security(app)  # after init_app: its nosniff wrapper covers Socket.IO's responses too
    app.extensions[EXTENSION_KEY] = Runtime(store=Store.from_config(app.config))

    from backend.realtime import sockets  # noqa: F401 - registers the Socket.IO handlers
    from backend.web.api import (
        alerts,
        dashboard,
        generator,
        health,
        ingest,
        metrics,
        openapi,
        rules,
        telemetry,
        top,
    )

    for blueprint in (
        health.bp,
        metrics.bp,
        top.bp,
        ingest.bp,
        alerts.bp,
        rules.bp,
        generator.bp,
        openapi.bp,
        telemetry.bp,
        dashboard.bp,
    ):
        app.register_blueprint(blueprint)
    return app
