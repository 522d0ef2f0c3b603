"""The worker's write script (backend/storage/scripts.py, WRITE_BATCH_LUA) on a Redis Cluster, unchanged:
it declares every key it touches in KEYS, so it runs as soon as all of them share a hash tag --
and is refused as the keys are named today (each in its own slot)."""

from __future__ import annotations

import time

import pytest
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from backend.core.aggregate import BucketDelta
from backend.storage.keys import Keys
from backend.storage.store import Store
from tests.cluster_fixture import node_clients


def _store(client: RedisCluster, keys: Keys) -> Store:
    return Store(
        client, keys, recent_max=100, retention_s=600, dead_letter_max=10, recent_per_metric=5, history_s=60
    )


def _batch(store: Store, fence_key: str):
    start = int(time.time()) // 10 * 10
    events = [
        {"metric": "cpu", "value": 0.5, "ts": "2026-01-01T00:00:00.000Z", "id": f"e{i}"} for i in range(3)
    ]
    store.redis.set(fence_key, "tok")
    return store.write_batch(
        events,
        {(10, start): BucketDelta(incr={"cpu|n": 3})},
        [{"raw": "x", "reason": "bad_json", "time": 0}],
        received=4,
        fence=(fence_key, "tok"),
        new_metrics=["cpu"],
    )


def test_todays_key_names_span_slots_and_the_script_is_refused(cluster_client, cluster_names):
    keys = Keys(prefix=f"{cluster_names}:", recent=f"{cluster_names}:recent")
    names = [keys.recent, keys.rejected, keys.stats, keys.seq, keys.worker_lease, keys.metrics, keys.history]
    assert len({cluster_client.keyslot(k) for k in names}) > 1
    store = _store(cluster_client, keys)
    with pytest.raises(RedisClusterException, match="same key slot"):
        _batch(store, keys.worker_lease)
    # The lease renewal script too: lease + heartbeat are two slots.
    with pytest.raises(RedisClusterException, match="same key slot"):
        store.renew_lease("tok", 1000)


def test_one_hash_tag_per_partition_is_enough(redis_cluster, cluster_client, cluster_names):
    # Every name the script touches under one tag: KEY_PREFIX and RECENT_KEY carry it.
    tag = f"{{{cluster_names}:0}}"
    keys = Keys(prefix=f"pb:{tag}:", recent=f"pb:{tag}:recent")
    store = _store(cluster_client, keys)
    bodies = _batch(store, keys.worker_lease)
    assert len(bodies) == 3
    assert cluster_client.llen(keys.recent) == 3
    assert cluster_client.llen(keys.recent_metric("cpu")) == 3
    assert cluster_client.hget(keys.stats, "accepted") == "3"
    assert cluster_client.sismember(keys.metrics, "cpu")
    assert cluster_client.xlen(keys.history) == 1
    assert store.renew_lease("tok", 1000)
    # ... and all of it lives on one master.
    holders = []
    for node in node_clients(redis_cluster):
        holders.append(node.dbsize())
        node.close()
    assert sorted(holders)[:2] == [0, 0], holders
