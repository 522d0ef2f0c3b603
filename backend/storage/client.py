"""Redis clients: timeouts, one retry after a dropped connection, and a pool that waits (then
says it is exhausted) instead of failing at once; with REDIS_CLUSTER a redis-py RedisCluster."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from backend.config import current


class PoolExhausted(redis.ConnectionError):
    """Every pooled connection stayed busy for the pool's wait timeout: the node is overloaded
    (answered 503 with Retry-After), not Redis down."""


class _BlockingPool(redis.BlockingConnectionPool):
    # redis-py raises a bare ConnectionError("No connection available.") for a wait that timed
    # out, indistinguishable by type from Redis being down; callers answer the two differently.
    def get_connection(self, *args, **kwargs):
        try:
            return super().get_connection(*args, **kwargs)
        except redis.ConnectionError as exc:
            if str(exc) == "No connection available.":
                raise PoolExhausted(
                    f"all {self.max_connections} Redis connections busy for {self.timeout}s"
                ) from exc
            raise


def connect(
    url: str,
    *,
    max_connections: int | None = None,
    pool_timeout_s: float | None = None,
    cluster: bool | None = None,
    **kwargs,
) -> redis.Redis | RedisCluster:
    """A client with timeouts, so a dead Redis shows up as an error instead of a hang.

    The pool blocks (up to `pool_timeout_s`, then PoolExhausted) instead of failing at once when
    every connection is busy: redis-py's default pool raises MaxConnectionsError immediately at
    100, which turned a burst of slow reads into 500s. A command that fails with a connection
    error is retried once on a fresh connection after a short backoff: after a Redis restart every
    pooled connection is dead, and the first use of each would otherwise fail. (The retry can
    repeat a command whose reply was lost mid-flight; fenced writes are not retried: redis-py
    refuses to retry a pipeline that WATCHes.) Timeouts are not retried: they already waited.

    `cluster` (default: the REDIS_CLUSTER setting) true: a `redis.cluster.RedisCluster` built from
    `url` (any one node; it discovers the rest), see connect_cluster."""
    if cluster is None:
        cluster = current().REDIS_CLUSTER
    if cluster:
        return connect_cluster(url, max_connections=max_connections, **kwargs)
    options = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": 5.0,
        "health_check_interval": 15,
        "retry_on_timeout": False,
        "retry": Retry(
            ExponentialBackoff(cap=0.5, base=0.05), retries=1, supported_errors=(redis.ConnectionError,)
        ),
    }
    options.update(kwargs)
    pool = _BlockingPool.from_url(
        url,
        max_connections=max_connections or current().REDIS_MAX_CONNECTIONS,
        timeout=pool_timeout_s if pool_timeout_s is not None else current().REDIS_POOL_TIMEOUT_S,
        **options,
    )
    return redis.Redis(connection_pool=pool)


def connect_cluster(url: str, *, max_connections: int | None = None, **kwargs) -> RedisCluster:
    """A RedisCluster client from one node's URL, with connect() timeouts and retry.

    Differences from connect(), all redis-py's (8.1):
    - No blocking pool: every node has a plain pool of `max_connections` (REDIS_MAX_CONNECTIONS)
      that raises at once when exhausted, not PoolExhausted after REDIS_POOL_TIMEOUT_S. (A
      pool error surfacing as a ConnectionError would also make the cluster client drop the node
      and re-read the slot map, so our _BlockingPool is not plugged in.)
    - `retry` is the cluster client's: after a ConnectionError, TimeoutError or ClusterDownError it
      re-reads the slot map and runs the command again (once here, after the same short backoff);
      unlike connect(), a timeout is retried too (the node may have failed over). Per-node
      connections never retry. MOVED/ASK redirects are followed regardless.
    - `health_check_interval` is not a cluster option (redis-py drops it); db must be 0, so a
      `/<db>` path in `url` is dropped.
    `url` may also be spelt `redis+cluster://` (the flask-limiter form)."""
    kwargs.pop("pool_timeout_s", None)
    kwargs.pop("health_check_interval", None)
    options = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": 5.0,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
        "max_connections": max_connections or current().REDIS_MAX_CONNECTIONS,
    }
    options.update(kwargs)
    return RedisCluster.from_url(cluster_node_url(url), **options)


def cluster_node_url(url: str) -> str:
    """`url` as redis-py's RedisCluster.from_url wants it: redis:// or rediss://, no database
    (a cluster has db 0 only); `redis+cluster://` is accepted (its first host)."""
    for scheme in ("redis+cluster://", "rediss+cluster://"):
        if url.startswith(scheme):
            url = scheme.replace("+cluster", "") + url[len(scheme) :].split(",", 1)[0]
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))


def limiter_storage_uri(url: str) -> str:
    """flask-limiter (limits) storage URI for a cluster: `redis+cluster://[user:pass@]host:port`.
    limits has no rediss+cluster scheme (TLS goes in RATELIMIT_STORAGE_OPTIONS)."""
    parts = urlsplit(cluster_node_url(url))
    return f"redis+cluster://{parts.netloc}"


def is_cluster(client) -> bool:
    return isinstance(client, RedisCluster)


def node_client(cluster: RedisCluster, key: str | None = None, **kwargs) -> redis.Redis:
    """A plain redis.Redis to one node of `cluster`: the master owning `key`'s slot (a shard
    channel for SSUBSCRIBE, a stream for blocking XREADGROUP on a connection of one's own), or
    any node for `key` None (plain SUBSCRIBE: classic Pub/Sub is broadcast to every node).

    Same connection options as the cluster's nodes (password, TLS, timeouts) unless `kwargs`
    override them. It does not follow the slot if it moves (failover, reshard): callers
    reconnect on errors and must then ask again."""
    node = cluster.get_node_from_key(key) if key is not None else cluster.get_default_node()
    base = dict(cluster.nodes_manager.connection_kwargs)
    for k in ("host", "port", "retry", "redis_connect_func", "cache", "connection_pool_class"):
        base.pop(k, None)
    base.pop("oss_cluster_maint_notifications_handler", None)  # bound to the cluster client
    base.update(kwargs)
    return redis.Redis(host=node.host, port=node.port, **base)


def confirm_subscriptions(pubsub, count: int, timeout_s: float) -> None:
    """Wait until Redis has confirmed `count` (S)SUBSCRIBEs on `pubsub`: only then is what is
    published delivered. Raises redis.TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    confirmed = 0
    while confirmed < count:
        message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
        if message is not None and message.get("type") in ("subscribe", "ssubscribe"):
            confirmed += 1
        elif time.monotonic() >= deadline:
            raise redis.TimeoutError(f"no confirmation of {count} subscription(s) within {timeout_s}s")
