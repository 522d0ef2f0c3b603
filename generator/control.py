"""The generator control protocol: how the dashboard steers a generator and hears back from it.

Both sides use this module: the generator process (:mod:`generator.publisher`) and the web API
(``backend/web/api/generator.py``). The Redis key names live in :class:`backend.storage.keys.Keys`.

* Each generator has a name (``--name``); the dashboard's, which ``pulseboard up`` starts, is
  DASHBOARD_GENERATOR and uses ``Keys.generator_control`` / ``generator_status``, the hashes the
  API edits and shows. Any other name uses hashes of its own (``Keys.generator_control_of``), so a
  second generator never retunes the dashboard's. Below, "the control/status hash" is the own one.
* The control hash holds the desired state as strings: ``running`` ("1"/"0"), ``rate``
  (events/s, ``repr`` of a float) and ``profile`` (:data:`generator.traffic.PROFILES`).
  :meth:`ControlState.as_fields` encodes it, :func:`parse_control` decodes it.
* On start the generator writes its own arguments there (running=1, rate, profile): the command
  line that started it wins over whatever a previous run or the dashboard left there, so
  ``pulseboard generate --rate 50`` does what it says.
* About once a second the generator reads the control hash and applies it; invalid fields are
  logged and ignored. If the hash is gone (e.g. Redis restarted empty), it writes its current
  state back so the dashboard has something to edit.
* The API (:func:`changes_from_request`, :func:`send_control`) validates a JSON body strictly, writes
  the fields it changes to the dashboard generator's control hash and publishes
  ``{"control": {...fields}}`` on ``Keys.generator_events``.
* About once a second the generator refreshes its status hash (running, rate, profile, published,
  pid, updated, plus state, incident, reconnects, unheard, transport, backlog, dropped; see
  :func:`status_fields`) with a TTL of a few seconds, so the hash vanishing means the generator is
  gone. Whenever running/rate/profile or the incident changes it also publishes the status as JSON
  on ``Keys.generator_events``: ``{"type": "status", "running": bool, ...}``.
* On a clean stop it deletes the status hash and publishes a last status with state "stopped".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from backend.storage.keys import Keys
from generator.traffic import PROFILES
from producer import is_cluster

MAX_RATE = 100_000.0  # events/s: well past what one process can publish; stops a dashboard typo at 1e9

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ControlError(ValueError):
    """A control value or request that cannot be applied; ``str()`` says why, fit to show a user."""


def check_rate(value: object) -> float:
    """`value` as a rate in events/s, if it is a number in (0, MAX_RATE] (a bool is not)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
        if math.isfinite(rate) and 0 < rate <= MAX_RATE:
            return rate
    raise ControlError(f"rate must be a number of events/s in (0, {MAX_RATE:g}], not {value!r}")


def parse_rate(text: str) -> float:
    """A rate written as text (a control hash field, a command-line argument)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    try:
        return check_rate(value)
    except ControlError:
        raise ControlError(f"rate must be a number of events/s in (0, {MAX_RATE:g}], not {text!r}") from None


def check_profile(value: object) -> str:
    if value in PROFILES:
        return str(value)
    raise ControlError(f"profile must be one of {', '.join(PROFILES)}, not {value!r}")


def parse_running(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ControlError(f"running must be 1 or 0, not {text!r}")


# How each control hash field is decoded from its string.
_FIELD_PARSERS: dict[str, Callable[[str], Any]] = {
    "running": parse_running,
    "rate": parse_rate,
    "profile": check_profile,
}


@dataclass(frozen=True)
class ControlState:
    """What the control hash asks of a generator."""

    running: bool
    rate: float
    profile: str

    def as_fields(self) -> dict[str, str]:
        """The control hash fields for this state (what :func:`parse_control` reads back)."""
        return {"running": "1" if self.running else "0", "rate": repr(self.rate), "profile": self.profile}


def parse_control(fields: Mapping[str, str], current: ControlState) -> tuple[ControlState, list[str]]:
    """Apply the control hash to `current`. Missing or invalid fields keep their current value.

    Returns the new state and a list of human-readable problems (one per invalid field).
    """
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for name, parse in _FIELD_PARSERS.items():
        raw = fields.get(name)
        if raw is None:
            continue
        try:
            changes[name] = parse(raw)
        except ControlError as exc:
            problems.append(str(exc))
    return replace(current, **changes), problems


def changes_from_request(body: object) -> dict[str, str]:
    """The control hash fields a JSON request body such as ``{"running": true, "rate": 200}`` asks
    to change. JSON types are required (``"running": "yes"`` is refused); raises ControlError."""
    if not isinstance(body, dict):
        raise ControlError('body must be a JSON object like {"running": true, "rate": 200}')
    unknown = set(body) - set(_FIELD_PARSERS)
    if unknown:
        raise ControlError(f"unknown field(s): {', '.join(sorted(unknown))}")
    changes: dict[str, str] = {}
    if "running" in body:
        if not isinstance(body["running"], bool):
            raise ControlError(f"running must be true or false, not {body['running']!r}")
        changes["running"] = "1" if body["running"] else "0"
    if "rate" in body:
        changes["rate"] = repr(check_rate(body["rate"]))
    if "profile" in body:
        changes["profile"] = check_profile(body["profile"])
    if not changes:
        raise ControlError("nothing to change: give running, rate or profile")
    return changes


def send_control(client, keys: Keys, changes: Mapping[str, str]) -> None:
    """The API's side of a change: write `changes` to the dashboard generator's control hash and
    announce them on the events channel, in one round trip (two on a cluster: see _announce)."""
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.generator_control, mapping=dict(changes))
    _announce(client, pipe, keys.generator_events, orjson.dumps({"control": dict(changes)}))


def _announce(client, pipe, channel: str, message: bytes) -> None:
    """Execute `pipe` with a PUBLISH of `message` after what it holds. A redis-py cluster
    pipeline refuses PUBLISH (redis-py 8.1), so on a cluster the PUBLISH follows the pipeline
    (still after its writes; classic Pub/Sub is broadcast to every node of the cluster)."""
    if is_cluster(client):
        pipe.execute()
        client.publish(channel, message)
        return
    pipe.publish(channel, message)
    pipe.execute()


def status_fields(status: Mapping[str, Any]) -> dict[str, str]:
    """The status hash fields for a status message (see ``Generator.status``)."""
    incident = status["incident"]
    return {
        "running": "1" if status["running"] else "0",
        "rate": repr(status["rate"]),
        "profile": status["profile"],
        "published": str(status["published"]),
        "pid": str(status["pid"]),
        "updated": repr(status["updated"]),
        "state": status["state"],
        "incident": f"{incident['kind']}:{incident['endpoint']}" if incident else "",
        "reconnects": str(status["reconnects"]),
        "unheard": str(status["unheard"]),
        "transport": status["transport"],
        "backlog": str(status["backlog"]),
        "dropped": str(status["dropped"]),
    }


class ControlChannel:
    """One generator's end of the protocol: its control hash, status hash and the events channel.

    `client` is a redis-py client with ``decode_responses=True``; Redis errors propagate.
    """

    def __init__(self, client, keys: Keys, name: str | None):
        self.client = client
        self.control_key = keys.generator_control_of(name)
        self.status_key = keys.generator_status_of(name)
        self.events = keys.generator_events
        self._announced: tuple | None = None

    def read(self) -> dict[str, str]:
        """The control hash; empty if it is gone."""
        return self.client.hgetall(self.control_key)

    def write(self, state: ControlState) -> None:
        self.client.hset(self.control_key, mapping=state.as_fields())

    def report(self, status: Mapping[str, Any], ttl_s: int) -> None:
        """Refresh the status hash (expiring in `ttl_s`), and publish the status if running, rate,
        profile or the incident changed since the last report."""
        fields = status_fields(status)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.status_key, mapping=fields)
        pipe.expire(self.status_key, ttl_s)
        announce = (status["running"], status["rate"], status["profile"], fields["incident"])
        if announce != self._announced:
            _announce(self.client, pipe, self.events, orjson.dumps(status))
        else:
            pipe.execute()
        self._announced = announce

    def report_stop(self, status: Mapping[str, Any]) -> None:
        """Remove the status hash and publish the last status."""
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.status_key)
        _announce(self.client, pipe, self.events, orjson.dumps(status))
