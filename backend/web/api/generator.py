"""Start/stop and rate control of the built-in generator, shared by every open dashboard.

The API writes the desired state to a Redis hash and pings the generator's channel; the
generator applies it and reports back in its status hash, which the ticker broadcasts.
"""

from __future__ import annotations

import orjson
from flask import Blueprint, jsonify, request

from backend.realtime.broadcast import generator_state
from backend.web.api.params import require_api_key
from backend.web.errors import ApiError
from backend.web.extensions import socketio
from backend.web.runtime import get_runtime

bp = Blueprint("generator", __name__, url_prefix="/api")

MAX_RATE = 100_000  # events per second
PROFILES = ("mixed", "original")


@bp.get("/generator")
def get_generator():
    return jsonify(generator_state(get_runtime().store))


@bp.post("/generator")
@require_api_key
def set_generator():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, 'body must be a JSON object like {"running": true, "rate": 200}')
    unknown = set(data) - {"running", "rate", "profile"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    changes: dict[str, str] = {}
    if "running" in data:
        if not isinstance(data["running"], bool):
            raise ApiError(400, "running must be true or false")
        changes["running"] = "1" if data["running"] else "0"
    if "rate" in data:
        rate = data["rate"]
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= MAX_RATE:
            raise ApiError(400, f"rate must be a number of events per second in (0, {MAX_RATE}]")
        changes["rate"] = repr(float(rate))
    if "profile" in data:
        if data["profile"] not in PROFILES:
            raise ApiError(400, f"profile must be one of {', '.join(PROFILES)}")
        changes["profile"] = data["profile"]
    if not changes:
        raise ApiError(400, "nothing to change: give running, rate or profile")

    store = get_runtime().store
    state = generator_state(store)
    if not state["available"]:
        raise ApiError(
            409, "no generator is running (start one with `pulseboard up` or `pulseboard generate`)"
        )
    pipe = store.redis.pipeline(transaction=False)
    pipe.hset(store.keys.generator_control, mapping=changes)
    pipe.publish(store.keys.generator_events, orjson.dumps({"control": changes}))
    pipe.execute()
    # Answer with the state asked for; the generator's own report follows over the socket.
    state.update({"running": changes.get("running", "1" if state["running"] else "0") == "1"})
    if "rate" in changes:
        state["rate"] = float(changes["rate"])
    if "profile" in changes:
        state["profile"] = changes["profile"]
    # This node's clients hear it now; other nodes' tickers notice the change within a second.
    socketio.emit("generator", state, ignore_queue=True)
    return jsonify(state)
