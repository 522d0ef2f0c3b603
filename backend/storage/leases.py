"""The worker lease: one active worker at a time, hot standbys, heartbeats and status reports."""

from __future__ import annotations

import time

import orjson
import redis

from backend.storage.keys import Keys
from backend.storage.scripts import RELEASE_LUA, RENEW_LUA, TAKEOVER_LUA


class Leases:
    """Mixed into Store: the lease commands, on the store's client and keys."""

    redis: redis.Redis
    keys: Keys

    def _init_leases(self) -> None:
        self._renew = self.redis.register_script(RENEW_LUA)
        self._release = self.redis.register_script(RELEASE_LUA)
        self._takeover = self.redis.register_script(TAKEOVER_LUA)

    def acquire_lease(self, token: str, ttl_ms: int) -> bool:
        """Take the worker lease if free (or already ours); also marks a worker alive."""
        taken = self.redis.set(self.keys.worker_lease, token, nx=True, px=ttl_ms)
        return bool(taken) or self.renew_lease(token, ttl_ms)

    def renew_lease(self, token: str, ttl_ms: int) -> bool:
        """Extend the lease if we still hold it, and refresh the heartbeat, in one round trip."""
        return bool(
            self._renew(
                keys=[self.keys.worker_lease, self.keys.worker_heartbeat],
                args=[token, ttl_ms, f"{time.time():.3f}"],
            )
        )

    def lease_holder(self) -> str | None:
        holder = self.redis.get(self.keys.worker_lease)
        return holder.decode() if holder is not None else None

    def take_over_lease(self, dead_token: str, token: str, ttl_ms: int) -> bool:
        """Replace `dead_token` (a holder known to be dead) by ours, if it still holds the lease."""
        return bool(self._takeover(keys=[self.keys.worker_lease], args=[dead_token, token, ttl_ms]))

    def report_worker(self, token: str, status: dict) -> None:
        """Publish a worker's status for /api/health (any node); stale entries are pruned by readers."""
        self.redis.hset(self.keys.workers, token, orjson.dumps({**status, "reported": time.time()}))

    def workers(self, stale_after_s: float) -> list[dict]:
        """The workers that reported within `stale_after_s`; forgets the others."""
        raw = self.redis.hgetall(self.keys.workers)
        now = time.time()
        out, stale = [], []
        for token, body in raw.items():
            try:
                status = orjson.loads(body)
            except orjson.JSONDecodeError:
                status = {}
            if now - float(status.get("reported", 0)) > stale_after_s:
                stale.append(token)
            else:
                out.append(status)
        if stale:
            self.redis.hdel(self.keys.workers, *stale)
        return sorted(out, key=lambda w: (w.get("role") != "active", w.get("token", "")))

    def release_lease(self, token: str) -> None:
        self._release(keys=[self.keys.worker_lease], args=[token])

    def worker_alive(self) -> bool:
        """Whether every partition has a worker holding it (one heartbeat key per partition)."""
        parts = getattr(self, "parts", None) or [self.keys]
        if len(parts) == 1:
            return bool(self.redis.exists(parts[0].worker_heartbeat))
        pipe = self.redis.pipeline(transaction=False)
        for keys in parts:
            pipe.exists(keys.worker_heartbeat)
        return all(pipe.execute())
