"""POST /api/ingest: validate events and publish them on the channel, all or nothing.

A request is either accepted whole (202, every event published) or rejected whole (400 with
the reason for each bad item, nothing published), so a client can fix and resend without
working out which half got through. With INGEST_TRANSPORT=stream the events are XADDed to the
ingest stream instead, in one MULTI/EXEC: a 202 then means every event is queued durably.

With INGEST_PARTITIONS > 1 (or REDIS_CLUSTER) each event goes to its partition's channel or
stream (the metric's partition, as producer.partition_of), see _send for what all-or-nothing
means on a cluster.
"""

from __future__ import annotations

import time

import orjson
from flask import Blueprint, current_app, jsonify, request

from backend.core.events import Rejection, validate
from backend.ingest.stream import xadd_all
from backend.storage.keys import Partitioning
from backend.web.api.params import require_api_key
from backend.web.errors import ApiError
from backend.web.extensions import limiter
from backend.web.runtime import get_runtime

bp = Blueprint("ingest", __name__, url_prefix="/api")


def _ingest_limit() -> str:
    return current_app.config["INGEST_RATE_LIMIT"]


@bp.post("/ingest")
@limiter.limit(_ingest_limit, exempt_when=lambda: not current_app.config["INGEST_RATE_LIMIT"])
@require_api_key
def ingest():
    cfg = current_app.config
    if not request.mimetype or not (
        request.mimetype == "application/json" or request.mimetype.endswith("+json")
    ):
        raise ApiError(415, "Content-Type must be application/json")
    body = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise ApiError(400, "no events: send an event object or a non-empty list of events")
    if len(items) > cfg["INGEST_MAX_EVENTS"]:
        raise ApiError(413, f"{len(items)} events in one request; at most {cfg['INGEST_MAX_EVENTS']}")

    now = time.time()
    accepted, errors = [], []
    for index, item in enumerate(items):
        try:
            if len(orjson.dumps(item)) > cfg["MAX_EVENT_BYTES"]:
                raise Rejection("too_large", f"event is larger than {cfg['MAX_EVENT_BYTES']} bytes")
            accepted.append(
                validate(
                    item,
                    now=now,
                    retention_s=cfg["RETENTION_S"],
                    future_tolerance_s=cfg["FUTURE_TOLERANCE_S"],
                ).data
            )
        except Rejection as rej:
            errors.append({"index": index, **rej.as_dict()})
        except (TypeError, orjson.JSONEncodeError) as exc:
            errors.append({"index": index, "reason": "invalid_json", "detail": str(exc)})
    if errors:
        raise ApiError(
            400, f"{len(errors)} of {len(items)} events rejected; nothing was published", rejected=errors
        )

    _send(get_runtime().store.redis, cfg, accepted)
    return jsonify({"accepted": len(accepted), "ids": [e["id"] for e in accepted]}), 202


def _send(client, cfg, accepted: list[dict]) -> None:
    """Route each event to its partition's channel or stream (Partitioning.of(metric)).

    One Redis: one round trip for the whole request; with the stream transport one MULTI/EXEC
    across every partition's stream (all or nothing). A cluster cannot run one transaction over
    several slots, so there each partition's events go in a MULTI of their own (one per slot,
    all or nothing per partition): a Redis error then answers 503 although the partitions sent
    before it may have queued theirs, and a client that resends repeats those (same ids).
    Pub/Sub on a cluster SPUBLISHes on the partition's shard channel (a cluster pipeline refuses
    PUBLISH; SPUBLISH goes to the slot's node only)."""
    parts = Partitioning.from_config(cfg)
    groups: dict[int, list[bytes]] = {}
    for event in accepted:
        groups.setdefault(parts.of(event["metric"]), []).append(orjson.dumps(event))
    if cfg["INGEST_TRANSPORT"] == "stream":
        maxlen = cfg["INGEST_STREAM_MAXLEN"]
        if parts.cluster:
            for k, payloads in groups.items():
                pipe = client.pipeline(transaction=True)
                xadd_all(pipe, parts.stream(cfg["INGEST_STREAM"], k), payloads, maxlen)
                pipe.execute()
            return
        pipe = client.pipeline(transaction=True)
        for k, payloads in groups.items():
            xadd_all(pipe, parts.stream(cfg["INGEST_STREAM"], k), payloads, maxlen)
    else:
        pipe = client.pipeline(transaction=False)
        publish = pipe.spublish if parts.cluster else pipe.publish
        for k, payloads in groups.items():
            channel = parts.channel(cfg["REDIS_CHANNEL"], k)
            for payload in payloads:
                publish(channel, payload)
    pipe.execute()
