"""Redis clients: timeouts, one retry after a dropped connection, and a pool that waits (then
says it is exhausted) instead of failing at once."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
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
    url: str, *, max_connections: int | None = None, pool_timeout_s: float | None = None, **kwargs
) -> redis.Redis:
    """A client with timeouts, so a dead Redis shows up as an error instead of a hang.

    The pool blocks (up to `pool_timeout_s`, then PoolExhausted) instead of failing at once when
    every connection is busy: redis-py's default pool raises MaxConnectionsError immediately at
    100, which turned a burst of slow reads into 500s. A command that fails with a connection
    error is retried once on a fresh connection after a short backoff: after a Redis restart every
    pooled connection is dead, and the first use of each would otherwise fail. (The retry can
    repeat a command whose reply was lost mid-flight; fenced writes are not retried: redis-py
    refuses to retry a pipeline that WATCHes.) Timeouts are not retried: they already waited."""
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
