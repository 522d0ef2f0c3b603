"""A real 3-master Redis Cluster for tests (backend/cli/embedded_cluster.py).

tests/conftest.py loads these fixtures as a plugin, so every module shares one cluster. The cluster is session-scoped: forming one costs ~2 s (the server's own 2 s writable delay after
boot), so every test module of a session shares it; tests keep to keys and channels of their own
(see `cluster_names`), and `cluster_client` flushes every master before and after each test.
"""

from __future__ import annotations

import uuid

import pytest
import redis
from redis.cluster import RedisCluster

from backend.cli.embedded_cluster import EmbeddedCluster


@pytest.fixture(scope="session")
def redis_cluster():
    with EmbeddedCluster(masters=3) as cluster:
        yield cluster


def _flush(client: RedisCluster) -> None:
    # FLUSHALL goes to every primary (redis-py's default target for it).
    client.flushall()


@pytest.fixture
def cluster_client(redis_cluster):
    """A redis.cluster.RedisCluster built from ONE node's URL (it discovers the others)."""
    client = RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    _flush(client)
    yield client
    _flush(client)
    client.close()


@pytest.fixture
def cluster_names():
    """A hash-tag-free token for this test's keys and channels."""
    return f"t{uuid.uuid4().hex[:8]}"


def node_clients(cluster: EmbeddedCluster) -> list[redis.Redis]:
    """Plain (non-cluster) clients, one per node: to ask each node what it holds."""
    return [redis.Redis.from_url(url, decode_responses=True) for url in cluster.urls]
