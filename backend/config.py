"""Every setting, declared once: name, type, default, unit, bounds and doc in one line each.

`Settings` is a frozen dataclass whose fields are the settings: the field name is the environment
variable (and the Flask ``app.config`` key), the annotation its type, and `setting(...)` its
default, documentation, unit and bounds. Everything else is derived from it: the Flask config
(`Settings.as_dict`), the analytics settings (backend/analytics/settings.py), `.env.example`
(`render_env_example`, checked by tests/unit/test_config.py) and the CLI's defaults.

Importing this module reads nothing: no ``os.environ``, no `.env`. The environment is read by
`load()`, which the entry points call (the app factory, the `pulseboard` CLI, `python -m
generator.cli`, the WSGI module); code running inside one asks `current()`. This is the only module
that reads ``os.environ`` for settings. It stays cheap and free of Flask/Redis/eventlet, because
the CLI reads ``ASYNC_MODE`` from it before it monkey-patches anything.

Regenerate `.env.example` after changing a declaration: ``python -m backend.config > .env.example``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass

ENV_FILE_VARIABLE = "PULSEBOARD_ENV_FILE"  # where `.env` is (default: .env in the working directory)

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


class SettingError(ValueError):
    """A setting is missing or malformed: the CLI prints it as one line and exits 2."""


_section = ""  # the section `setting()` files new declarations under (see `section()`)


def section(title: str) -> None:
    """Start a section of `Settings` (a heading in `.env.example`)."""
    global _section
    _section = title


def setting(
    default,
    doc: str,
    *,
    unit: str = "",
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] = (),
):
    """A field of `Settings`: its default and what `Spec` holds besides name and type."""
    meta = {"doc": doc, "unit": unit, "min": min, "max": max, "choices": choices, "section": _section}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Spec:
    """One declared setting, as read back from `Settings` (for docs, validation and tools)."""

    name: str
    type: type  # str, int, float, bool or tuple (comma-separated strings)
    default: object
    doc: str
    unit: str
    min: float | None
    max: float | None
    choices: tuple[str, ...]
    section: str

    def coerce(self, value):
        """`value` (a raw environment string or an already typed value) as this setting's type,
        checked against its bounds; SettingError names the setting otherwise."""
        raw = value
        if self.type is tuple:
            value = _split(value) if isinstance(value, str) else tuple(str(item) for item in value)
        elif self.type is bool:
            value = _bool(value, self.name)
        elif self.type is int:
            value = _number(value, int, self.name, "an integer")
        elif self.type is float:
            value = _number(value, float, self.name, "a number")
        elif not isinstance(value, str):
            raise SettingError(f"{self.name} must be a string, got {raw!r}")
        if self.choices and value not in self.choices:
            raise SettingError(f"{self.name} must be one of {', '.join(self.choices)}, got {raw!r}")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise SettingError(f"{self.name} must be {self.bounds()}, got {raw!r}")
        return value

    def bounds(self) -> str:
        if self.min is not None and self.max is not None:
            return f"between {_text(self.min)} and {_text(self.max)}"
        return f"at least {_text(self.min)}" if self.min is not None else f"at most {_text(self.max)}"

    def env_text(self, value=None) -> str:
        """The value as it is written in an environment variable."""
        return _text(self.default if value is None else value)


def _split(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise SettingError(f"{name} must be true or false, got {value!r}")


def _number(value, kind: type, name: str, what: str):
    error = SettingError(f"{name} must be {what}, got {value!r}")
    if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
        raise error
    try:
        number = kind(value if isinstance(value, int | float) else str(value).strip())
    except (ValueError, OverflowError):
        raise error from None
    if not math.isfinite(number):  # nan would pass every bound
        raise error
    return number


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


KiB = 1024
MiB = 1024 * KiB
MODES = ("eventlet", "gevent", "threading")


@dataclass(frozen=True)
class Settings:
    """All settings. Field name = environment variable = Flask config key."""

    section("network")
    HOST: str = setting("127.0.0.1", "bind address; loopback unless you mean to expose it")
    PORT: int = setting(5000, "HTTP + Socket.IO port", min=1, max=65535)
    CORS_ORIGINS: tuple[str, ...] = setting(
        (),
        'empty: same-origin only; "*" or a comma-separated list of origins (the own origin is always allowed)',
    )
    ASYNC_MODE: str = setting("eventlet", "eventlet | gevent | threading", choices=MODES)
    # Lowered to the open-file limit, whose soft value is raised to the hard one at startup.
    HTTP_MAX_CONNECTIONS: int = setting(
        16384,
        "per eventlet node (idle websockets included); capped by the open-file limit",
        unit="connections",
        min=1,
    )
    HTTP_LISTEN_BACKLOG: int = setting(1024, "waiting for accept()", unit="connections", min=1)
    # Keep it above Socket.IO's 25 s ping interval.
    HTTP_IDLE_TIMEOUT_S: float = setting(
        75.0,
        "a connection may sit without starting a request; also the socket read/write timeout; 0: none",
        unit="s",
        min=0,
    )
    HTTP_HEADER_TIMEOUT_S: float = setting(
        10.0, "for a begun request's line and headers to arrive (slowloris); 0: none", unit="s", min=0
    )
    # process: a wide read is hundreds of ms of Python; out of the web process it cannot hold
    # deliveries back (backend/web/readproxy.py).
    READ_MODE: str = setting(
        "auto",
        "auto | process | inline: where serve/up answer GET /api/metrics/* (auto: a read process on >1 core)",
        choices=("auto", "process", "inline"),
    )
    READ_TIMEOUT_S: float = setting(
        60.0, "a read forwarded to the read process and not answered by then gets a 504", unit="s", min=0.1
    )
    # Under eventlet a read's connection is handed to the read process (backend/web/handoff.py).
    READ_MAX_CONNECTIONS: int = setting(
        256,
        "client connections the read process serves at once; past it, reads go through the web process",
        unit="connections",
        min=1,
    )

    section("redis")
    REDIS_URL: str = setting(
        "",
        "empty: `pulseboard up` starts an embedded Redis; e.g. redis://localhost:6379/0, rediss://:password@host:6380/0",
    )
    REDIS_CHANNEL: str = setting("metrics_channel", "Pub/Sub channel producers publish on")
    RECENT_KEY: str = setting("metrics:recent", "list of recent events, newest first")
    RECENT_MAX: int = setting(500, "kept in RECENT_KEY", unit="events", min=1)
    # Memory: rate x HISTORY_S x event size.
    HISTORY_S: int = setting(
        300, "of stored events kept for recent?after=SEQ resyncs (0: off)", unit="s", min=0
    )
    # Bounded in metrics by MAX_METRICS.
    RECENT_PER_METRIC: int = setting(
        100,
        "kept per metric beside RECENT_KEY (0: off), so recent?metric= answers for quiet metrics",
        unit="events",
        min=0,
    )
    KEY_PREFIX: str = setting("pulseboard:", "prefix of every other key")
    # A blocking pool: at most this many commands in flight at once. Each process (web node,
    # worker) has its own; keep their sum under Redis's maxclients (10000).
    REDIS_MAX_CONNECTIONS: int = setting(
        200,
        "per process (blocking pool); past it a request waits REDIS_POOL_TIMEOUT_S",
        unit="connections",
        min=1,
    )
    REDIS_POOL_TIMEOUT_S: float = setting(
        5.0, "a request waits for a free Redis connection, then 503 with Retry-After", unit="s", min=0
    )
    REDIS_RETRY_AFTER_S: float = setting(
        1.0, "Retry-After on a 503 for Redis down or the pool exhausted", unit="s", min=0
    )
    # Flask-SocketIO's Redis message queue, so several web nodes share emits (scale-out).
    MESSAGE_QUEUE: bool = setting(
        False, "true on every node when web nodes and workers run as separate processes"
    )
    REDIS_CLUSTER: bool = setting(
        False,
        "REDIS_URL names any node of a Redis Cluster: cluster clients everywhere, one hash slot per "
        "partition, sharded Pub/Sub for partition channels (docs/scaling.md)",
    )

    # pubsub: what is published while no worker is subscribed is lost. stream: the worker reads
    # with a consumer group and acknowledges each batch in the transaction that stores it, so events
    # wait out a worker or Redis restart (the latter needs persistence). In stream mode the worker
    # still listens on REDIS_CHANNEL too (best effort).
    section('ingest transport (docs/api.md, "Ingest transports")')
    INGEST_TRANSPORT: str = setting(
        "pubsub",
        "pubsub | stream (durable: Redis Stream + consumer group; also set it for producers)",
        choices=("pubsub", "stream"),
    )
    INGEST_STREAM: str = setting(
        "metrics_stream", 'stream key producers XADD {"event": <JSON>} to (stream transport)'
    )
    INGEST_STREAM_MAXLEN: int = setting(
        1_000_000,
        "XADD MAXLEN ~: unprocessed events kept while no worker reads (0: unbounded)",
        unit="entries",
        min=0,
    )
    INGEST_PARTITIONS: int = setting(
        1,
        "ingest partitions (stable hash of metric), each with its own lease, seq, channel NAME:{k} "
        "and stream NAME:{k}; worker processes share them out (docs/scaling.md). 1: today's names",
        unit="partitions",
        min=1,
        max=64,
    )

    section("aggregation")
    RETENTION_S: int = setting(3600, "of aggregate buckets kept; also the largest window", unit="s", min=1)
    FUTURE_TOLERANCE_S: int = setting(300, "events stamped further ahead are rejected", unit="s", min=0)
    DEAD_LETTER_MAX: int = setting(1000, "rejected items kept", min=1)
    # Per KEY_PREFIX. Bounds buckets, queries and the dashboard.
    MAX_METRICS: int = setting(
        1000,
        "distinct metric names ever accepted; events of further names are dead-lettered (too_many_metrics)",
        min=1,
    )

    section("worker")
    RUN_WORKER: bool = setting(True, "false on web-only nodes (see `pulseboard worker`)")
    # process: supervised child, so ingest has its own core and no web request can starve it.
    WORKER_MODE: str = setting(
        "auto",
        "auto | process | thread: where serve/up run the worker (auto: own process on >1 core)",
        choices=("auto", "process", "thread"),
    )
    LEASE_TTL_MS: int = setting(
        3000, "a dead worker's lease expires after this and a standby takes over", unit="ms", min=1
    )
    WORKER_STRATEGY: str = setting(
        "batch",
        "batch | per_event (the original design's strategy, for the benchmark only)",
        choices=("batch", "per_event"),
    )
    MAX_BATCH: int = setting(5000, "per pipelined write", unit="events", min=1)
    # Large batches absorb a burst (Redis's script merges a batch's updates); while clients watch
    # live, a backlog written as one large batch holds Redis and each client's frame for long.
    MAX_BATCH_LIVE: int = setting(
        1500,
        "per pipelined write while a web node has clients getting every event (0: MAX_BATCH always)",
        unit="events",
        min=0,
    )
    # Under load each batch would add to the same minute-hash fields as the one before; held
    # back and merged, they cost Redis one update per field in this long (ingest/batch.py).
    MINUTE_HOLD_MS: int = setting(
        250,
        "longest the current minute's bucket may trail its seconds under load (0: never held)",
        unit="ms",
        min=0,
    )
    # Redis disconnects a subscriber behind by its output limit.
    MAX_BATCH_BYTES: int = setting(
        4 * MiB,
        "of events per batch, about (Pub/Sub transport; bounds each fan-out message)",
        unit="bytes",
        min=1,
    )
    # A burst waits here instead of in Redis's output buffer for us (which disconnects at its limit).
    PUBSUB_BUFFER_BYTES: int = setting(
        256 * MiB,
        "of Pub/Sub messages read but not yet processed; past it new ones are dropped and counted",
        unit="bytes",
        min=1,
    )
    # Redis's client-output-buffer-limit model; time the node itself is behind does not count.
    SLOW_CLIENT_HARD_BYTES: int = setting(
        32 * MiB, "queued for one client: over this it is dropped at once", unit="bytes", min=1
    )
    SLOW_CLIENT_SOFT_BYTES: int = setting(
        64 * KiB, "queued for one client: over this while its socket takes nothing...", unit="bytes", min=1
    )
    SLOW_CLIENT_SOFT_S: float = setting(
        2.0, "...for this long, it is dropped (a node that is itself behind drops nobody)", unit="s", min=0
    )
    PING_INTERVAL_S: float = setting(3.0, "between Engine.IO PINGs to each client", unit="s", min=0.1)
    PING_TIMEOUT_S: float = setting(
        5.0, "a PONG may take: a stalled client is dropped within interval + timeout", unit="s", min=0.1
    )
    AGGREGATE_TICK_MS: int = setting(1000, "between `aggregate` pushes", unit="ms", min=1)
    RECONNECT_MIN_S: float = setting(0.1, "first reconnect backoff", unit="s", min=0)
    # A reconnect attempt is one cheap TCP connect, so poll for Redis about 4x a second.
    RECONNECT_MAX_S: float = setting(
        0.25, "backoff cap (low: Pub/Sub events published while unsubscribed are lost)", unit="s", min=0
    )

    section("ingest API")
    INGEST_API_KEY: str = setting(
        "",
        "empty: no key; set it to require X-API-Key on POST /api/ingest, /api/generator, /api/rules, alert acks",
    )
    INGEST_MAX_EVENTS: int = setting(1000, "per request", unit="events", min=1)
    MAX_CONTENT_LENGTH: int = setting(1 * MiB, "per request", unit="bytes", min=1)
    MAX_EVENT_BYTES: int = setting(64 * KiB, "per event", unit="bytes", min=1)
    # flask-limiter syntax.
    INGEST_RATE_LIMIT: str = setting(
        "100/second", "requests per client address on POST /api/ingest (empty: no limit)"
    )
    RATE_LIMIT_STRATEGY: str = setting(
        "moving-window",
        "moving-window (exact) | sliding-window-counter (approximate, cheaper) | fixed-window (2x bursts at window edges)",
        choices=("moving-window", "sliding-window-counter", "fixed-window"),
    )
    # Without it behind nginx every client shares the proxy's address (and its rate limit).
    TRUSTED_PROXIES: int = setting(
        0, "reverse proxies whose X-Forwarded-* headers to trust (1 behind nginx)", min=0
    )

    section("dashboard")
    FRONTEND_DIST: str = setting("", "empty: frontend/dist of this checkout")

    section("generator (pulseboard up / generate)")
    GENERATOR_RATE: float = setting(200.0, "simulated traffic", unit="events/s", min=0)
    GENERATOR_PROFILE: str = setting("mixed", "mixed | original")

    section("analytics: anomalies, rules, alerts, trends, top-N (docs/analytics.md)")
    ANALYTICS_ENABLED: bool = setting(
        True, "run the alert evaluator beside the worker (one acts: the lease holder)"
    )
    ANALYTICS_SETTLE_MS: int = setting(
        1000, "after a second ends before it is judged (late events)", unit="ms", min=0
    )
    ANALYTICS_WINDOW_S: int = setting(5, "of data behind every judged value", unit="s", min=1)
    ANALYTICS_HISTORY_S: int = setting(
        300, "of buckets replayed to rebuild baselines on activation", unit="s", min=0
    )
    ANOMALY_ENABLED: bool = setting(True, "anomaly detection (threshold rules work either way)")
    ANOMALY_WARNING_Z: float = setting(4.0, "|z-score| opening a warning", min=0)
    ANOMALY_CRITICAL_Z: float = setting(6.0, "|z-score| making it critical", min=0)
    ANOMALY_CLEAR_Z: float = setting(2.0, "|z-score| below which a value counts as normal", min=0)
    ANOMALY_SPAN_S: int = setting(300, "EWMA span of the baselines", unit="s", min=1)
    ANOMALY_MIN_HISTORY_S: int = setting(120, "of baseline before anomalies are judged", unit="s", min=0)
    ANOMALY_FOR_S: float = setting(2.0, "anomalous before an alert opens", unit="s", min=0)
    ANOMALY_MIN_EVENTS: int = setting(
        20, "per window needed to judge error rate and p95", unit="events", min=0
    )
    ANOMALY_MAX_OPEN_S: int = setting(
        1800, "after which a lasting anomaly is the new normal", unit="s", min=1
    )
    ANOMALY_TAGS: tuple[str, ...] = setting(
        ("endpoint",), "comma-separated tags whose values get error-rate and p95 watches of their own"
    )
    ALERT_CLEAR_S: float = setting(10.0, "normal before an alert closes", unit="s", min=0)
    ALERTS_KEEP_CLOSED: int = setting(500, "closed alerts kept", min=1)
    RULES_FILE: str = setting("", "YAML or JSON file of threshold rules (empty: none)")
    RULES_MAX: int = setting(200, "rules stored at most", min=1)
    # Each can be turned off on its own through the API.
    ALERT_DEFAULT_RULES: bool = setting(
        True, "built-in rules (error rate, p95 latency, no data); false turns them all off"
    )
    ALERT_WEBHOOK_URL: str = setting("", "POSTed on every alert open and close (empty: off)")
    ALERT_WEBHOOK_TIMEOUT_S: float = setting(3.0, "per attempt", unit="s", min=0)
    ALERT_WEBHOOK_ATTEMPTS: int = setting(4, "attempts per notification", min=1)
    ALERT_WEBHOOK_BACKOFF_S: float = setting(0.5, "before the first retry, doubling", unit="s", min=0)
    ALERT_WEBHOOK_BACKOFF_MAX_S: float = setting(5.0, "backoff cap", unit="s", min=0)
    ALERT_WEBHOOK_QUEUE: int = setting(100, "notifications waiting at most; the oldest is dropped", min=1)
    TOP_MAX_TAG_VALUES: int = setting(
        100, "distinct values per tag, metric and minute counted for top-N (0: top-N off)", min=0
    )
    TREND_MIN_CHANGE: float = setting(0.1, "fitted change over the window / mean rate to call a trend", min=0)

    section("observability")
    METRICS_PORT: int = setting(
        0,
        "`pulseboard worker` serves Prometheus /metrics here (0: off); web nodes serve /metrics on PORT",
        min=0,
        max=65535,
    )
    LOG_LEVEL: str = setting("INFO", "DEBUG | INFO | WARNING | ERROR")
    LOG_FORMAT: str = setting("text", "text | json", choices=("text", "json"))

    def __post_init__(self) -> None:
        for spec in specs():
            object.__setattr__(self, spec.name, spec.coerce(getattr(self, spec.name)))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """The settings `environ` sets; an unset one (or an empty number or switch) keeps its default."""
        given = {}
        for spec in specs():
            raw = environ.get(spec.name)
            if raw is not None and (raw.strip() or spec.type in (str, tuple)):
                given[spec.name] = raw
        return cls(**given)

    def replace(self, changes: Mapping) -> Settings:
        """A copy with the settings among `changes` replaced (other keys are ignored), validated."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if k in names()})

    def as_dict(self) -> dict:
        """The Flask config: every setting by name (lists where the setting is a list)."""
        return {
            spec.name: list(value) if isinstance(value := getattr(self, spec.name), tuple) else value
            for spec in specs()
        }


@functools.cache
def specs() -> tuple[Spec, ...]:
    hints = typing.get_type_hints(Settings)
    return tuple(
        Spec(
            name=f.name,
            type=tuple if typing.get_origin(hints[f.name]) is tuple else hints[f.name],
            default=f.default,
            **f.metadata,
        )
        for f in dataclasses.fields(Settings)
    )


@functools.cache
def names() -> frozenset[str]:
    return frozenset(spec.name for spec in specs())


def spec(name: str) -> Spec:
    return next(s for s in specs() if s.name == name)


DEFAULTS = Settings()  # the declared defaults, whatever the environment says

_current: Settings | None = None


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings. With no `environ`: the process environment over `.env` (the file named
    by PULSEBOARD_ENV_FILE, default ./.env; a real environment variable wins), and they become
    `current()`. Entry points call this before anything reads a setting."""
    global _current
    if environ is not None:
        return Settings.from_environ(environ)
    from dotenv import load_dotenv

    # override=False: a real environment variable always wins over the file.
    load_dotenv(os.environ.get(ENV_FILE_VARIABLE, ".env"), override=False)
    _current = Settings.from_environ(os.environ)
    return _current


def current() -> Settings:
    """The settings the entry point loaded (loading them now if no entry point did: tools, tests)."""
    return _current if _current is not None else load()


def render_env_example() -> str:
    """`.env.example`: every setting with its default, unit and doc, by section."""
    lines = [
        "# Pulseboard settings. Every one is optional: the defaults below are what you get with no .env.",
        "# Copy to .env to change them; real environment variables win over this file.",
        "# Generated from backend/config.py (python -m backend.config > .env.example): edit it there.",
    ]
    heading = None
    for s in specs():
        if s.section != heading:
            heading = s.section
            lines += ["", f"# --- {heading} ---"]
        assignment = f"{s.name}={s.env_text()}"
        notes = [f"[{s.unit}]"] if s.unit else []
        notes += [s.doc] if s.doc else []
        if s.max is not None or (s.min or 0) > 0:  # "at least 0" goes without saying
            notes.append(f"({s.bounds()})")
        lines.append(f"{assignment:<27} # {' '.join(notes)}" if notes else assignment)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_env_example())
