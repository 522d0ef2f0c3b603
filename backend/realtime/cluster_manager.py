"""A Socket.IO message queue on a Redis Cluster: python-socketio's RedisManager, but through
redis-py's RedisCluster and sharded Pub/Sub (SPUBLISH / SSUBSCRIBE) on one hash-tagged channel.

Why a subclass: the stock `socketio.RedisManager` (python-socketio 5.18) builds a plain
`redis.Redis.from_url(url)` -- a client of ONE node -- and uses PUBLISH/SUBSCRIBE. On a cluster
that still delivers (plain Pub/Sub is broadcast over the cluster bus to every node), but every
message is copied to every node, and the queue dies with the one node named in the URL (no slot
map, no failover). Here the channel is a shard channel: it lives on the master owning its slot,
SPUBLISH goes there only, and the subscriber follows the slot map (redis-py re-subscribes on the
new owner after a failover or reshard).

Only the three transport hooks change (`_redis_connect`, `_publish`, `_listen`); everything
else -- emit, rooms, callbacks, host ids -- is PubSubManager's. Use it in place of
Flask-SocketIO's `message_queue=`:

    mgr = ClusterRedisManager("redis://any-node:6379", channel="flask-socketio")
    socketio = SocketIO(app, client_manager=mgr)           # web node
    ClusterRedisManager(url, write_only=True).emit(...)      # an external process

The app factory (backend/web/app.py) uses it when MESSAGE_QUEUE and REDIS_CLUSTER are both set.
"""

from __future__ import annotations

import contextlib
import time

import socketio
from redis.cluster import RedisCluster


def cluster_channel(channel: str) -> str:
    """`channel` as a hash-tagged shard channel: ``{channel}`` unless it already has a tag, so
    the name's slot is explicit and other names can be co-located with it if ever needed."""
    return channel if "{" in channel and "}" in channel.split("{", 1)[1] else f"{{{channel}}}"


def cluster_url(url: str) -> str:
    """redis-py's RedisCluster.from_url takes redis:// or rediss://; also accept the
    `redis+cluster://` spelling limits/flask-limiter use, so one REDIS_URL style fits both."""
    for scheme in ("redis+cluster://", "rediss+cluster://"):
        if url.startswith(scheme):
            return scheme.replace("+cluster", "") + url[len(scheme) :]
    return url


class ClusterRedisManager(socketio.RedisManager):
    name = "redis-cluster"

    def __init__(self, url="redis://localhost:6379", channel="socketio", write_only=False, logger=None,
                 json=None, redis_options=None):  # fmt: skip
        super().__init__(
            url=cluster_url(url),
            channel=cluster_channel(channel),
            write_only=write_only,
            logger=logger,
            json=json,
            redis_options=redis_options,
        )

    def _redis_connect(self):
        """The publishing client. The listener builds its own (_subscribe): a publish that
        reconnects must not swap the subscription out from under it."""
        self.redis = RedisCluster.from_url(self.redis_url, **self.redis_options)
        self.connected = True

    def _subscribe(self):
        client = RedisCluster.from_url(self.redis_url, **self.redis_options)
        pubsub = client.pubsub()
        pubsub.ssubscribe(self.channel)
        self.pubsub = pubsub
        return pubsub

    def close(self):
        """Stop the listener (the stock managers have no way to): its thread leaves within the
        1 s get_sharded_message timeout. For tests and orderly shutdown."""
        self._closing = True

    def _publish(self, data):
        for retries_left in range(1, -1, -1):  # 2 attempts, as the stock manager
            try:
                if not self.connected:
                    self._redis_connect()
                return self.redis.spublish(self.channel, self.json.dumps(data))
            except Exception as exc:
                if retries_left > 0:
                    self._get_logger().error("Cannot publish to redis cluster... retrying: %s", exc)
                    self.connected = False
                else:
                    self._get_logger().error("Cannot publish to redis cluster... giving up: %s", exc)
                    break

    def _redis_listen_with_retries(self):
        retry_sleep = 1
        pubsub = None
        self._closing = False
        while not self._closing:
            try:
                if pubsub is None:
                    pubsub = self._subscribe()
                    retry_sleep = 1
                # ClusterPubSub.listen() reads the (unused) classic connection only; sharded
                # messages come from the per-node connections through get_sharded_message.
                # The timeout bounds each wait, so the loop never blocks a greenlet forever.
                started = time.monotonic()
                message = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    yield message
                elif time.monotonic() - started < 0.5:
                    # Back at once with nothing: a confirmation it skipped, or no node left to
                    # wait on (the subscription was dropped, e.g. by a reshard). Never spin:
                    # under eventlet a loop that does not wait starves every other greenlet.
                    if not pubsub.node_pubsub_mapping:
                        raise ConnectionError(f"no shard subscription to {self.channel!r} left")
                    time.sleep(0.05)
            except Exception as exc:
                self._get_logger().error("Cannot receive from redis cluster... retrying in %s secs: %s",
                                         retry_sleep, exc)  # fmt: skip
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
                pubsub = None
                time.sleep(retry_sleep)
                retry_sleep = min(retry_sleep * 2, 60)
        if pubsub is not None:
            pubsub.close()

    def _listen(self):
        channel = self.channel.encode("utf-8")
        for message in self._redis_listen_with_retries():
            name = message["channel"]
            if isinstance(name, str):
                name = name.encode("utf-8")
            if name == channel and message["type"] == "smessage" and "data" in message:
                yield message["data"]
