"""flask-limiter on a Redis Cluster: which storage URI works with our redis-py, per strategy."""

from __future__ import annotations

import flask
import pytest
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address


def _app(storage_uri: str, strategy: str, prefix: str) -> flask.Flask:
    app = flask.Flask(__name__)
    app.config.update(
        RATELIMIT_STORAGE_URI=storage_uri,
        RATELIMIT_STRATEGY=strategy,
        RATELIMIT_KEY_PREFIX=prefix,
        RATELIMIT_SWALLOW_ERRORS=False,
        RATELIMIT_HEADERS_ENABLED=True,
    )
    limiter = Limiter(key_func=get_remote_address, app=app)

    @app.post("/api/ingest")
    @limiter.limit("3/minute")
    def ingest():
        return "ok"

    return app


STRATEGIES = ["moving-window", "fixed-window", "sliding-window-counter"]


def _cluster_uri(cluster) -> str:
    # limits' RedisClusterStorage: redis+cluster://host:port[,host:port...]; one node is enough.
    return "redis+cluster://" + cluster.urls[0].removeprefix("redis://")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_redis_cluster_uri_enforces_limits(redis_cluster, cluster_client, cluster_names, strategy):
    # Many client addresses: their counter keys spread over all three masters.
    client = _app(_cluster_uri(redis_cluster), strategy, f"{cluster_names}rl").test_client()
    for i in range(12):
        addr = {"REMOTE_ADDR": f"10.0.0.{i}"}
        codes = [client.post("/api/ingest", environ_base=addr).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429], (strategy, i, codes)
    owners = {
        cluster_client.get_node_from_key(k).name for k in cluster_client.scan_iter(f"*{cluster_names}rl*")
    }
    assert len(owners) >= 2, owners


def test_plain_redis_uri_to_one_node_fails_on_a_cluster(redis_cluster, cluster_names):
    # Today's default, RATELIMIT_STORAGE_URI = REDIS_URL (redis://node): a single-node client
    # gets MOVED (redis.exceptions.MovedError -> HTTP 500) for every counter whose slot another
    # master owns, and works for the rest: a partial failure that depends on the client address.
    client = _app(redis_cluster.urls[0], "moving-window", f"{cluster_names}rl").test_client()
    codes = {
        client.post("/api/ingest", environ_base={"REMOTE_ADDR": f"10.0.1.{i}"}).status_code for i in range(24)
    }
    assert codes == {200, 500}
