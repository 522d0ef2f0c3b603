"""Every Redis key name Pulseboard uses, in one place.

`RECENT_KEY` keeps the original design's name (``metrics:recent``) so old readers still work;
everything else lives under ``KEY_PREFIX`` so several deployments can share one Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from producer import channel_for, partition_of, stream_for

# The generator the dashboard and POST /api/generator steer (`pulseboard up` starts it).
DASHBOARD_GENERATOR = "dashboard"


@dataclass(frozen=True)
class Keys:
    prefix: str = "pulseboard:"
    recent: str = "metrics:recent"
    # The alert keys (alert:<id>, alerts:open/closed/by-key) under one {alerts} hash tag: the
    # alert scripts (storage/alerts.py) touch alert hashes named from ARGV (prefix .. id) beside
    # the sets in KEYS, which on a cluster must all be in one slot. Set when partitioned
    # (Partitioning.tagged); off, every name is today's.
    alerts_tag: bool = False

    @classmethod
    def from_config(cls, config) -> Keys:
        return cls(
            prefix=config["KEY_PREFIX"],
            recent=config["RECENT_KEY"],
            alerts_tag=Partitioning.from_config(config).tagged,
        )

    @property
    def _alerts(self) -> str:
        return f"{self.prefix}{{alerts}}:" if self.alerts_tag else self.prefix

    @property
    def seq(self) -> str:
        """INCRBY counter handing out event sequence numbers (unique across restarts)."""
        return f"{self.prefix}seq"

    def recent_metric(self, metric: str) -> str:
        """The newest RECENT_PER_METRIC events of one metric, newest first (expires RETENTION_S
        after its last write), so `recent?metric=` answers for quiet metrics too."""
        return f"{self.prefix}recent:{metric}"

    @property
    def history(self) -> str:
        """Stream of stored batches, entry id <first seq>-0, field e = the events' JSON without seq
        (newline-separated): HISTORY_S of it, for `recent?after=` resyncs across any gap."""
        return f"{self.prefix}history"

    @property
    def metrics(self) -> str:
        """Set of the metric names accepted so far: the cardinality bound (MAX_METRICS) counts it."""
        return f"{self.prefix}metrics"

    @property
    def rejected(self) -> str:
        """Dead-letter list, newest first: JSON {raw, reason, time}."""
        return f"{self.prefix}rejected"

    @property
    def stats(self) -> str:
        """Hash of lifetime counters: received, accepted, rejected, rejected:<reason>."""
        return f"{self.prefix}stats"

    def bucket(self, resolution_s: int, start: int) -> str:
        """Aggregate bucket hash for the `resolution_s`-second interval starting at unix `start`."""
        return f"{self.prefix}agg:{resolution_s}:{start}"

    @property
    def generator_control(self) -> str:
        """Hash the API writes the desired generator state to (running, rate, profile)."""
        return f"{self.prefix}generator:control"

    @property
    def generator_status(self) -> str:
        """Hash a running generator refreshes with its state; expires when it stops."""
        return f"{self.prefix}generator:status"

    def generator_control_of(self, name: str | None) -> str:
        """The control hash of generator `name`: the dashboard's own (None or DASHBOARD_GENERATOR)
        is `generator_control`, the one the API edits; any other name has a hash of its own, so a
        `pulseboard generate` run beside `pulseboard up` does not retune up's generator."""
        if name is None or name == DASHBOARD_GENERATOR:
            return self.generator_control
        return f"{self.prefix}generator:control:{name}"

    def generator_status_of(self, name: str | None) -> str:
        """The status hash of generator `name` (see generator_control_of); only the dashboard's is
        the one the dashboard and GET /api/generator show."""
        if name is None or name == DASHBOARD_GENERATOR:
            return self.generator_status
        return f"{self.prefix}generator:status:{name}"

    @property
    def generator_events(self) -> str:
        """Pub/Sub channel announcing generator state changes to the web nodes."""
        return f"{self.prefix}generator:events"

    def generator_sent(self, run: str) -> str:
        """How many events generator run `run` has XADDed, set in the transaction of each batch, so
        after a dropped connection it can tell whether its last batch went through (stream
        transport). Expires an hour after the last batch."""
        return f"{self.prefix}generator:sent:{run}"

    @property
    def worker_lease(self) -> str:
        """Lease key held by the active worker when several are running."""
        return f"{self.prefix}worker:lease"

    @property
    def workers(self) -> str:
        """Hash: worker token -> its JSON status, reported about once a second (for /api/health)."""
        return f"{self.prefix}workers"

    @property
    def worker_heartbeat(self) -> str:
        """Refreshed about once a second by a running worker; expires when none runs."""
        return f"{self.prefix}worker:heartbeat"

    @property
    def watched(self) -> str:
        """Set about once a second, with a 3 s expiry, by each web node that has clients getting
        every event: while it exists the worker writes batches of at most MAX_BATCH_LIVE."""
        return f"{self.prefix}watched"

    @property
    def fanout(self) -> str:
        """Pub/Sub channel the worker's write script publishes each stored batch on, for every web
        node to deliver to its own clients (MESSAGE_QUEUE): `<first seq>\\n<event>\\n<event>...`."""
        return f"{self.prefix}fanout"

    # --- analytics (backend/analytics) -------------------------------------------------------------
    def tag_bucket(self, resolution_s: int, start: int) -> str:
        """Per-tag counters (top-N) of the same interval as `bucket`, kept apart so aggregates
        never read them."""
        return f"{self.prefix}aggtag:{resolution_s}:{start}"

    @property
    def rules(self) -> str:
        """Hash of alert rules: rule id -> JSON."""
        return f"{self.prefix}rules"

    def alert(self, alert_id: str) -> str:
        """Hash of one alert: field -> JSON value."""
        return f"{self._alerts}alert:{alert_id}"

    @property
    def alerts_open(self) -> str:
        """Sorted set of open alert ids, scored by opened_at."""
        return f"{self._alerts}alerts:open"

    @property
    def alerts_closed(self) -> str:
        """Sorted set of recently closed alert ids, scored by closed_at; trimmed to ALERTS_KEEP_CLOSED."""
        return f"{self._alerts}alerts:closed"

    @property
    def alerts_by_key(self) -> str:
        """Hash: what an open alert is about (its dedup key) -> its id; at most one open per key."""
        return f"{self._alerts}alerts:by-key"


@dataclass(frozen=True)
class Partitioning:
    """How ingest is split (INGEST_PARTITIONS, REDIS_CLUSTER) and each partition's names.

    With one partition on one Redis every name is today's. Otherwise partition k's keys live
    under ``<KEY_PREFIX>{k}:`` and its channel and stream are ``<name>:{k}``: the ``{k}`` hash
    tag puts all of a partition in one cluster slot, so its batch script (which touches its seq,
    lists, buckets, lease and stream together) runs on one node. Keys that are not per
    partition (rules, alerts, generator, worker reports, the fan-out channel) keep base names."""

    count: int = 1
    cluster: bool = False

    @classmethod
    def from_config(cls, config) -> Partitioning:
        return cls(
            count=int(config.get("INGEST_PARTITIONS", 1)), cluster=bool(config.get("REDIS_CLUSTER", False))
        )

    @property
    def tagged(self) -> bool:
        return self.count > 1 or self.cluster

    def of(self, metric: str) -> int:
        return partition_of(metric, self.count)

    def keys(self, base: Keys, k: int) -> Keys:
        if not self.tagged:
            return base
        return Keys(prefix=f"{base.prefix}{{{k}}}:", recent=f"{base.recent}:{{{k}}}")

    def all_keys(self, base: Keys) -> list[Keys]:
        return [self.keys(base, k) for k in range(self.count)]

    def channel(self, base: str, k: int) -> str:
        return channel_for(base, k) if self.tagged else base

    def stream(self, base: str, k: int) -> str:
        return stream_for(base, k) if self.tagged else base
