"""Publish simulated traffic to Redis Pub/Sub at a steady rate, steerable from the dashboard.

The policy -- how many events are due (:class:`Pacer`), how long to back off
(:func:`backoff_delay`), how to read the control hash (:func:`parse_control`) -- is pure and
unit-tested; :class:`Generator` is the thin loop that applies it to a Redis connection.

Control protocol (the web API is the other side):

* On start the generator HSETs ``Keys.generator_control`` with its own arguments (running=1,
  rate, profile): the command line that started it wins over whatever a previous run or the
  dashboard left there, so ``pulseboard generate --rate 50`` does what it says.
* About once a second it HGETALLs that hash and applies ``running`` ("1"/"0"), ``rate`` (events/s)
  and ``profile``. Invalid fields are logged and ignored. If the hash is gone (e.g. Redis restarted
  empty), it writes its current state back so the dashboard has something to edit.
* About once a second it refreshes ``Keys.generator_status`` (running, rate, profile, published,
  pid, updated, plus state, incident, reconnects) with a 5 s TTL, so the hash vanishing means the
  generator is gone. Whenever running/rate/profile or the incident changes it also publishes the
  status as JSON on ``Keys.generator_events``: ``{"type": "status", "running": bool, ...}``.
* On a clean stop it deletes the status hash and publishes a last status with state "stopped".
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from backend.config import Config
from backend.keys import Keys
from generator.traffic import DAY_S, DEFAULT_BURST_EVERY_S, PROFILES, TrafficModel

log = logging.getLogger(__name__)

MAX_RATE = 100_000.0  # well past what one process can publish; stops a dashboard typo at 1e9
TICK_S = 0.01  # batch interval at high rates: ~100 pipelines/s keeps per-event overhead low
MAX_BATCH = 1000  # events per pipeline, bounds memory and the time a stop waits for a batch
MAX_LAG_S = 1.0  # further behind schedule than this, skip the backlog instead of bursting it
CONTROL_INTERVAL_S = 1.0
STATUS_TTL_S = 5
BEHIND_WARN_EVERY_S = 30.0  # a rate we can't reach would otherwise warn every second

# What "Redis went away" looks like through redis-py (its TimeoutError is not the builtin one).
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)


# -- pure policy -----------------------------------------------------------------------------------


class Pacer:
    """Deadline-based rate control: event k of the current schedule is due at anchor + k/rate.

    Counting against a fixed anchor rather than sleeping 1/rate after each send means sleep
    overshoot and publish time never accumulate into drift. When the sender falls further than
    `max_lag_s` behind (a stall, a slow machine, a rate above what we can reach) the backlog is
    skipped rather than sent in one burst, so consumers never see a catch-up spike.
    """

    def __init__(self, rate: float, now: float, max_batch: int = MAX_BATCH, max_lag_s: float = MAX_LAG_S):
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        self.rate = float(rate)
        self.max_batch = max_batch
        self.max_lag_s = max_lag_s
        self.anchor = now
        self.sent = 0  # since anchor
        self.skipped = 0  # lifetime events dropped by lag resets

    def due(self, now: float) -> int:
        """How many events to send now (at most max_batch; 0 if not yet due)."""
        # The epsilon absorbs float error, so waking exactly at next_due_at() always finds the
        # event due instead of spinning one more time on 0.99999 of it.
        owed = math.floor((now - self.anchor) * self.rate + 1e-6) - self.sent
        if owed > self.rate * self.max_lag_s + self.max_batch:
            self.skipped += owed
            self.reset(now)
            return 0
        return max(0, min(owed, self.max_batch))

    def record(self, n: int) -> None:
        self.sent += n

    def next_due_at(self) -> float:
        """Monotonic time at which the next event falls due."""
        return self.anchor + (self.sent + 1) / self.rate

    def set_rate(self, rate: float, now: float) -> None:
        # Re-anchor so the new rate applies from now on, not retroactively since the start.
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        self.rate = float(rate)
        self.reset(now)

    def reset(self, now: float) -> None:
        """Start a fresh schedule at `now` (after a pause, reconnect or rate change)."""
        self.anchor = now
        self.sent = 0


def backoff_delay(attempt: int, min_s: float, max_s: float) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0-based): doubling, capped at max_s."""
    return min(max_s, min_s * 2.0 ** min(max(attempt, 0), 60))


def sleep_until(now: float, next_due: float, last_batch: float, tick_s: float) -> float:
    """When the loop should wake to send next.

    If events are already owed, at once. Otherwise at the next due time, but never sooner than
    one tick after the last batch: at high rates that gathers ~rate*tick events per pipeline
    instead of paying a round trip per event.
    """
    if next_due <= now:
        return now
    return max(next_due, last_batch + tick_s)


@dataclass(frozen=True)
class ControlState:
    running: bool
    rate: float
    profile: str

    def as_fields(self) -> dict[str, str]:
        return {"running": "1" if self.running else "0", "rate": repr(self.rate), "profile": self.profile}


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_control(fields: Mapping[str, str], current: ControlState) -> tuple[ControlState, list[str]]:
    """Apply the control hash to `current`. Missing or invalid fields keep their current value.

    Returns the new state and a list of human-readable problems (one per invalid field).
    """
    running, rate, profile = current.running, current.rate, current.profile
    problems: list[str] = []
    raw = fields.get("running")
    if raw is not None:
        value = raw.strip().lower()
        if value in _TRUE:
            running = True
        elif value in _FALSE:
            running = False
        else:
            problems.append(f"running={raw!r} is not 1 or 0")
    raw = fields.get("rate")
    if raw is not None:
        try:
            value_f = float(raw)
        except ValueError:
            value_f = math.nan
        if math.isfinite(value_f) and 0 < value_f <= MAX_RATE:
            rate = value_f
        else:
            problems.append(f"rate={raw!r} is not a number in (0, {MAX_RATE:g}]")
    raw = fields.get("profile")
    if raw is not None:
        if raw in PROFILES:
            profile = raw
        else:
            problems.append(f"profile={raw!r} is not one of {', '.join(PROFILES)}")
    return ControlState(running, rate, profile), problems


@dataclass(frozen=True)
class Summary:
    published: int
    elapsed_s: float
    reconnects: int
    lost: int  # events in batches whose fate is unknown because Redis dropped us mid-pipeline
    skipped: int  # events the pacer skipped because we fell behind schedule
    target_rate: float
    unheard: int = 0  # published while nobody subscribed (PUBLISH returned 0): Pub/Sub dropped them

    @property
    def rate(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        extra = "".join(
            f", {n} {what}"
            for n, what in (
                (self.lost, "lost in failed batches"),
                (self.skipped, "skipped"),
                (self.unheard, "published with no subscriber"),
            )
            if n
        )
        return (
            f"generator: published {self.published} events in {self.elapsed_s:.1f}s "
            f"({self.rate:.1f}/s, target {self.target_rate:g}/s), {self.reconnects} reconnects{extra}"
        )


# -- the Redis-touching loop -----------------------------------------------------------------------


class Generator:
    """Publishes a TrafficModel's events to `channel` at `rate` events/s until stopped.

    Runs in the calling thread: ``run(stop_event, duration_s)``; set `stop_event` from another
    thread (or a signal handler's thread) to stop after the current batch. Counters (`published`,
    `reconnects`) and `state` may be read from other threads while it runs.
    """

    def __init__(
        self,
        redis_url: str,
        channel: str | None = None,
        keys: Keys | None = None,
        rate: float | None = None,
        profile: str | None = None,
        seed: int | None = None,
        burst_every_s: float = DEFAULT_BURST_EVERY_S,
        *,
        day_s: float = DAY_S,
        tick_s: float = TICK_S,
        max_batch: int = MAX_BATCH,
        control_interval_s: float = CONTROL_INTERVAL_S,
        status_ttl_s: int = STATUS_TTL_S,
        backoff_min_s: float | None = None,
        backoff_max_s: float | None = None,
        socket_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ):
        if not redis_url:
            raise ValueError("set REDIS_URL or use `pulseboard up`")
        rate = Config.GENERATOR_RATE if rate is None else float(rate)
        profile = profile or Config.GENERATOR_PROFILE
        if not (math.isfinite(rate) and 0 < rate <= MAX_RATE):
            raise ValueError(f"rate must be in (0, {MAX_RATE:g}] events/s, got {rate!r}")
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
        self.redis_url = redis_url
        self.channel = channel or Config.REDIS_CHANNEL
        self.keys = keys or Keys.from_config(Config.as_dict())
        self.state = ControlState(running=True, rate=rate, profile=profile)
        # A fresh id prefix per run even with a seed: consumers may drop ids they have seen.
        self.model = TrafficModel(
            profile, seed=seed, burst_every_s=burst_every_s, day_s=day_s, id_prefix=f"{secrets.token_hex(4)}-"
        )
        self.tick_s = tick_s
        self.max_batch = max_batch
        self.control_interval_s = control_interval_s
        self.status_ttl_s = status_ttl_s
        self.backoff_min_s = Config.RECONNECT_MIN_S if backoff_min_s is None else backoff_min_s
        self.backoff_max_s = Config.RECONNECT_MAX_S if backoff_max_s is None else backoff_max_s
        self._clock = clock
        self._wallclock = wallclock
        # No redis-py retries: a retried PUBLISH pipeline could publish a batch twice, and our own
        # loop already retries with backoff and tells the operator about it.
        self.client = redis.Redis.from_url(
            redis_url,
            decode_responses=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self.published = 0
        self.reconnects = 0
        self.lost = 0
        self.unheard = 0
        self.connected = False
        self._pid = os.getpid()
        self._control_seeded = False
        self._announced: tuple | None = None
        self._last_incident = None
        self._last_wall: float | None = None
        self._bad_control: frozenset[str] = frozenset()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- main loop ---------------------------------------------------------------------------------

    def run(
        self,
        stop_event: threading.Event | None = None,
        duration_s: float = 0.0,
        max_events: int | None = None,
    ) -> Summary:
        """Publish until `stop_event` is set, `duration_s` passes (0: forever) or `max_events` are out."""
        stop = stop_event or threading.Event()
        clock = self._clock
        start = clock()
        end = start + duration_s if duration_s and duration_s > 0 else math.inf
        pacer = Pacer(self.state.rate, start, max_batch=self.max_batch)
        next_control = start
        last_batch = -math.inf
        skipped_seen, behind_warned = 0, -math.inf
        log.info(
            "generator publishing %s traffic at %g events/s on %r (%s)",
            self.state.profile,
            self.state.rate,
            self.channel,
            self.redis_url,
        )
        try:
            while not stop.is_set():
                now = clock()
                if now >= end or (max_events is not None and self.published >= max_events):
                    break
                try:
                    if not self._control_seeded:
                        self._seed_control()
                    if now >= next_control:
                        self._poll_control(pacer, now)
                        self._refresh_status()
                        next_control = now + self.control_interval_s
                    if self.state.running:
                        n = pacer.due(now)
                        if pacer.skipped != skipped_seen:
                            skipped_seen = pacer.skipped
                            if now - behind_warned >= BEHIND_WARN_EVERY_S:
                                behind_warned = now
                                log.warning(
                                    "falling behind %g events/s; skipped %d events so far",
                                    pacer.rate,
                                    pacer.skipped,
                                )
                        if max_events is not None:
                            n = min(n, max_events - self.published)
                        if n > 0:
                            self._publish_batch(n, pacer.rate)
                            pacer.record(n)
                            last_batch = now
                            if self._incident_changed():
                                self._refresh_status()
                except REDIS_DOWN as exc:
                    self.connected = False
                    if not self._reconnect(stop, exc):
                        break
                    now = clock()
                    pacer.reset(now)  # events that fell due during the outage are not made up
                    self._last_wall = None  # nor back-dated into it
                    next_control = now
                    continue
                now = clock()
                wake = min(end, next_control)
                if self.state.running:
                    wake = min(wake, sleep_until(now, pacer.next_due_at(), last_batch, self.tick_s))
                if wake > now:
                    stop.wait(wake - now)
        finally:
            elapsed = clock() - start
            self._announce_stop()
        summary = Summary(
            self.published, elapsed, self.reconnects, self.lost, pacer.skipped, self.state.rate, self.unheard
        )
        log.debug("%s", summary.line())
        return summary

    # -- pieces --------------------------------------------------------------------------------------

    def _publish_batch(self, n: int, rate: float) -> None:
        wall = self._wallclock()
        # Spread timestamps over the interval the batch stands for, so per-second charts are
        # smooth instead of showing 100 spikes a second.
        t0 = self._last_wall if self._last_wall is not None else wall - n / rate
        t0 = min(wall, max(t0, wall - 1.0))
        events = self.model.events(n, t0, wall)
        pipe = self.client.pipeline(transaction=False)
        publish = pipe.publish
        channel = self.channel
        dumps = orjson.dumps
        for event in events:
            publish(channel, dumps(event))
        try:
            receivers = pipe.execute()
        except REDIS_DOWN:
            # Some of the batch may have reached Redis before it went away; we can't tell which.
            self.lost += n
            raise
        self._last_wall = wall
        self.published += n
        # PUBLISH answers how many subscribers got the message; 0 means it is gone for good.
        self.unheard += receivers.count(0)
        self.connected = True

    def _seed_control(self) -> None:
        self.client.hset(self.keys.generator_control, mapping=self.state.as_fields())
        self._control_seeded = True
        self.connected = True

    def _poll_control(self, pacer: Pacer, now: float) -> None:
        try:
            fields = self.client.hgetall(self.keys.generator_control)
        except redis.ResponseError as exc:
            # e.g. WRONGTYPE: someone put a non-hash there. Keep running as we are.
            self._warn_control_once(f"cannot read {self.keys.generator_control}: {exc}")
            return
        self.connected = True
        if not fields:
            # Redis lost it (restart without persistence) or someone deleted it: put ours back
            # so the dashboard still has a state to show and edit.
            self.client.hset(self.keys.generator_control, mapping=self.state.as_fields())
            return
        new, problems = parse_control(fields, self.state)
        self._warn_control_once(*problems)
        self._apply(new, pacer, now)

    def _warn_control_once(self, *problems: str) -> None:
        # The control hash is re-read every second; say what's wrong with it once, not each time.
        bad = frozenset(problems)
        if bad - self._bad_control:
            log.warning("ignoring invalid generator control: %s", "; ".join(sorted(bad - self._bad_control)))
        self._bad_control = bad

    def _apply(self, new: ControlState, pacer: Pacer, now: float) -> None:
        old = self.state
        if new == old:
            return
        if new.rate != old.rate:
            pacer.set_rate(new.rate, now)
        elif new.running and not old.running:
            pacer.reset(now)  # resume at the rate, without the backlog of the pause
        if new.profile != old.profile:
            self.model.profile = new.profile
        if new.running != old.running:
            self._last_wall = None
        self.state = new
        log.info(
            "generator control: %s, %g events/s, profile %s",
            "running" if new.running else "paused",
            new.rate,
            new.profile,
        )

    def _incident_changed(self) -> bool:
        incident = self.model.incident
        if incident is self._last_incident:
            return False
        if incident is not None:
            log.info("%s", incident.describe())
        else:
            log.info("incident over")
        self._last_incident = incident
        return True

    def status(self, state: str | None = None) -> dict:
        """The status as published on generator_events (JSON types, not hash strings)."""
        incident = self.model.incident
        return {
            "type": "status",
            "state": state or ("running" if self.state.running else "paused"),
            "running": self.state.running and state != "stopped",
            "rate": self.state.rate,
            "profile": self.state.profile,
            "published": self.published,
            "reconnects": self.reconnects,
            "unheard": self.unheard,
            "pid": self._pid,
            "updated": self._wallclock(),
            "incident": incident.as_dict() if incident is not None else None,
        }

    def _refresh_status(self) -> None:
        status = self.status()
        incident = status["incident"]
        fields = {
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
        }
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.keys.generator_status, mapping=fields)
        pipe.expire(self.keys.generator_status, self.status_ttl_s)
        announce = (status["running"], status["rate"], status["profile"], fields["incident"])
        if announce != self._announced:
            pipe.publish(self.keys.generator_events, orjson.dumps(status))
        pipe.execute()
        self._announced = announce

    def _announce_stop(self) -> None:
        if not self.connected:
            return  # Redis is down: the status hash expires on its own within its TTL
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(self.keys.generator_status)
            pipe.publish(self.keys.generator_events, orjson.dumps(self.status("stopped")))
            pipe.execute()
        except (*REDIS_DOWN, redis.RedisError) as exc:
            log.warning("could not announce generator stop: %s", exc)

    def _reconnect(self, stop: threading.Event, exc: BaseException) -> bool:
        """Wait for Redis with capped exponential backoff. False if stopped while waiting."""
        started = self._clock()
        attempt = 0
        while True:
            delay = backoff_delay(attempt, self.backoff_min_s, self.backoff_max_s)
            log.warning("redis unavailable (%s); reconnect attempt %d in %.2fs", exc, attempt + 1, delay)
            if stop.wait(delay):
                return False
            try:
                self.client.ping()
            except REDIS_DOWN as again:
                exc = again
                attempt += 1
                continue
            self.reconnects += 1
            self.connected = True
            log.warning(
                "reconnected to redis after %.1fs (%d attempts)", self._clock() - started, attempt + 1
            )
            return True
