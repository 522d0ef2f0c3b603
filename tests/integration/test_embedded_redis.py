"""The embedded server is a current one and is configured for Pub/Sub bursts."""

from __future__ import annotations

import redis

from backend.embedded_redis import find_redis_server, server_version


def test_embedded_server_is_redis_7_or_newer(r):
    # The stream transport reads XINFO's entries-read and XAUTOCLAIM's deleted ids (Redis 7).
    major = int(r.info("server")["redis_version"].split(".")[0])
    assert major >= 7, r.info("server")["redis_version"]
    assert server_version(find_redis_server())[0] >= 7


def test_pubsub_output_buffer_sized_for_bursts(r: redis.Redis):
    limits = r.config_get("client-output-buffer-limit")["client-output-buffer-limit"].split()
    pubsub = limits[limits.index("pubsub") + 1 : limits.index("pubsub") + 4]
    assert pubsub == [str(256 << 20), str(128 << 20), "60"]
