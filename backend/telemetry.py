"""Prometheus metrics. Updated per batch or per connection, never per event, to stay off the hot path.

A web process that supervises its worker process (backend/cli/serve.py) shares prometheus_client's
multiprocess mode with it (PROMETHEUS_MULTIPROC_DIR, set before this module is first imported),
so the node's one /metrics shows ingest, fan-out and alerting together: counters summed over the
processes, gauges as each says (`multiprocess_mode`).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import Gauge as _Gauge
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def Gauge(*args, mode: str = "livesum", **kwargs):
    """A gauge that also aggregates across processes: `mode` says how (livesum, livemax, ...)."""
    return _Gauge(*args, multiprocess_mode=mode, **kwargs)


EVENTS_RECEIVED = Counter("pulseboard_events_received_total", "Messages read from the channel or the stream")
EVENTS_ACCEPTED = Counter("pulseboard_events_accepted_total", "Events validated, stored and broadcast")
EVENTS_REJECTED = Counter("pulseboard_events_rejected_total", "Messages dead-lettered", ["reason"])
BATCH_SIZE = Histogram(
    "pulseboard_batch_size",
    "Messages per worker batch",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
BROADCAST_LATENCY = Histogram(
    "pulseboard_broadcast_latency_seconds",
    "From reading a batch's first message to handing the batch to Socket.IO",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
CONNECTED_CLIENTS = Gauge("pulseboard_connected_clients", "Socket.IO clients connected to this process")
FANOUT_FRAMES_WAITING = Gauge(
    "pulseboard_fanout_frames_waiting",
    "Batches queued for this process's websocket clients and not yet written (long reads yield to them)",
)
FANOUT_DEFERRED_WRITES = Counter(
    "pulseboard_fanout_deferred_writes_total",
    "Batches a client's socket could not take at once (its kernel buffer was full): queued to its writer",
)
REDIS_RECONNECTS = Counter(
    "pulseboard_redis_reconnects_total", "Times the worker resubscribed after losing Redis"
)
SUBSCRIBER_LAG = Gauge(
    "pulseboard_subscriber_lag_seconds",
    "Age of the newest event in the last batch when it was processed (event ts to now)",
    mode="livemax",
)
# Per partition (INGEST_PARTITIONS), reported by the process holding it.
STREAM_PENDING = Gauge(
    "pulseboard_stream_pending_entries",
    "Stream entries delivered to the worker and not yet acknowledged (INGEST_TRANSPORT=stream)",
    ["partition"],
)
STREAM_LAG = Gauge(
    "pulseboard_stream_lag_entries",
    "Stream entries not yet read by the worker's consumer group (INGEST_TRANSPORT=stream)",
    ["partition"],
)
STREAM_LENGTH = Gauge(
    "pulseboard_stream_length_entries",
    "Entries in the ingest stream (INGEST_TRANSPORT=stream)",
    ["partition"],
)
PARTITIONS_HELD = Gauge(
    "pulseboard_partitions_held", "Ingest partitions this worker process consumes (INGEST_PARTITIONS)"
)

# Alerting (docs/analytics.md). Set by the evaluator, so only the process whose worker holds the
# lease reports open alerts; the others report 0 (sum or max over instances).
ALERTS_OPEN = Gauge(
    "pulseboard_alerts_open",
    "Alerts open now, as this process's evaluator sees them (state nodata: open, metric silent)",
    ["severity", "state"],
)
ALERT_EVALUATOR_ACTIVE = Gauge("pulseboard_alert_evaluator_active", "1 while this process's evaluator acts")
ALERT_EVALUATIONS = Counter(
    "pulseboard_alert_evaluations_total", "Seconds of data judged live by the evaluator"
)
ALERT_CHANGES = Counter("pulseboard_alert_changes_total", "Alert changes published", ["event"])
ALERT_WEBHOOK = Counter(
    "pulseboard_alert_webhook_notifications_total",
    "Webhook notifications by outcome: sent, failed (given up after every attempt), dropped (queue full)",
    ["outcome"],
)
for _severity in ("warning", "critical"):
    for _state in ("open", "nodata"):
        ALERTS_OPEN.labels(_severity, _state).set(0)
for _outcome in ("sent", "failed", "dropped"):
    ALERT_WEBHOOK.labels(_outcome)


def render() -> tuple[bytes, str]:
    if os.environ.get(MULTIPROC_DIR_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


PUBSUB_BUFFERED = Gauge(
    "pulseboard_pubsub_buffered_bytes", "Pub/Sub messages read off the socket, waiting for the worker (bytes)"
)
PUBSUB_DROPPED = Counter(
    "pulseboard_pubsub_dropped_total", "Pub/Sub messages dropped because the worker's buffer was full"
)
PUBSUB_DISCONNECTS = Counter(
    "pulseboard_pubsub_disconnects_total",
    "Times Redis closed the worker's subscription (e.g. its output buffer limit): messages in flight are lost",
)
