"""Partitioned publishing for Pulseboard producers -- imports nothing from `backend`.

With ``INGEST_PARTITIONS=P`` every event belongs to one of P partitions, chosen from its
``metric`` alone, so all events of a metric reach the same worker in order. Each partition has
its own channel and stream, hash-tagged so that on a Redis Cluster everything of one partition
lives in one slot (one node) and sharded Pub/Sub (SPUBLISH) reaches only that node:

    >>> partition_of("cpu", 4)
    2
    >>> channel_for("metrics_channel", 2)
    'metrics_channel:{2}'
    >>> stream_for("metrics_stream", 2)
    'metrics_stream:{2}'

    import redis
    from producer import publish
    r = redis.Redis.from_url("redis://localhost:6379/0")
    publish(r, {"metric": "cpu", "value": 0.93}, partitions=4)   # PUBLISH metrics_channel:{2}

    from redis.cluster import RedisCluster
    rc = RedisCluster.from_url("redis://any-node:6379")
    publish(rc, {"metric": "cpu", "value": 0.93}, partitions=4)  # SPUBLISH metrics_channel:{2}

The hash is CRC-32 (the IEEE 802.3 / zlib / PNG polynomial, ``zlib.crc32``) of the metric's UTF-8
bytes, modulo P. It is defined by the standard, not by the interpreter: the same on every
process, platform and Python version (unlike ``hash()``, which is salted per process by
PYTHONHASHSEED). Any other language reproduces it with its CRC-32 (e.g. Go's
``crc32.ChecksumIEEE``, Java's ``java.util.zip.CRC32``, Node's ``zlib.crc32``).

Changing P moves most metrics to another partition (plain modulo, not consistent hashing):
P is a deployment setting that every producer and worker must agree on.

Names follow the existing configuration: REDIS_CHANNEL (default ``metrics_channel``) and
INGEST_STREAM (default ``metrics_stream``) are used as given, without the KEY_PREFIX that
backend/keys.py puts on other keys. With P = 1 (the default) publish() keeps today's single,
untagged channel, so producers using this module interoperate with unpartitioned workers.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = ["channel_for", "is_cluster", "partition_of", "publish", "stream_for"]

DEFAULT_CHANNEL = "metrics_channel"
DEFAULT_STREAM = "metrics_stream"


def partition_of(metric: str, partitions: int) -> int:
    """The partition (0 .. partitions-1) of events of `metric`: CRC-32 of its UTF-8 bytes mod P.

    >>> partition_of("cpu", 1)
    0
    >>> [partition_of(m, 8) for m in ("cpu", "memory", "latency_ms")]
    [6, 5, 7]
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    if partitions == 1:
        return 0
    return zlib.crc32(metric.encode("utf-8")) % partitions


def _tagged(base: str, k: int) -> str:
    if "{" in base or "}" in base:
        # Redis hashes the FIRST {...} of a name: a brace in the base would override ours.
        raise ValueError(f"a base name must not contain braces (it would change the hash tag): {base!r}")
    return f"{base}:{{{int(k)}}}"


def channel_for(base: str, k: int) -> str:
    """Pub/Sub channel of partition `k`: ``<base>:{k}`` (the ``{k}`` hash tag puts it in the same
    cluster slot as the partition's stream and keys).

    >>> channel_for("metrics_channel", 0)
    'metrics_channel:{0}'
    """
    return _tagged(base, k)


def stream_for(base: str, k: int) -> str:
    """Ingest stream of partition `k`: ``<base>:{k}``.

    >>> stream_for("metrics_stream", 3)
    'metrics_stream:{3}'
    """
    return _tagged(base, k)


def is_cluster(client: Any) -> bool:
    """Whether `client` is a redis-py cluster client (or one of its pipelines)."""
    try:
        from redis.cluster import ClusterPipeline, RedisCluster
    except ImportError:  # pragma: no cover - redis-py without cluster support
        return False
    return isinstance(client, RedisCluster | ClusterPipeline)


def _metric(event: Mapping[str, Any]) -> str:
    metric = event.get("metric") if isinstance(event, Mapping) else None
    # An event without a string metric is still delivered (to partition 0, via ""), so the
    # worker that owns it can dead-letter it with a reason instead of it vanishing here.
    return metric if isinstance(metric, str) else ""


def publish(
    redis_client: Any,
    event_dict: Mapping[str, Any],
    partitions: int,
    channel: str = DEFAULT_CHANNEL,
    *,
    sharded: bool | None = None,
) -> int:
    """Publish one event's JSON on its partition's channel; returns what Redis returns (the
    number of subscribers that received it: 0 means no worker is listening and it is lost).

    `partitions` = 1 publishes on `channel` itself (today's layout) unless sharded; otherwise
    on ``channel_for(channel, partition_of(metric, partitions))``. SPUBLISH (sharded Pub/Sub, Redis
    >= 7) is used when `sharded` is true, or when it is None (the default) and `redis_client` is
    a redis-py RedisCluster: a sharded message goes to the slot's node only, where a plain
    PUBLISH on a cluster is broadcast to every node. Works with a pipeline too (then returns
    the pipeline). A redis-py ClusterPipeline (redis-py 8.1) accepts SPUBLISH but refuses PUBLISH
    ("blocked when running redis in cluster mode"), so keep `sharded` at its default there.
    Raises ValueError for NaN or infinite numbers: they have no JSON spelling.
    """
    if sharded is None:
        sharded = is_cluster(redis_client)
    k = partition_of(_metric(event_dict), partitions)
    # A sharded message reaches SSUBSCRIBE only: on a cluster even one partition's channel is the
    # tagged one, which the worker of partition 0 SSUBSCRIBEs to (it SUBSCRIBEs `channel` too).
    name = channel if partitions == 1 and not sharded else channel_for(channel, k)
    payload = json.dumps(event_dict, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if sharded:
        return redis_client.spublish(name, payload)
    return redis_client.publish(name, payload)
