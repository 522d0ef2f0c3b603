"""All configuration, read once from the environment (and an optional `.env`).

This is the only module that reads ``os.environ``. Every setting has a safe default so that
``pulseboard up`` works with no `.env` at all; `.env.example` lists them with their units.
Importing this module must stay cheap and free of Flask/Redis/eventlet, because the CLI reads
``ASYNC_MODE`` from it before it monkey-patches anything.
"""

from __future__ import annotations

import os

from dotenv import load_dotenv

# override=False: a real environment variable always wins over the file.
load_dotenv(os.environ.get("PULSEBOARD_ENV_FILE", ".env"), override=False)


class SettingError(ValueError):
    """A setting is missing or malformed: the CLI prints it as one line and exits 2."""


def _str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _parsed(name: str, default, parse, what: str):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingError(f"{name} must be {what}, got {raw!r}") from exc


def _int(name: str, default: int) -> int:
    return _parsed(name, default, int, "an integer")


def _float(name: str, default: float) -> float:
    return _parsed(name, default, float, "a number")


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _list(name: str, default: str) -> list[str]:
    return [item.strip() for item in _str(name, default).split(",") if item.strip()]


class Config:
    """Flask config object. Upper-case attributes become ``app.config`` keys."""

    # --- network ---------------------------------------------------------------------------
    HOST = _str("HOST", "127.0.0.1")  # bind address; loopback unless told otherwise
    PORT = _int("PORT", 5000)
    # Empty: same-origin only. "*" allows all (not recommended). Comma-separated list otherwise.
    CORS_ORIGINS = _list("CORS_ORIGINS", "")
    ASYNC_MODE = _str("ASYNC_MODE", "eventlet")  # eventlet | gevent | threading
    # Connections one eventlet node serves at once (idle websockets included); lowered to the
    # open-file limit, whose soft value is raised to the hard one at startup. connections
    HTTP_MAX_CONNECTIONS = _int("HTTP_MAX_CONNECTIONS", 16384)
    HTTP_LISTEN_BACKLOG = _int("HTTP_LISTEN_BACKLOG", 1024)  # connections waiting for accept()
    # A connection that starts no request for this long is closed; also the per-read/-write socket
    # timeout (keep it above Socket.IO's 25 s ping interval). s; 0: none
    HTTP_IDLE_TIMEOUT_S = _float("HTTP_IDLE_TIMEOUT_S", 75.0)
    # A request's line and headers must arrive within this once it has begun (slowloris). s; 0: none
    HTTP_HEADER_TIMEOUT_S = _float("HTTP_HEADER_TIMEOUT_S", 10.0)

    # --- redis -------------------------------------------------------------------------------
    # Unset: `pulseboard up` starts an embedded Redis and sets this for its children.
    REDIS_URL = _str("REDIS_URL", "")
    REDIS_CHANNEL = _str("REDIS_CHANNEL", "metrics_channel")
    RECENT_KEY = _str("RECENT_KEY", "metrics:recent")
    RECENT_MAX = _int("RECENT_MAX", 500)  # events in the global recent list
    # events kept per metric beside the global list (0: off); bounded in metrics by MAX_METRICS
    RECENT_PER_METRIC = _int("RECENT_PER_METRIC", 100)
    # seconds of stored events kept for `recent?after=SEQ` resyncs (0: off; then after= is served
    # from the recent list only). Memory: rate x HISTORY_S x event size.
    HISTORY_S = _int("HISTORY_S", 300)
    KEY_PREFIX = _str("KEY_PREFIX", "pulseboard:")
    # Redis connections per process (a blocking pool): at most this many commands in flight at once;
    # a request finding all busy waits REDIS_POOL_TIMEOUT_S, then answers 503 with Retry-After.
    # Each process (web node, worker) has its own pool; keep their sum under Redis's maxclients (10000).
    REDIS_MAX_CONNECTIONS = _int("REDIS_MAX_CONNECTIONS", 200)  # connections
    REDIS_POOL_TIMEOUT_S = _float("REDIS_POOL_TIMEOUT_S", 5.0)  # s a request waits for a free connection
    # Retry-After (s) on a 503 for Redis down or the pool exhausted
    REDIS_RETRY_AFTER_S = _float("REDIS_RETRY_AFTER_S", 1.0)
    # Use Flask-SocketIO's Redis message queue so several web nodes share emits (scale-out).
    MESSAGE_QUEUE = _bool("MESSAGE_QUEUE", False)
    # REDIS_URL names any node of a Redis Cluster (docs/scaling.md): every process uses cluster
    # clients, each partition's keys share one hash slot, partition channels use sharded Pub/Sub.
    REDIS_CLUSTER = _bool("REDIS_CLUSTER", False)

    # --- ingest transport (docs/api.md, "Ingest transports") -----------------------------------
    # pubsub: producers PUBLISH on REDIS_CHANNEL; what is published while no worker is subscribed
    # is lost. stream: producers XADD to INGEST_STREAM and the worker reads it with a consumer group,
    # acknowledging each batch in the transaction that stores it, so events wait out a worker or
    # Redis restart (the latter needs Redis persistence). In stream mode the worker still listens
    # on REDIS_CHANNEL too (best effort), so publishing producers keep working.
    INGEST_TRANSPORT = _str("INGEST_TRANSPORT", "pubsub")  # pubsub | stream
    INGEST_STREAM = _str("INGEST_STREAM", "metrics_stream")  # stream key producers XADD to
    # Producers XADD with MAXLEN ~ this: the most unprocessed events the stream keeps while no worker
    # reads it (the durability horizon: older ones are dropped). entries; 0: unbounded
    INGEST_STREAM_MAXLEN = _int("INGEST_STREAM_MAXLEN", 1_000_000)
    # Events are split by a stable hash of `metric` (producer/partition_of) into this many
    # partitions, each with its own lease, seq, channel `REDIS_CHANNEL:{k}` and stream
    # `INGEST_STREAM:{k}`; `pulseboard worker` processes share them out (docs/scaling.md).
    # 1: today's single channel, stream and keys. partitions; 1..64
    INGEST_PARTITIONS = _int("INGEST_PARTITIONS", 1)

    # --- aggregation ------------------------------------------------------------------------
    RETENTION_S = _int("RETENTION_S", 3600)  # seconds of per-second buckets kept
    FUTURE_TOLERANCE_S = _int("FUTURE_TOLERANCE_S", 300)  # events further ahead are rejected
    DEAD_LETTER_MAX = _int("DEAD_LETTER_MAX", 1000)  # rejected items kept
    # distinct metric names accepted, ever (per KEY_PREFIX); events of further names are
    # dead-lettered as too_many_metrics. Bounds buckets, queries and the dashboard.
    MAX_METRICS = _int("MAX_METRICS", 1000)

    # --- worker ------------------------------------------------------------------------------
    RUN_WORKER = _bool("RUN_WORKER", True)  # all-in-one: the web process also runs the worker
    # Where `serve`/`up` run that worker: "process" (a child process of its own, supervised, so
    # ingest has its own core and no web request can starve it), "thread" (inside the web
    # process) or "auto" (process when the machine has more than one core).
    WORKER_MODE = _str("WORKER_MODE", "auto")
    MAX_BATCH = _int("MAX_BATCH", 5000)  # events per pipelined write
    # bytes of events per batch, about (Pub/Sub transport): bounds the write and the fan-out
    # message every web node reads (Redis disconnects a subscriber behind by its output limit)
    MAX_BATCH_BYTES = _int("MAX_BATCH_BYTES", 4 * 1024 * 1024)
    # Pub/Sub messages the worker has read off the socket but not processed yet, at most (bytes):
    # a burst waits here instead of in Redis's output buffer for us (which disconnects at its
    # limit); past it, events are dropped and counted (pulseboard_pubsub_dropped_total).
    PUBSUB_BUFFER_BYTES = _int("PUBSUB_BUFFER_BYTES", 256 * 1024 * 1024)
    # Clients that stopped reading are dropped, so one stuck client cannot make a node buffer
    # without bound (Redis's client-output-buffer-limit model): bytes queued for a client over
    # the hard limit, or over the soft limit for SLOW_CLIENT_SOFT_S while its socket takes no
    # more (time the node itself is behind does not count).
    SLOW_CLIENT_HARD_BYTES = _int("SLOW_CLIENT_HARD_BYTES", 32 * 1024 * 1024)  # bytes
    SLOW_CLIENT_SOFT_BYTES = _int("SLOW_CLIENT_SOFT_BYTES", 64 * 1024)  # bytes
    SLOW_CLIENT_SOFT_S = _float("SLOW_CLIENT_SOFT_S", 2.0)  # seconds
    # Engine.IO heartbeat: the server PINGs every PING_INTERVAL_S and drops a client whose PONG
    # has not come PING_TIMEOUT_S later (a stalled or vanished client: gone within their sum).
    PING_INTERVAL_S = _float("PING_INTERVAL_S", 3.0)  # seconds
    PING_TIMEOUT_S = _float("PING_TIMEOUT_S", 5.0)  # seconds
    AGGREGATE_TICK_MS = _int("AGGREGATE_TICK_MS", 1000)  # how often `aggregate` is pushed
    RECONNECT_MIN_S = _float("RECONNECT_MIN_S", 0.1)  # first backoff after Redis drops us
    # backoff cap: low, because what Pub/Sub producers publish while the worker is not subscribed
    # is lost; a reconnect attempt is one cheap TCP connect, so poll for Redis about 4x a second
    RECONNECT_MAX_S = _float("RECONNECT_MAX_S", 0.25)
    LEASE_TTL_MS = _int("LEASE_TTL_MS", 3000)  # a dead worker's lease expires after this; standby takes over
    # "batch" (default) or "per_event": the original design's strategy (one message, its own
    # Redis round trips and one emit at a time), kept so the benchmark can measure the ratio.
    WORKER_STRATEGY = _str("WORKER_STRATEGY", "batch")

    # --- ingest API --------------------------------------------------------------------------
    INGEST_API_KEY = _str("INGEST_API_KEY", "")  # empty: no key required
    INGEST_MAX_EVENTS = _int("INGEST_MAX_EVENTS", 1000)  # events per request
    MAX_CONTENT_LENGTH = _int("MAX_CONTENT_LENGTH", 1024 * 1024)  # bytes per request
    # Requests per client address on POST /api/ingest (flask-limiter syntax; empty: no limit).
    INGEST_RATE_LIMIT = _str("INGEST_RATE_LIMIT", "100/second")
    # moving-window: exact over any period (one Redis list entry per hit within it);
    # sliding-window-counter: approximate, two counters per client; fixed-window: allows 2x bursts.
    RATE_LIMIT_STRATEGY = _str("RATE_LIMIT_STRATEGY", "moving-window")
    # Reverse proxies in front of us whose X-Forwarded-For/-Proto/-Host to trust (0: none). Set it
    # behind nginx, or every client shares the proxy's address (and its rate limit).
    TRUSTED_PROXIES = _int("TRUSTED_PROXIES", 0)
    MAX_EVENT_BYTES = _int("MAX_EVENT_BYTES", 64 * 1024)  # bytes per event

    # --- static dashboard ----------------------------------------------------------------------
    FRONTEND_DIST = _str("FRONTEND_DIST", "")  # empty: <repo>/frontend/dist

    # --- generator ------------------------------------------------------------------------------
    GENERATOR_RATE = _float("GENERATOR_RATE", 200.0)  # events per second
    GENERATOR_PROFILE = _str("GENERATOR_PROFILE", "mixed")

    # --- analytics: anomalies, rules, alerts, trends, top-N (docs/analytics.md) -----------------
    ANALYTICS_ENABLED = _bool("ANALYTICS_ENABLED", True)  # run the evaluator where the worker runs
    ANALYTICS_SETTLE_MS = _int("ANALYTICS_SETTLE_MS", 1000)  # ms after a second ends before it is judged
    ANALYTICS_WINDOW_S = _int("ANALYTICS_WINDOW_S", 5)  # s of data behind every judged value
    ANALYTICS_HISTORY_S = _int("ANALYTICS_HISTORY_S", 300)  # s of buckets replayed on activation
    ANOMALY_ENABLED = _bool("ANOMALY_ENABLED", True)  # anomaly detection (rules work either way)
    ANOMALY_WARNING_Z = _float("ANOMALY_WARNING_Z", 4.0)  # |z| opening a warning
    ANOMALY_CRITICAL_Z = _float("ANOMALY_CRITICAL_Z", 6.0)  # |z| making it critical
    ANOMALY_CLEAR_Z = _float("ANOMALY_CLEAR_Z", 2.0)  # |z| below which a value counts as normal
    ANOMALY_SPAN_S = _int("ANOMALY_SPAN_S", 300)  # s, EWMA span of the baselines
    ANOMALY_MIN_HISTORY_S = _int("ANOMALY_MIN_HISTORY_S", 120)  # s of baseline before judging
    ANOMALY_FOR_S = _float("ANOMALY_FOR_S", 2)  # s anomalous before an alert opens
    ANOMALY_MIN_EVENTS = _int("ANOMALY_MIN_EVENTS", 20)  # events per window to judge error rate, p95
    ANOMALY_MAX_OPEN_S = _int("ANOMALY_MAX_OPEN_S", 1800)  # s after which a lasting anomaly is normal
    # tags whose values get error-rate and p95 watches of their own (comma-separated; empty: none)
    ANOMALY_TAGS = _list("ANOMALY_TAGS", "endpoint")
    ALERT_CLEAR_S = _float("ALERT_CLEAR_S", 10)  # s normal before an alert closes
    ALERTS_KEEP_CLOSED = _int("ALERTS_KEEP_CLOSED", 500)  # closed alerts kept
    RULES_FILE = _str("RULES_FILE", "")  # YAML/JSON rules loaded on activation (empty: none)
    RULES_MAX = _int("RULES_MAX", 200)  # rules stored at most
    # built-in rules (error rate, p95 latency, no data) active from the first minute; each can be
    # turned off on its own through the API, this turns them all off
    ALERT_DEFAULT_RULES = _bool("ALERT_DEFAULT_RULES", True)
    ALERT_WEBHOOK_URL = _str("ALERT_WEBHOOK_URL", "")  # POSTed on alert open and close (empty: off)
    ALERT_WEBHOOK_TIMEOUT_S = _float("ALERT_WEBHOOK_TIMEOUT_S", 3.0)  # s per attempt
    ALERT_WEBHOOK_ATTEMPTS = _int("ALERT_WEBHOOK_ATTEMPTS", 4)  # attempts per notification
    ALERT_WEBHOOK_BACKOFF_S = _float("ALERT_WEBHOOK_BACKOFF_S", 0.5)  # s before the first retry, doubling
    ALERT_WEBHOOK_BACKOFF_MAX_S = _float("ALERT_WEBHOOK_BACKOFF_MAX_S", 5.0)  # s, backoff cap
    ALERT_WEBHOOK_QUEUE = _int("ALERT_WEBHOOK_QUEUE", 100)  # notifications waiting; oldest dropped
    # distinct values per tag, metric and minute with counters of their own (0: top-N off)
    TOP_MAX_TAG_VALUES = _int("TOP_MAX_TAG_VALUES", 100)
    TREND_MIN_CHANGE = _float("TREND_MIN_CHANGE", 0.1)  # fitted change / mean rate to call a trend

    # `pulseboard worker` serves Prometheus /metrics on this port (0: off). Web nodes serve /metrics
    # on their own HTTP port.
    METRICS_PORT = _int("METRICS_PORT", 0)

    LOG_LEVEL = _str("LOG_LEVEL", "INFO")
    LOG_FORMAT = _str("LOG_FORMAT", "text")  # text | json

    @classmethod
    def as_dict(cls) -> dict:
        return {k: getattr(cls, k) for k in dir(cls) if k.isupper()}
