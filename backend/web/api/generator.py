"""Start/stop and rate control of the built-in generator, shared by every open dashboard.

The API writes the desired state to a Redis hash and pings the generator's channel; the
generator applies it and reports back in its status hash, which the ticker broadcasts. The
protocol (fields, limits, messages) is generator.control's.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from backend.realtime.broadcast import generator_state
from backend.web.api.params import require_api_key
from backend.web.errors import ApiError
from backend.web.extensions import socketio
from backend.web.runtime import get_runtime
from generator.control import ControlError, ControlState, changes_from_request, parse_control, send_control

bp = Blueprint("generator", __name__, url_prefix="/api")


@bp.get("/generator")
def get_generator():
    return jsonify(generator_state(get_runtime().store))


@bp.post("/generator")
@require_api_key
def set_generator():
    try:
        changes = changes_from_request(request.get_json(silent=True))
    except ControlError as exc:
        raise ApiError(400, str(exc)) from None

    store = get_runtime().store
    state = generator_state(store)
    if not state["available"]:
        raise ApiError(
            409, "no generator is running (start one with `pulseboard up` or `pulseboard generate`)"
        )
    send_control(store.redis, store.keys, changes)
    # Answer with the state asked for; the generator's own report follows over the socket.
    asked, _ = parse_control(changes, ControlState(state["running"], state["rate"], state["profile"]))
    state.update(running=asked.running, rate=asked.rate, profile=asked.profile)
    # This node's clients hear it now; other nodes' tickers notice the change within a second.
    socketio.emit("generator", state, ignore_queue=True)
    return jsonify(state)
