"""Socket.IO event handlers for the default namespace."""

from __future__ import annotations

import logging

import redis
from flask import current_app, request
from flask_socketio import emit, join_room, leave_room, rooms

from backend import telemetry
from backend.realtime import status
from backend.realtime.broadcast import BATCH_ROOM, LEGACY_ROOM, WINDOW_ROOM_PREFIX, window_room
from backend.web.extensions import socketio
from backend.web.runtime import get_runtime

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 60


@socketio.on("connect")
def on_connect(auth=None):
    telemetry.CONNECTED_CLIENTS.inc()
    join_room(LEGACY_ROOM)
    # `partitions`: INGEST_PARTITIONS; event n of partition k has seq n * P + k (docs/api.md)
    hello = {"msg": "connected", "sid": request.sid, "modes": ["event", "batch"]}
    partitions = len(get_runtime().store.parts)
    if partitions > 1:
        hello["partitions"] = partitions
    emit("connected", hello)
    if (state := status.current(current_app)) is not None:
        emit("status", state)


@socketio.on("disconnect")
def on_disconnect(reason=None):
    telemetry.CONNECTED_CLIENTS.dec()


@socketio.on("subscribe")
def on_subscribe(data=None):
    """`{"mode": "batch"|"event", "window": seconds}` -> ack `{"ok": true, ...}` or `{"error": ...}`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return {"ok": False, "error": "subscribe expects an object {mode, window}"}
    mode = data.get("mode", "batch")
    if mode not in ("batch", "event"):
        return {"ok": False, "error": "mode must be 'batch' or 'event'"}
    window = data.get("window", DEFAULT_WINDOW_S)
    retention = current_app.config["RETENTION_S"]
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= retention:
        return {"ok": False, "error": f"window must be an integer number of seconds in 1..{retention}"}

    for room in rooms():
        if isinstance(room, str) and room.startswith(WINDOW_ROOM_PREFIX):
            leave_room(room)
    if mode == "batch":
        leave_room(LEGACY_ROOM)
        join_room(BATCH_ROOM)
        join_room(window_room(window))
        # Send the first aggregate now rather than making the client wait for the next tick.
        try:
            emit("aggregate", get_runtime().store.aggregate(window))
        except redis.RedisError as exc:
            log.warning("could not send the first aggregate: %s", exc)
    else:
        leave_room(BATCH_ROOM)
        join_room(LEGACY_ROOM)
    return {"ok": True, "mode": mode, "window": window}
