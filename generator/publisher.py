"""Publish simulated traffic to Redis at a steady rate, steerable from the dashboard.

:class:`Generator` is the loop: it makes a :class:`~generator.traffic.TrafficModel`'s events when
a :class:`~generator.pacing.Pacer` says they are due, hands them to the transport's writer
(:mod:`generator.transport`: ``pubsub`` PUBLISHes, ``stream`` XADDs and keeps a backlog through an
outage), follows its control hash and reports its status (:mod:`generator.control`, the protocol
the web API shares), and reconnects with redis-py's capped exponential backoff when Redis goes away.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from backend.config import current
from backend.ingest.stream import check_transport
from backend.storage.client import cluster_node_url
from backend.storage.keys import DASHBOARD_GENERATOR, Keys, Partitioning
from generator.control import ControlChannel, ControlState, check_rate, parse_control
from generator.pacing import MAX_BATCH, TICK_S, Pacer, sleep_until
from generator.traffic import DAY_S, DEFAULT_BURST_EVERY_S, TrafficModel
from generator.transport import BACKLOG_S, REDIS_DOWN, PubSubWriter, StreamWriter, Writer

log = logging.getLogger(__name__)

CONTROL_INTERVAL_S = 1.0
STATUS_TTL_S = 5
BEHIND_WARN_EVERY_S = 30.0  # a rate we can't reach would otherwise warn every second
ACCRUE_EVERY_S = 0.05  # stream transport: how often events are produced into the backlog during an outage
MAX_DOUBLINGS = 60  # backoff attempts past this wait as long as this one: 2**60 * base is past any cap


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
        partitions: int | None = None,
        cluster: bool | None = None,
    ):
        if not redis_url:
            raise ValueError("set REDIS_URL or use `pulseboard up`")
        rate = check_rate(current().GENERATOR_RATE if rate is None else rate)
        profile = profile or current().GENERATOR_PROFILE
        self.redis_url = redis_url
        self.transport = check_transport(transport or current().INGEST_TRANSPORT)
        keys = keys or Keys.from_config(current().as_dict())
        self.name = name
        self.state = ControlState(running=True, rate=rate, profile=profile)
        # A fresh id prefix per run even with a seed: consumers may drop ids they have seen.
        # (TrafficModel refuses an unknown profile.)
        run_id = secrets.token_hex(4)
        self.model = TrafficModel(
            profile, seed=seed, burst_every_s=burst_every_s, day_s=day_s, id_prefix=f"{run_id}-"
        )
        self.tick_s = tick_s
        self.max_batch = max_batch
        self.control_interval_s = control_interval_s
        self.status_ttl_s = status_ttl_s
        # Reconnect waits: doubling from RECONNECT_MIN_S, capped at RECONNECT_MAX_S, no jitter.
        self.backoff = ExponentialBackoff(
            cap=current().RECONNECT_MAX_S if backoff_max_s is None else backoff_max_s,
            base=current().RECONNECT_MIN_S if backoff_min_s is None else backoff_min_s,
        )
        self._clock = clock
        self._wallclock = wallclock
        # Each event goes to its metric's partition (INGEST_PARTITIONS; REDIS_CLUSTER: sharded).
        self.parts = Partitioning(
            count=current().INGEST_PARTITIONS if partitions is None else partitions,
            cluster=current().REDIS_CLUSTER if cluster is None else cluster,
        )
        # No redis-py retries: a retried PUBLISH pipeline could publish a batch twice, and our own
        # loop already retries with backoff and tells the operator about it. (On a cluster the
        # client still follows MOVED/ASK redirects, which resend nothing that ran.)
        options = {
            "decode_responses": True,
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": socket_timeout_s,
            "retry": Retry(NoBackoff(), 0),
        }
        self.client = (
            RedisCluster.from_url(cluster_node_url(redis_url), **options)
            if self.parts.cluster
            else redis.Redis.from_url(redis_url, **options)
        )
        # Which control and status hashes are ours: None or DASHBOARD_GENERATOR are the dashboard's.
        self.control = ControlChannel(self.client, keys, name)
        self.writer: Writer
        if self.transport == "stream":
            self.writer = StreamWriter(
                self.client,
                stream or current().INGEST_STREAM,
                current().INGEST_STREAM_MAXLEN if stream_maxlen is None else stream_maxlen,
                keys.generator_sent(run_id),
                max_batch,
                backlog_s,
                parts=self.parts,
                partition_sent_key=lambda k: self.parts.keys(keys, k).generator_sent(run_id),
            )
        else:
            self.writer = PubSubWriter(self.client, channel or current().REDIS_CHANNEL, self.parts)
        self.reconnects = 0
        self.not_sent = 0
        self.connected = False
        self._pid = os.getpid()
        self._control_seeded = False
        self._last_incident = None
        self._last_wall: float | None = None
        self._bad_control: frozenset[str] = frozenset()

    @property
    def published(self) -> int:
        return self.writer.published

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
        writer = self.writer
        durable = writer.durable
        log.info(
            "generator publishing %s traffic at %g events/s %s (%s)",
            self.state.profile,
            self.state.rate,
            writer.target,
            self.redis_url,
        )

        def due(now: float) -> int:
            n = pacer.due(now)
            if max_events is not None:
                n = min(n, max_events - writer.produced)
            return n

        def take(n: int) -> None:
            writer.take(self._make_events(n, pacer.rate), pacer.rate)
            pacer.record(n)

        def accrue() -> None:
            # Stream transport, Redis down: the events still happen; keep them for later.
            if self.state.running:
                while (n := due(clock())) > 0:
                    take(n)

        try:
            while not stop.is_set():
                now = clock()
                if now >= end or (
                    max_events is not None and writer.produced >= max_events and not writer.backlog
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
                            take(n)  # pubsub: sent; stream: into the backlog, which flush() sends
                            writer.flush()
                            self.connected = True
                            last_batch = now
                            if self._incident_changed():
                                self._refresh_status()
                    if writer.backlog:  # left over from an outage, or produced while paused
                        writer.flush()
                        self.connected = True
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
            if writer.last_flush():
                self.connected = True
            self._announce_stop()
        summary = Summary(
            writer.published,
            elapsed,
            self.reconnects,
            writer.lost,
            pacer.skipped,
            self.state.rate,
            writer.unheard,
            not_sent=self.not_sent,
            dropped=writer.dropped,
            unsent=len(writer.backlog),
        )
        log.debug("%s", summary.line())
        return summary

    # -- pieces --------------------------------------------------------------------------------------

    def _make_events(self, n: int, rate: float) -> list[dict]:
        wall = self._wallclock()
        # Spread timestamps over the interval the batch stands for, so per-second charts are
        # smooth instead of showing 100 spikes a second.
        t0 = self._last_wall if self._last_wall is not None else wall - n / rate
        t0 = min(wall, max(t0, wall - 1.0))
        self._last_wall = wall
        return self.model.events(n, t0, wall)

    def _seed_control(self) -> None:
        self.control.write(self.state)
        self._control_seeded = True
        self.connected = True

    def _poll_control(self, pacer: Pacer, now: float) -> None:
        try:
            fields = self.control.read()
        except redis.ResponseError as exc:
            # e.g. WRONGTYPE: someone put a non-hash there. Keep running as we are.
            self._warn_control_once(f"cannot read {self.control.control_key}: {exc}")
            return
        self.connected = True
        if not fields:
            # Redis lost it (restart without persistence) or someone deleted it: put ours back
            # so the dashboard still has a state to show and edit.
            self.control.write(self.state)
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
            "published": self.writer.published,
            "reconnects": self.reconnects,
            "unheard": self.writer.unheard,
            "transport": self.transport,
            "backlog": len(self.writer.backlog),
            "dropped": self.writer.dropped,
            "pid": self._pid,
            "updated": self._wallclock(),
            "incident": incident.as_dict() if incident is not None else None,
        }

    def _refresh_status(self) -> None:
        self.control.report(self.status(), self.status_ttl_s)

    def _announce_stop(self) -> None:
        if not self.connected:
            return  # Redis is down: the status hash expires on its own within its TTL
        try:
            self.control.report_stop(self.status("stopped"))
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
            delay = self.backoff.compute(min(attempt, MAX_DOUBLINGS))
            log.warning("redis unavailable (%s); reconnect attempt %d in %.2fs", exc, attempt + 1, delay)
            if self._wait(stop, delay, on_wait):
                return False
            try:
                self.client.ping()
                self.writer.reconnected()
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
