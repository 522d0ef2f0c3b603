"""Partitioned ingest on a real 3-master Redis Cluster (REDIS_CLUSTER=true, INGEST_PARTITIONS=4):
POST /api/ingest, the generator and the importer's writer route each event to its partition's
shard channel or stream; a consumer SSUBSCRIBEs its partition on the node owning the slot (and
SUBSCRIBEs the legacy channel) and its write script runs; the rate limiter uses cluster storage."""

from __future__ import annotations

import contextlib
import threading
import time

import orjson
import pytest
import redis

from backend.cli.importer.stream import StreamWriter as ImportWriter
from backend.config import current
from backend.ingest.consumer import Consumer
from backend.ingest.stream import GROUP
from backend.storage.client import connect, node_client
from backend.storage.keys import Keys, Partitioning
from generator.publisher import Generator
from producer import partition_of
from tests.helpers import wait_for
from tests.integration.collect import Collect

P = 4
PARTS = Partitioning(count=P, cluster=True)


def metrics_per_partition(n: int = 2) -> dict[int, list[str]]:
    """`n` metric names of each of the P partitions."""
    out: dict[int, list[str]] = {k: [] for k in range(P)}
    i = 0
    while any(len(v) < n for v in out.values()):
        name = f"m{i}"
        k = partition_of(name, P)
        if len(out[k]) < n:
            out[k].append(name)
        i += 1
    return out


def cluster_config(redis_cluster, token: str, **extra) -> dict:
    return {
        **current().as_dict(),
        "REDIS_URL": redis_cluster.url,
        "REDIS_CLUSTER": True,
        "INGEST_PARTITIONS": P,
        "KEY_PREFIX": f"{token}:",
        "RECENT_KEY": f"{token}:recent",
        "REDIS_CHANNEL": f"{token}:ch",
        "INGEST_STREAM": f"{token}:st",
        "ASYNC_MODE": "threading",
        **extra,
    }


def make_app(redis_cluster, token: str, **extra):
    from backend import create_app

    overrides = cluster_config(redis_cluster, token, **extra)
    overrides.pop("ASYNC_MODE")
    return create_app({"TESTING": True, "ASYNC_MODE": "threading", **overrides})


def shard_subscriptions(cluster, channels: list[str]):
    """One plain connection per channel, SSUBSCRIBEd on the node that owns its slot."""
    subs = []
    for ch in channels:
        ps = node_client(cluster, ch).pubsub()
        ps.ssubscribe(ch)
        assert ps.get_message(timeout=5)["type"] == "ssubscribe"
        subs.append(ps)
    return subs


def drain(ps, want: int, timeout: float = 5.0) -> list[dict]:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        m = ps.get_message(timeout=0.1)
        if m is not None and m["type"] in ("message", "smessage"):
            got.append(orjson.loads(m["data"]))
    return got


def test_connect_returns_a_cluster_client_with_timeouts(redis_cluster):
    rc = connect(redis_cluster.url + "/0", cluster=True)
    try:
        from redis.cluster import RedisCluster

        assert isinstance(rc, RedisCluster)
        assert rc.ping()
        kwargs = rc.get_connection_kwargs()
        assert kwargs["socket_timeout"] == 5.0 and kwargs["socket_connect_timeout"] == 2.0
        assert rc.retry.get_retries() == 1
        # A plain client of the node owning a shard channel's slot.
        node = node_client(rc, "x:{2}")
        assert node.get_connection_kwargs()["port"] == rc.get_node_from_key("x:{2}").port
        node.close()
    finally:
        rc.close()


@pytest.mark.parametrize("transport", ["stream", "pubsub"])
def test_post_ingest_lands_each_event_in_its_partition(
    redis_cluster, cluster_client, cluster_names, transport
):
    app = make_app(redis_cluster, cluster_names, INGEST_TRANSPORT=transport)
    client = app.test_client()
    by_part = metrics_per_partition()
    events = [{"metric": m, "value": i} for i, m in enumerate(m for ms in by_part.values() for m in ms)]
    channels = [PARTS.channel(f"{cluster_names}:ch", k) for k in range(P)]
    subs = shard_subscriptions(cluster_client, channels) if transport == "pubsub" else []
    try:
        resp = client.post("/api/ingest", json=events)
        assert resp.status_code == 202, resp.get_json()
        for k in range(P):
            if transport == "stream":
                entries = cluster_client.xrange(PARTS.stream(f"{cluster_names}:st", k))
                got = [orjson.loads(fields["event"]) for _, fields in entries]
            else:
                got = drain(subs[k], len(by_part[k]))
            assert sorted(e["metric"] for e in got) == sorted(by_part[k]), f"partition {k}"
        # (the legacy, untagged name gets nothing)
        assert not cluster_client.exists(f"{cluster_names}:st")
    finally:
        for ps in subs:
            ps.close()


def test_rate_limiter_uses_cluster_storage(redis_cluster, cluster_client, cluster_names):
    app = make_app(redis_cluster, cluster_names, INGEST_RATE_LIMIT="3/minute", TRUSTED_PROXIES=1)
    assert app.config["RATELIMIT_STORAGE_URI"].startswith("redis+cluster://")
    client = app.test_client()
    # Counters of 12 clients spread over every master: a plain redis:// client of one node would
    # answer MOVED (500) for most of them.
    for i in range(12):
        resp = client.post(
            "/api/ingest", json={"metric": "rl", "value": 1}, headers={"X-Forwarded-For": f"10.0.0.{i}"}
        )
        assert resp.status_code == 202, resp.get_json()
    codes = [
        client.post(
            "/api/ingest", json={"metric": "rl", "value": 1}, headers={"X-Forwarded-For": "10.9.9.9"}
        ).status_code
        for _ in range(4)
    ]
    assert codes == [202, 202, 202, 429]


def test_socketio_queue_on_a_cluster_is_the_cluster_manager(redis_cluster, cluster_names):
    from backend.realtime.cluster_manager import ClusterRedisManager
    from backend.web.extensions import socketio

    app = make_app(redis_cluster, cluster_names, MESSAGE_QUEUE=True)
    try:
        assert isinstance(socketio.server.manager, ClusterRedisManager)
        assert socketio.server.manager.channel == "{flask-socketio}"
    finally:
        socketio.server.manager.close()
    del app


@pytest.mark.parametrize("transport", ["stream", "pubsub"])
def test_generator_publishes_to_partitions(redis_cluster, cluster_client, cluster_names, transport):
    base = Keys(prefix=f"{cluster_names}:")
    channel, stream = f"{cluster_names}:ch", f"{cluster_names}:st"
    channels = [PARTS.channel(channel, k) for k in range(P)]
    subs = shard_subscriptions(cluster_client, channels) if transport == "pubsub" else []
    gen = Generator(
        redis_cluster.url,
        channel=channel,
        keys=base,
        rate=2000,
        transport=transport,
        stream=stream,
        partitions=P,
        cluster=True,
        name="gen-test",
    )
    try:
        summary = gen.run(max_events=200)
        assert summary.published == 200
        total, used = 0, 0
        for k in range(P):
            if transport == "stream":
                got = [orjson.loads(f["event"]) for _, f in cluster_client.xrange(PARTS.stream(stream, k))]
            else:
                got = drain(subs[k], 1, timeout=1.0)
                got += drain(subs[k], 10_000, timeout=0.5)
            assert all(partition_of(e["metric"], P) == k for e in got)
            total += len(got)
            used += bool(got)
        assert total == 200
        assert used >= 2  # its few metric names fall in partitions 0, 1 and 2 of 4
        if transport == "stream":
            # Each partition's batch set its own marker, in its own slot.
            markers = [gen.writer.partition_sent_key(k) for k in range(P)]
            assert all(
                m.startswith(f"{cluster_names}:{{{k}}}:generator:sent:") for k, m in enumerate(markers)
            )
            counts = [int(cluster_client.get(m) or 0) for m in markers]
            assert sum(counts) == 200 and sum(map(bool, counts)) >= 2
            assert counts == [cluster_client.xlen(PARTS.stream(stream, k)) for k in range(P)]
    finally:
        gen.close()
        for ps in subs:
            ps.close()


def test_importer_writes_each_partitions_stream(redis_cluster, cluster_client, cluster_names):
    stream = f"{cluster_names}:st"
    for k in range(P):
        cluster_client.xgroup_create(PARTS.stream(stream, k), GROUP, id="0", mkstream=True)
    client = connect(redis_cluster.url, cluster=True)
    writer = ImportWriter(client, stream, maxlen=10_000, chunk=100, max_backlog=1000, parts=PARTS)
    writer.check_group()
    by_part = metrics_per_partition(3)
    events = [{"metric": m, "value": 1} for ms in by_part.values() for m in ms]
    parts = [writer.partition_of(e) for e in events]
    writer.send([orjson.dumps(e) for e in events], 1, len(events), lambda *a: True, print, parts)
    assert writer.queued == len(events) and writer.backlog == len(events)
    for k in range(P):
        got = [orjson.loads(f["event"])["metric"] for _, f in cluster_client.xrange(PARTS.stream(stream, k))]
        assert sorted(got) == sorted(by_part[k])
    # A worker consumes and acknowledges every partition's entries: drain() then sees it done.
    for k in range(P):
        key = PARTS.stream(stream, k)
        for _, entries in cluster_client.xreadgroup(GROUP, "worker", {key: ">"}):
            cluster_client.xack(key, GROUP, *(entry_id for entry_id, _ in entries))
    assert writer.drain(lambda *a: True, print) is True
    assert writer.backlog == 0
    client.close()


@contextlib.contextmanager
def running(consumer: Consumer):
    """The consumer on a thread of its own; stopped, joined and its clients closed after."""
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        consumer.stop()
        thread.join(timeout=10)
        assert not thread.is_alive()
        consumer.store.redis.close()
        if consumer.sub_client is not None:
            consumer.sub_client.close()


@pytest.mark.parametrize("partition", [0, 3])
def test_consumer_takes_its_shard_channel_and_the_legacy_channel(
    redis_cluster, cluster_client, cluster_names, partition
):
    cfg = cluster_config(redis_cluster, cluster_names)
    consumer = Consumer(cfg, Collect(), partition=partition)
    with running(consumer):
        wait_for(lambda: consumer.subscribed, message="the consumer subscribed", timeout=10)
        # Its sub connection is to the master owning its channel's slot.
        node = cluster_client.get_node_from_key(consumer.channel)
        assert consumer.sub_client.get_connection_kwargs()["port"] == node.port
        mine = metrics_per_partition(1)[partition][0]
        cluster_client.spublish(consumer.channel, orjson.dumps({"metric": mine, "value": 1}))
        # A foreign partition's shard channel is not ours.
        other = (partition + 1) % P
        cluster_client.spublish(
            PARTS.channel(cfg["REDIS_CHANNEL"], other), orjson.dumps({"metric": "nope", "value": 1})
        )
        want = 1
        if partition == 0:
            # The legacy channel (plain PUBLISH, broadcast over the cluster) goes to partition 0.
            cluster_client.publish(cfg["REDIS_CHANNEL"], orjson.dumps({"metric": "legacy", "value": 2}))
            want = 2

        def stored():
            return [orjson.loads(e) for b in consumer.broadcaster.batches for e in b]

        wait_for(lambda: len(stored()) >= want, message="the events stored", timeout=10)
        time.sleep(0.3)
        got = stored()
        assert sorted(e["metric"] for e in got) == sorted([mine] + (["legacy"] if partition == 0 else []))
        # The write script ran (one slot): the partition's recent list and stats have them.
        keys = PARTS.keys(Keys.from_config(cfg), partition)
        assert cluster_client.llen(keys.recent) == want
        assert int(cluster_client.hget(keys.stats, "accepted")) == want


def test_consumer_reads_its_partitions_stream_on_a_cluster(redis_cluster, cluster_client, cluster_names):
    cfg = cluster_config(redis_cluster, cluster_names, INGEST_TRANSPORT="stream")
    consumer = Consumer(cfg, Collect(), partition=1)
    with running(consumer):
        wait_for(lambda: consumer.subscribed, message="the consumer subscribed", timeout=10)
        mine = metrics_per_partition(1)[1][0]
        stream = PARTS.stream(cfg["INGEST_STREAM"], 1)
        for i in range(5):
            cluster_client.xadd(stream, {"event": orjson.dumps({"metric": mine, "value": i})})
        wait_for(
            lambda: sum(len(b) for b in consumer.broadcaster.batches) == 5, message="5 stored", timeout=10
        )
        wait_for(lambda: cluster_client.xpending(stream, GROUP)["pending"] == 0, message="acked", timeout=5)


def test_plain_redis_from_url_of_a_cluster_node_is_not_what_connect_returns(redis_cluster):
    # Guard: callers must not build plain clients of a cluster (MOVED for 2/3 of the keys).
    assert not isinstance(connect(redis_cluster.url, cluster=True), redis.Redis)


def test_alert_scripts_run_on_a_cluster_with_the_alerts_tag(cluster_client, cluster_names):
    from backend.storage.alerts import AnalyticsStore

    keys = Keys.from_config(
        {"KEY_PREFIX": f"{cluster_names}:", "RECENT_KEY": "r", "INGEST_PARTITIONS": 1, "REDIS_CLUSTER": True}
    )
    assert keys.alerts_tag and keys.alert("x").startswith(f"{cluster_names}:{{alerts}}:")
    slots = {
        cluster_client.keyslot(k)
        for k in (keys.alert("a"), keys.alerts_open, keys.alerts_closed, keys.alerts_by_key)
    }
    assert len(slots) == 1
    analytics = AnalyticsStore(cluster_client, keys, keep_closed=1)
    first, created = analytics.open_alert("cpu>0.9", {"severity": "warning", "state": "open"}, 1.0)
    assert created and analytics.open_alert("cpu>0.9", {"severity": "warning", "state": "open"}, 2.0) == (
        first,
        False,
    )
    assert analytics.update_alert(first, {"value": 0.95}) is not None
    assert analytics.close_alert(first, "cpu>0.9", {"value": 0.5}, 3.0) is not None
    second, _ = analytics.open_alert("cpu>0.9", {"severity": "warning", "state": "open"}, 4.0)
    analytics.close_alert(second, "cpu>0.9", {}, 5.0)  # keep_closed=1: trims (DELs) the first
    assert analytics.get(first) is None and analytics.get(second) is not None
    # One Redis, one partition: today's names.
    assert Keys.from_config({"KEY_PREFIX": "p:", "RECENT_KEY": "r"}).alert("x") == "p:alert:x"


@pytest.mark.parametrize("transport", ["pubsub", "stream"])
def test_web_node_and_worker_processes_on_the_cluster(
    redis_cluster, cluster_client, server_factory, names, transport
):
    """`pulseboard worker` + `pulseboard serve --no-worker` (eventlet, the default) on the cluster:
    an event POSTed to the web node is routed to its partition, stored by the worker and pushed
    to a Socket.IO client of the web node (fan-out channel and ClusterRedisManager queue)."""
    from tests.integration.sio import Recorder

    env = {
        "REDIS_CLUSTER": "true",
        "INGEST_PARTITIONS": str(P),
        "MESSAGE_QUEUE": "true",
        "INGEST_TRANSPORT": transport,
    }
    server_factory(redis_url=redis_cluster.url, command="worker", env=env)
    web = server_factory(redis_url=redis_cluster.url, args=("--no-worker",), env=env)
    rec = Recorder(web.url).connect()
    try:
        wait_for(lambda: rec.connected_msgs, message="the Socket.IO client connected")
        events = [{"metric": f"m{i}", "value": i} for i in range(40)]
        resp = web.post("/api/ingest", json=events)
        assert resp.status_code == 202
        ids = set(resp.json()["ids"])
        wait_for(lambda: len(rec.metric) >= 40, message="40 events pushed", timeout=15)
        assert {e["id"] for e in rec.metric} == ids
        # (the worker reports its figures about once a second)
        health = wait_for(
            lambda: (h := web.get("/api/health").json())["worker"]["processed"] == 40 and h,
            message="the worker's report",
        )
        assert all(p["processed"] for p in health["worker"]["by_partition"])
    finally:
        rec.close()


def _move_slot(cluster_client, slot: int, target) -> None:
    """Reshard one slot to `target` the way redis-cli does: IMPORTING/MIGRATING, MIGRATE its keys,
    then SETSLOT NODE on every master (the old owner then SUNSUBSCRIBEs its shard subscribers)."""
    source = cluster_client.nodes_manager.get_node_from_slot(slot)
    src, tgt = source.redis_connection, target.redis_connection
    sid, tid = src.execute_command("CLUSTER MYID"), tgt.execute_command("CLUSTER MYID")
    tgt.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", sid)
    src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", tid)
    while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
        src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
    for node in cluster_client.get_primaries():
        node.redis_connection.execute_command("CLUSTER SETSLOT", slot, "NODE", tid)


@pytest.mark.parametrize(
    "transport,strategy", [("pubsub", "batch"), ("pubsub", "per_event"), ("stream", "batch")]
)
def test_consumer_follows_its_shard_channel_to_a_new_owner(
    redis_cluster, cluster_client, cluster_names, transport, strategy
):
    """A reshard moves the partition's slot: the old owner SUNSUBSCRIBEs the consumer, which
    resubscribes on the new owner and goes on storing what producers SPUBLISH there (whichever
    way the consumer reads its subscription: the raw reader, per event, beside the stream)."""
    cfg = cluster_config(redis_cluster, cluster_names, INGEST_TRANSPORT=transport, WORKER_STRATEGY=strategy)
    consumer = Consumer(cfg, Collect(), partition=2)
    slot = cluster_client.keyslot(consumer.channel)
    before = cluster_client.nodes_manager.get_node_from_slot(slot)
    mine = metrics_per_partition(1)[2][0]

    def stored() -> int:
        return sum(len(b) for b in consumer.broadcaster.batches)

    with running(consumer):
        wait_for(lambda: consumer.subscribed, message="the consumer subscribed", timeout=10)
        cluster_client.spublish(consumer.channel, orjson.dumps({"metric": mine, "value": 1}))
        wait_for(lambda: stored() == 1, message="the first event stored")
        target = next(n for n in cluster_client.get_primaries() if n.name != before.name)
        _move_slot(cluster_client, slot, target)
        wait_for(
            lambda: (
                consumer.subscribed and consumer.sub_client.get_connection_kwargs()["port"] == target.port
            ),
            message="resubscribed on the new owner",
            timeout=15,
        )

        def publish_and_count() -> bool:
            # The producer's own slot map follows the MOVED reply by itself.
            cluster_client.spublish(consumer.channel, orjson.dumps({"metric": mine, "value": 2}))
            return stored() >= 2

        wait_for(publish_and_count, message="an event SPUBLISHed to the new owner is stored", interval=0.2)
        keys = PARTS.keys(Keys.from_config(cfg), 2)
        assert consumer.processed >= 2 and cluster_client.llen(keys.recent) >= 2  # stored on the new owner
