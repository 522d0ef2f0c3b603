"""The embedded server is a current one and is configured for Pub/Sub bursts."""

from __future__ import annotations

import signal
import threading

import redis

from backend.cli.embedded_redis import EmbeddedRedis, find_redis_server, server_version
from tests.helpers import wait_for


def test_embedded_server_is_redis_7_or_newer(r):
    # The stream transport reads XINFO's entries-read and XAUTOCLAIM's deleted ids (Redis 7).
    major = int(r.info("server")["redis_version"].split(".")[0])
    assert major >= 7, r.info("server")["redis_version"]
    assert server_version(find_redis_server())[0] >= 7


def test_pubsub_output_buffer_sized_for_bursts(r: redis.Redis):
    limits = r.config_get("client-output-buffer-limit")["client-output-buffer-limit"].split()
    pubsub = limits[limits.index("pubsub") + 1 : limits.index("pubsub") + 4]
    assert pubsub == [str(256 << 20), str(128 << 20), "60"]


def test_watch_restarts_a_dead_server_and_gives_up_on_a_crash_loop():
    with EmbeddedRedis() as server:
        gave_up: list[str] = []
        watcher = threading.Thread(
            target=server.watch,
            kwargs={"interval_s": 0.02, "max_restarts": 1, "window_s": 60, "on_give_up": gave_up.append},
            daemon=True,
        )
        watcher.start()
        first = server.process.pid
        server.process.send_signal(signal.SIGKILL)
        wait_for(lambda: server.restarts == 1 and server._answers(), message="restarted server answers")
        assert server.process.pid != first
        assert redis.Redis.from_url(server.url).ping()
        server.process.send_signal(signal.SIGKILL)  # the second death within the window
        wait_for(lambda: gave_up, message="gave up")
        assert "not restarting it again" in gave_up[0] and server.url in gave_up[0]
        watcher.join(timeout=5)
        assert not watcher.is_alive()


def test_watch_leaves_a_server_stopped_on_purpose_alone():
    with EmbeddedRedis() as server:
        watcher = threading.Thread(target=server.watch, kwargs={"interval_s": 0.02}, daemon=True)
        watcher.start()
        server.stop()
        server.start()  # what the fault tests do: an outage of their own making
        port = server.port
    watcher.join(timeout=5)
    assert not watcher.is_alive() and server.restarts == 0 and server.port == port
