"""Publish simulated traffic to Redis at a steady rate, steerable from the dashboard.

Two transports (INGEST_TRANSPORT, or ``--transport``): ``pubsub`` PUBLISHes each event on the
channel, best effort, as the original design did; ``stream`` XADDs each tick's events to the ingest
stream in one MULTI/EXEC. In stream mode a Redis outage costs nothing the generator can hold: it
keeps producing into a bounded backlog (BACKLOG_S of events, oldest dropped and counted) and
sends it after reconnecting. Each batch's transaction also records how many events the run has
sent, so after a connection drops mid-batch the generator can tell whether that batch went
through, and neither loses nor duplicates it.

The policy -- how many events are due (:class:`Pacer`), how long to back off
(:func:`backoff_delay`), how to read the control hash (:func:`parse_control`) -- is pure and
unit-tested; :class:`Generator` is the thin loop that applies it to a Redis connection.

Control protocol (the web API is the other side):

* Each generator has a name (``--name``); the dashboard's, which ``pulseboard up`` starts, is
  DASHBOARD_GENERATOR and uses ``Keys.generator_control`` / ``generator_status``, the hashes the
  API edits and shows. Any other name uses hashes of its own (``Keys.generator_control_of``), so a
  second generator never retunes the dashboard's. Below, "the control/status hash" is the own one.
* On start the generator HSETs ``Keys.generator_control`` with its own arguments (running=1,
  rate, profile): the command line that started it wins over whatever a previous run or the
  dashboard left there, so ``pulseboard generate --rate 50`` does what it says.
* About once a second it HGETALLs that hash and applies ``running`` ("1"/"0"), ``rate`` (events/s)
  and ``profile``. Invalid fields are logged and ignored. If the hash is gone (e.g. Redis restarted
  empty), it writes its current state back so the dashboard has something to edit.
* About once a second it refreshes ``Keys.generator_status`` (running, rate, profile, published,
  pid, updated, plus state, incident, reconnects, unheard, transport, backlog, dropped) with a 5 s
  TTL, so the hash vanishing means the generator is gone. Whenever running/rate/profile or the incident changes it also publishes the
  status as JSON on ``Keys.generator_events``: ``{"type": "status", "running": bool, ...}``.
* On a clean stop it deletes the status hash and publishes a last status with state "stopped".
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from backend.config import Config
from backend.ingest.stream import check_transport, xadd_all
from backend.storage.keys import DASHBOARD_GENERATOR, Keys
from generator.traffic import DAY_S, DEFAULT_BURST_EVERY_S, PROFILES, TrafficModel

log = logging.getLogger(__name__)

MAX_RATE = 100_000.0  # well past what one process can publish; stops a dashboard typo at 1e9
TICK_S = 0.01  # batch interval at high rates: ~100 pipelines/s keeps per-event overhead low
MAX_BATCH = 1000  # events per pipeline, bounds memory and the time a stop waits for a batch
MAX_LAG_S = 1.0  # further behind schedule than this, skip the backlog instead of bursting it
CONTROL_INTERVAL_S = 1.0
STATUS_TTL_S = 5
BEHIND_WARN_EVERY_S = 30.0  # a rate we can't reach would otherwise warn every second
BACKLOG_S = 10.0  # stream transport: seconds of events kept while Redis is unreachable
BACKLOG_MAX_EVENTS = 200_000  # ... but never more than this many (memory)
ACCRUE_EVERY_S = 0.05  # stream transport: how often events are produced into the backlog during an outage
SENT_MARKER_TTL_S = 3600

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

    def owed(self, now: float) -> int:
        """Events due by `now` and not sent, uncapped (what an outage did not send)."""
        return max(0, math.floor((now - self.anchor) * self.rate + 1e-6) - self.sent)

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
    not_sent: int = 0  # pubsub: fell due while Redis was down, never produced (not made up later)
    dropped: int = 0  # stream: produced during an outage but pushed out of the full backlog
    unsent: int = 0  # stream: still in the backlog when the generator stopped (Redis down)

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
                (self.not_sent, "not sent while Redis was down"),
                (self.dropped, "dropped from the full backlog"),
                (self.unsent, "unsent at exit"),
            )
            if n
        )
        return (
            f"generator: published {self.published} events in {self.elapsed_s:.1f}s "
            f"({self.rate:.1f}/s, target {self.target_rate:g}/s), {self.reconnects} reconnects{extra}"
        )


# -- the Redis-touching loop -----------------------------------------------------------------------


class Generator:
    """Publishes a TrafficModel's events to `channel` (or, with transport="stream", to `stream`)
    at `rate` events/s until stopped.

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
        transport: str | None = None,
        stream: str | None = None,
        stream_maxlen: int | None = None,
        backlog_s: float = BACKLOG_S,
        name: str | None = None,
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
        self.transport = check_transport(transport or Config.INGEST_TRANSPORT)
        self.stream = stream or Config.INGEST_STREAM
        self.stream_maxlen = Config.INGEST_STREAM_MAXLEN if stream_maxlen is None else stream_maxlen
        self.keys = keys or Keys.from_config(Config.as_dict())
        # Which control and status hashes are ours: None or DASHBOARD_GENERATOR are the dashboard's.
        self.name = name
        self._control_key = self.keys.generator_control_of(name)
        self._status_key = self.keys.generator_status_of(name)
        self.state = ControlState(running=True, rate=rate, profile=profile)
        # A fresh id prefix per run even with a seed: consumers may drop ids they have seen.
        run_id = secrets.token_hex(4)
        self.model = TrafficModel(
            profile, seed=seed, burst_every_s=burst_every_s, day_s=day_s, id_prefix=f"{run_id}-"
        )
        self._sent_key = self.keys.generator_sent(run_id)
        self.backlog: deque[bytes] = deque()  # stream: produced, not yet confirmed in Redis
        self.backlog_s = backlog_s
        self._inflight = 0  # stream: events of the batch whose EXEC may or may not have run
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
        self.not_sent = 0
        self.dropped = 0
        self._dropped_warned = 0
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
        durable = self.transport == "stream"
        log.info(
            "generator publishing %s traffic at %g events/s %s (%s)",
            self.state.profile,
            self.state.rate,
            f"to stream {self.stream!r}" if durable else f"on {self.channel!r}",
            self.redis_url,
        )

        def due(now: float) -> int:
            n = pacer.due(now)
            if max_events is not None:
                n = min(n, max_events - self._produced())
            return n

        def accrue() -> None:
            # Stream transport, Redis down: the events still happen; keep them for later.
            if self.state.running:
                while (n := due(clock())) > 0:
                    self._accrue(n, pacer.rate)
                    pacer.record(n)

        try:
            while not stop.is_set():
                now = clock()
                if now >= end or (
                    max_events is not None and self._produced() >= max_events and not self.backlog
                ):
                    break
                try:
                    if not self._control_seeded:
                        self._seed_control()
                    if now >= next_control:
                        self._poll_control(pacer, now)
                        self._refresh_status()
                        next_control = now + self.control_interval_s
                    if self.state.running:
                        n = due(now)
                        if pacer.skipped != skipped_seen:
                            skipped_seen = pacer.skipped
                            if now - behind_warned >= BEHIND_WARN_EVERY_S:
                                behind_warned = now
                                log.warning(
                                    "falling behind %g events/s; skipped %d events so far",
                                    pacer.rate,
                                    pacer.skipped,
                                )
                        if n > 0:
                            if durable:
                                self._accrue(n, pacer.rate)
                                pacer.record(n)
                                self._flush_backlog()
                            else:
                                self._publish_batch(n, pacer.rate)
                                pacer.record(n)
                            last_batch = now
                            if self._incident_changed():
                                self._refresh_status()
                    if self.backlog:  # left over from an outage, or produced while paused
                        self._flush_backlog()
                except REDIS_DOWN as exc:
                    self.connected = False
                    if not self._reconnect(stop, exc, on_wait=accrue if durable else None):
                        break
                    now = clock()
                    if not durable:
                        if self.state.running:
                            self.not_sent += pacer.owed(now)
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
            if self.backlog:
                self._last_flush()
            self._announce_stop()
        summary = Summary(
            self.published,
            elapsed,
            self.reconnects,
            self.lost,
            pacer.skipped,
            self.state.rate,
            self.unheard,
            not_sent=self.not_sent,
            dropped=self.dropped,
            unsent=len(self.backlog),
        )
        log.debug("%s", summary.line())
        return summary

    def _produced(self) -> int:
        """Events made so far: in stream mode those sent, waiting in the backlog or dropped from it."""
        return self.published + len(self.backlog) + self.dropped

    # -- stream transport ----------------------------------------------------------------------------

    def _accrue(self, n: int, rate: float) -> None:
        """Produce `n` events into the backlog; past its bound the oldest are dropped and counted."""
        self.backlog.extend(map(orjson.dumps, self._make_events(n, rate)))
        cap = max(self.max_batch, min(BACKLOG_MAX_EVENTS, int(rate * self.backlog_s)))
        overflow = len(self.backlog) - cap
        if overflow > 0:
            # The oldest go, except a batch in flight: that one may already be in Redis.
            inflight = [self.backlog.popleft() for _ in range(self._inflight)]
            for _ in range(overflow):
                self.backlog.popleft()
            self.backlog.extendleft(reversed(inflight))
            self.dropped += overflow
            if self.dropped >= 2 * self._dropped_warned:  # 1, 2, 4, ... not once per tick
                self._dropped_warned = self.dropped
                log.warning("backlog full (%d events): dropped %d oldest so far", cap, self.dropped)

    def _flush_backlog(self) -> None:
        """XADD the backlog, oldest first, max_batch events per MULTI/EXEC."""
        while self.backlog:
            chunk = list(itertools.islice(self.backlog, self.max_batch))
            pipe = self.client.pipeline(transaction=True)
            xadd_all(pipe, self.stream, chunk, self.stream_maxlen)
            pipe.set(self._sent_key, self.published + len(chunk), ex=SENT_MARKER_TTL_S)
            self._inflight = len(chunk)
            pipe.execute()  # REDIS_DOWN: the chunk stays in the backlog, _inflight says it may be in
            self._confirm(len(chunk))

    def _confirm(self, n: int) -> None:
        for _ in range(n):
            self.backlog.popleft()
        self.published += n
        self._inflight = 0
        self.connected = True

    def _resolve_inflight(self) -> None:
        """After a reconnect: did the batch in flight when the connection dropped go through?
        Its transaction set the marker to the count including it, all or nothing. (If Redis lost
        its data, the marker is gone and so is anything the batch added: it is sent again.)"""
        if self._inflight:
            sent = self.client.get(self._sent_key)
            if sent is not None and int(sent) >= self.published + self._inflight:
                self._confirm(self._inflight)
            self._inflight = 0

    def _last_flush(self) -> None:
        """On stop: send what the backlog holds if Redis answers; what it cannot is counted unsent."""
        try:
            self._resolve_inflight()
            self._flush_backlog()
        except REDIS_DOWN as exc:
            log.warning("stopping with %d events unsent: %s", len(self.backlog), exc)

    # -- pieces --------------------------------------------------------------------------------------

    def _make_events(self, n: int, rate: float) -> list[dict]:
        wall = self._wallclock()
        # Spread timestamps over the interval the batch stands for, so per-second charts are
        # smooth instead of showing 100 spikes a second.
        t0 = self._last_wall if self._last_wall is not None else wall - n / rate
        t0 = min(wall, max(t0, wall - 1.0))
        self._last_wall = wall
        return self.model.events(n, t0, wall)

    def _publish_batch(self, n: int, rate: float) -> None:
        events = self._make_events(n, rate)
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
        self.published += n
        # PUBLISH answers how many subscribers got the message; 0 means it is gone for good.
        self.unheard += receivers.count(0)
        self.connected = True

    def _seed_control(self) -> None:
        self.client.hset(self._control_key, mapping=self.state.as_fields())
        self._control_seeded = True
        self.connected = True

    def _poll_control(self, pacer: Pacer, now: float) -> None:
        try:
            fields = self.client.hgetall(self._control_key)
        except redis.ResponseError as exc:
            # e.g. WRONGTYPE: someone put a non-hash there. Keep running as we are.
            self._warn_control_once(f"cannot read {self._control_key}: {exc}")
            return
        self.connected = True
        if not fields:
            # Redis lost it (restart without persistence) or someone deleted it: put ours back
            # so the dashboard still has a state to show and edit.
            self.client.hset(self._control_key, mapping=self.state.as_fields())
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
            "name": self.name or DASHBOARD_GENERATOR,
            "state": state or ("running" if self.state.running else "paused"),
            "running": self.state.running and state != "stopped",
            "rate": self.state.rate,
            "profile": self.state.profile,
            "published": self.published,
            "reconnects": self.reconnects,
            "unheard": self.unheard,
            "transport": self.transport,
            "backlog": len(self.backlog),
            "dropped": self.dropped,
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
            "transport": status["transport"],
            "backlog": str(status["backlog"]),
            "dropped": str(status["dropped"]),
        }
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self._status_key, mapping=fields)
        pipe.expire(self._status_key, self.status_ttl_s)
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
            pipe.delete(self._status_key)
            pipe.publish(self.keys.generator_events, orjson.dumps(self.status("stopped")))
            pipe.execute()
        except (*REDIS_DOWN, redis.RedisError) as exc:
            log.warning("could not announce generator stop: %s", exc)

    def _wait(self, stop: threading.Event, delay: float, on_wait: Callable[[], None] | None) -> bool:
        """stop.wait(delay), calling `on_wait` every ACCRUE_EVERY_S meanwhile. True if stopped."""
        if on_wait is None:
            return stop.wait(delay)
        until = self._clock() + delay
        while (left := until - self._clock()) > 0:
            if stop.wait(min(left, ACCRUE_EVERY_S)):
                return True
            on_wait()
        return stop.is_set()

    def _reconnect(
        self, stop: threading.Event, exc: BaseException, on_wait: Callable[[], None] | None = None
    ) -> bool:
        """Wait for Redis with capped exponential backoff. False if stopped while waiting."""
        started = self._clock()
        attempt = 0
        while True:
            delay = backoff_delay(attempt, self.backoff_min_s, self.backoff_max_s)
            log.warning("redis unavailable (%s); reconnect attempt %d in %.2fs", exc, attempt + 1, delay)
            if self._wait(stop, delay, on_wait):
                return False
            try:
                self.client.ping()
                self._resolve_inflight()
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
