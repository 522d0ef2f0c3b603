"""The embedded 3-master cluster works, and so do the redis-py cluster features REDIS_CLUSTER needs:
slot routing from one node's URL, hash-tagged multi-key Lua, sharded Pub/Sub."""

from __future__ import annotations

import json
import os

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from backend.cli.embedded_cluster import SLOTS, EmbeddedCluster
from tests.cluster_fixture import node_clients
from tests.helpers import wait_for


def _shard_subscribers(client: RedisCluster, channel: str) -> int:
    """PUBSUB SHARDNUMSUB asked of the channel's owner: redis-py 8.1 sends it to a default node
    otherwise, which answers 0 for a channel it does not own."""
    owner = client.get_node_from_key(channel)
    return client.pubsub_shardnumsub(channel, target_nodes=owner)[0][1]


def _sharded_message(pubsub, timeout=5.0):
    """The next smessage (skipping ssubscribe confirmations), within `timeout` seconds."""

    def poll():
        msg = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.05)
        return msg if msg and msg["type"] == "smessage" else None

    return wait_for(poll, timeout=timeout, message="a sharded message")


def test_every_node_reports_cluster_ok(redis_cluster):
    assert len(redis_cluster.urls) == 3
    for node in node_clients(redis_cluster):
        info = node.cluster("info")
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == SLOTS
        assert int(info["cluster_known_nodes"]) == 3
        node.close()
    assert redis_cluster.startup_s > 0


def test_cluster_client_from_one_url_spreads_keys_over_all_masters(
    redis_cluster, cluster_client, cluster_names
):
    keys = [f"{cluster_names}:k{i}" for i in range(60)]
    for i, key in enumerate(keys):
        cluster_client.set(key, i)
    assert [cluster_client.get(k) for k in keys] == [str(i) for i in range(60)]
    # Each master holds some of them: the client followed the slot map, not one node.
    sizes = []
    for node in node_clients(redis_cluster):
        sizes.append(node.dbsize())
        node.close()
    assert all(n > 0 for n in sizes), sizes
    assert sum(sizes) == len(keys)
    assert len(cluster_client.get_primaries()) == 3


def test_eval_with_keys_sharing_a_hash_tag(cluster_client, cluster_names):
    a, b = f"metrics_stream:{{{cluster_names}}}", f"metrics_count:{{{cluster_names}}}"
    assert cluster_client.keyslot(a) == cluster_client.keyslot(b)
    script = cluster_client.register_script(
        "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCRBY', KEYS[2], ARGV[1])"
    )
    assert script(keys=[a, b], args=[5]) == 5
    assert script(keys=[a, b], args=[2]) == 7
    assert cluster_client.get(a) == "2"
    assert cluster_client.eval("return redis.call('GET', KEYS[1])", 1, b) == "7"


def test_eval_across_slots_is_refused(cluster_client, cluster_names):
    # What our write script would hit on a cluster if its keys do not share a tag.
    a, b = f"{cluster_names}:a", f"{cluster_names}:b"
    assert cluster_client.keyslot(a) != cluster_client.keyslot(b)
    with pytest.raises(Exception) as exc:  # redis-py refuses client-side (RedisClusterException)
        cluster_client.eval("return 1", 2, a, b)
    assert "slot" in str(exc.value).lower()


def test_script_touching_an_undeclared_key_works_only_by_luck(cluster_client, cluster_names):
    # A script without flags (no #!lua shebang) may touch a key it did not declare in KEYS as long
    # as that key's node happens to be the one running it; on another node it fails. So undeclared
    # keys pass small tests and break after a reshard. A #!lua script refuses any other slot.
    declared = f"{{{cluster_names}}}:a"
    node = cluster_client.get_node_from_key(declared).name
    candidates = [f"{cluster_names}:k{i}" for i in range(2000)]
    same_node = next(
        k
        for k in candidates
        if cluster_client.get_node_from_key(k).name == node
        and cluster_client.keyslot(k) != cluster_client.keyslot(declared)
    )
    other_node = next(k for k in candidates if cluster_client.get_node_from_key(k).name != node)
    legacy = "return redis.call('SET', ARGV[1], 1)"
    assert cluster_client.eval(legacy, 1, declared, same_node) == "OK"
    with pytest.raises(ResponseError, match="non local key"):
        cluster_client.eval(legacy, 1, declared, other_node)
    with pytest.raises(ResponseError, match="same slot"):
        cluster_client.eval("#!lua\n" + legacy, 1, declared, same_node)
    # Plain PUBLISH from a script names a channel, not a key: allowed on any node (broadcast).
    assert cluster_client.eval("return redis.call('PUBLISH', ARGV[1], 'x')", 1, declared, other_node) == 0


def test_spublish_ssubscribe_through_cluster_pubsub(cluster_client, cluster_names):
    channels = [f"metrics_channel:{{{k}}}" for k in range(6)]
    slots = {cluster_client.keyslot(c) for c in channels}
    owners = {cluster_client.get_node_from_key(c).name for c in channels}
    assert len(slots) == 6 and len(owners) >= 2  # spread over several masters
    pubsub = cluster_client.pubsub()
    pubsub.ssubscribe(*channels)
    try:
        wait_for(
            lambda: all(_shard_subscribers(cluster_client, c) == 1 for c in channels),
            message="every shard channel subscribed on its owner",
        )
        for i, channel in enumerate(channels):
            assert cluster_client.spublish(channel, f"hello {i}") == 1
        got = {}
        for _ in channels:
            msg = _sharded_message(pubsub)
            got[msg["channel"]] = msg["data"]
        assert got == {c: f"hello {i}" for i, c in enumerate(channels)}
    finally:
        pubsub.sunsubscribe()
        pubsub.close()


def test_spublish_from_lua_on_a_hash_tagged_channel(cluster_client, cluster_names):
    # A write script can announce on the partition's shard channel when the channel shares the
    # hash tag of its keys (SPUBLISH is a keyed command: the script's slot must own it).
    key, channel = f"pb:seq:{{{cluster_names}}}", f"metrics_channel:{{{cluster_names}}}"
    other = f"metrics_channel:{{{cluster_names}x}}"
    assert cluster_client.keyslot(other) != cluster_client.keyslot(key)
    pubsub = cluster_client.pubsub()
    pubsub.ssubscribe(channel)
    try:
        wait_for(lambda: _shard_subscribers(cluster_client, channel) == 1, message="subscribed")
        n = cluster_client.eval(
            "local n = redis.call('INCR', KEYS[1]); redis.call('SPUBLISH', KEYS[2], n); return n",
            2,
            key,
            channel,
        )
        assert n == 1
        assert _sharded_message(pubsub)["data"] == "1"
        # The same with the channel in another slot: refused by the server.
        with pytest.raises(Exception):  # noqa: B017 - CROSSSLOT from redis-py or the server
            cluster_client.eval("return redis.call('SPUBLISH', KEYS[2], 'x')", 2, key, other)
    finally:
        pubsub.sunsubscribe()
        pubsub.close()


def test_classic_publish_reaches_a_subscriber_on_another_node(redis_cluster, cluster_names):
    # Plain PUBLISH is broadcast over the cluster bus to every node: a single-node client
    # subscribed anywhere hears a publish made on any other node (what the stock socketio
    # RedisManager relies on), at the cost of sending every message to every node.
    first, second, *_ = node_clients(redis_cluster)
    pubsub = first.pubsub(ignore_subscribe_messages=True)
    channel = f"{cluster_names}:fanout"
    pubsub.subscribe(channel)
    try:
        wait_for(lambda: first.pubsub_numsub(channel)[0][1] == 1, message="subscribed")
        assert second.publish(channel, "hi") == 0  # counts local subscribers only
        msg = wait_for(lambda: pubsub.get_message(timeout=0.05), message="broadcast message")
        assert msg["data"] == "hi"
    finally:
        pubsub.close()
        first.close()
        second.close()


def test_stop_leaves_no_process_or_directory():
    cluster = EmbeddedCluster().start()
    pids, dirs, urls = cluster.pids(), cluster.dirs(), cluster.urls
    assert len(pids) == 3 and all(os.path.isdir(d) for d in dirs)
    assert RedisCluster.from_url(cluster.url).ping()
    cluster.stop()
    assert cluster.nodes == []
    for pid in pids:  # reaped (waited for), not merely signalled: no zombie left either
        assert not os.path.exists(f"/proc/{pid}")
    assert not any(os.path.exists(d) for d in dirs)
    for url in urls:
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()


def test_producer_publish_spublishes_to_the_partition_channel_on_a_cluster(cluster_client, cluster_names):
    from producer import channel_for, partition_of, publish

    base = f"{cluster_names}:metrics"
    channels = [channel_for(base, k) for k in range(4)]
    pubsub = cluster_client.pubsub()
    pubsub.ssubscribe(*channels)
    try:
        wait_for(
            lambda: all(_shard_subscribers(cluster_client, c) == 1 for c in channels), message="subscribed"
        )
        event = {"metric": "cpu", "value": 0.5}
        assert publish(cluster_client, event, partitions=4, channel=base) == 1
        msg = _sharded_message(pubsub)
        assert msg["channel"] == channels[partition_of("cpu", 4)]
        assert json.loads(msg["data"]) == event
    finally:
        pubsub.sunsubscribe()
        pubsub.close()


def test_producer_publish_through_a_cluster_pipeline(cluster_client, cluster_names):
    # redis-py 8.1's ClusterPipeline refuses PUBLISH but routes SPUBLISH by slot: publish()
    # picks SPUBLISH for it, so a batch of events goes out in one pipeline.
    from producer import channel_for, partition_of, publish

    base = f"{cluster_names}:metrics"
    channels = [channel_for(base, k) for k in range(4)]
    pubsub = cluster_client.pubsub()
    pubsub.ssubscribe(*channels)
    try:
        wait_for(
            lambda: all(_shard_subscribers(cluster_client, c) == 1 for c in channels), message="subscribed"
        )
        metrics = ["cpu", "memory", "latency_ms", "disk", "errors"]
        pipe = cluster_client.pipeline()
        for m in metrics:
            publish(pipe, {"metric": m, "value": 1}, partitions=4, channel=base)
        assert pipe.execute() == [1] * len(metrics)
        got = sorted((_sharded_message(pubsub)["channel"]) for _ in metrics)
        assert got == sorted(channels[partition_of(m, 4)] for m in metrics)
        with pytest.raises(Exception, match="blocked"):
            cluster_client.pipeline().publish(base, "x")
    finally:
        pubsub.sunsubscribe()
        pubsub.close()
