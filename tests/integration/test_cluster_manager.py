"""Socket.IO message queues on a Redis Cluster: two server managers in one process, one emits,
the other's listener receives (as two web nodes would)."""

from __future__ import annotations

import subprocess
import sys
import time

import socketio

from backend.realtime.cluster_manager import ClusterRedisManager, cluster_channel, cluster_url
from tests.helpers import wait_for


def _server(manager) -> socketio.Server:
    server = socketio.Server(async_mode="threading", client_manager=manager)
    received: list[dict] = []
    original = manager._handle_emit

    def spy(message):
        received.append(message)
        return original(message)

    manager._handle_emit = spy
    server.received = received
    # What the server does on its first client connection: start the manager's listener thread.
    server.manager_initialized = True
    manager.initialize()
    return server


def test_names():
    assert cluster_channel("flask-socketio") == "{flask-socketio}"
    assert cluster_channel("sio:{3}") == "sio:{3}"
    assert cluster_url("redis+cluster://h:1") == "redis://h:1"
    assert cluster_url("redis://h:1/0") == "redis://h:1/0"


def test_cluster_manager_delivers_an_emit_to_the_other_server(redis_cluster, cluster_client, cluster_names):
    channel = f"{cluster_names}-sio"
    a_mgr = ClusterRedisManager(redis_cluster.urls[0], channel=channel)
    b_mgr = ClusterRedisManager(redis_cluster.urls[1], channel=channel)
    writer = ClusterRedisManager(redis_cluster.urls[2], channel=channel, write_only=True)
    a, b = _server(a_mgr), _server(b_mgr)
    shard = cluster_channel(channel)
    owner = cluster_client.get_node_from_key(shard)
    try:
        wait_for(
            lambda: cluster_client.pubsub_shardnumsub(shard, target_nodes=owner)[0][1] == 2,
            message="both managers subscribed to the shard channel",
        )
        a.emit("tick", {"n": 1})
        wait_for(lambda: b.received, message="B receives A's emit")
        assert b.received[0]["event"] == "tick" and b.received[0]["data"] == [{"n": 1}]
        assert b.received[0]["host_id"] == a_mgr.host_id
        # A's own message comes back to it through the queue: skipped by host id, not re-emitted.
        assert a.received[0]["host_id"] == a_mgr.host_id and len(a.received) == 1
        # An external (write-only) emitter reaches both servers.
        writer.emit("alert", {"id": "x"}, namespace="/")
        wait_for(lambda: any(m["event"] == "alert" for m in b.received), message="B gets writer's emit")
        wait_for(lambda: any(m["event"] == "alert" for m in a.received), message="A gets writer's emit")
    finally:
        a_mgr.close()
        b_mgr.close()
    # close() ends the listener threads (the stock manager has no way to stop them).
    wait_for(lambda: not a_mgr.thread.is_alive() and not b_mgr.thread.is_alive(), message="listeners end")


# Run in a child process: the stock manager's listener thread has no way to stop, and one left
# behind logs reconnection errors into a closed stream once the session's cluster is gone.
_STOCK_CHECK = """
import sys, time, redis, socketio
url_a, url_b, channel = sys.argv[1:4]
got = []
def server(url):
    m = socketio.RedisManager(url, channel=channel)
    s = socketio.Server(async_mode="threading", client_manager=m)
    orig = m._handle_emit
    m._handle_emit = lambda msg: (got.append(msg), orig(msg))[1]
    s.manager_initialized = True
    m.initialize()
    return s
a, b = server(url_a), server(url_b)
node_b = redis.Redis.from_url(url_b)
deadline = time.monotonic() + 10
while node_b.pubsub_numsub(channel)[0][1] < 1 and time.monotonic() < deadline:
    time.sleep(0.02)
a.emit("tick", {"n": 2})
while not got and time.monotonic() < deadline:
    time.sleep(0.02)
print(got[0]["data"] if got else "nothing")
"""


def test_stock_redis_manager_works_through_one_node_by_broadcast(redis_cluster, cluster_names):
    # socketio.RedisManager with a node URL: a plain client of that node, PUBLISH/SUBSCRIBE.
    # Delivery works because the cluster broadcasts plain Pub/Sub to every node.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _STOCK_CHECK,
            redis_cluster.urls[0],
            redis_cluster.urls[1],
            f"{cluster_names}-stock",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.strip() == "[{'n': 2}]", out.stderr[-2000:]


def test_a_publish_that_reconnects_leaves_the_listener_subscribed(
    redis_cluster, cluster_client, cluster_names
):
    """The publisher and the listener used to share `self.pubsub`: a publish that (re)connected
    (lazily, or after an error) replaced it with a fresh pubsub holding no subscription, and the
    listener then polled that one -- returning at once, forever: lost messages, and under eventlet
    a loop that never yields, which froze the web node (seen with `pulseboard serve` + a worker)."""
    channel = f"{cluster_names}-sio"
    mgr = ClusterRedisManager(redis_cluster.urls[0], channel=channel)
    writer = ClusterRedisManager(redis_cluster.urls[1], channel=channel, write_only=True)
    server = _server(mgr)
    shard = cluster_channel(channel)
    owner = cluster_client.get_node_from_key(shard)
    calls = []
    real = None
    try:
        wait_for(
            lambda: cluster_client.pubsub_shardnumsub(shard, target_nodes=owner)[0][1] == 1,
            message="the listener subscribed",
        )
        mgr.connected = False  # the next publish reconnects
        server.emit("tick", {"n": 1})
        real = mgr.pubsub.get_sharded_message

        def counting(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)

        mgr.pubsub.get_sharded_message = counting
        writer.emit("alert", {"id": "x"}, namespace="/")
        wait_for(lambda: any(m["event"] == "alert" for m in server.received), message="still receives")
        n = len(calls)
        time.sleep(1.0)
        assert len(calls) - n <= 3  # waits (1 s per call), does not spin
    finally:
        mgr.close()
    wait_for(lambda: not mgr.thread.is_alive(), message="listener ends")
