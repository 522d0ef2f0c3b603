"""The worker lease: exactly one worker consumes at a time; the others are hot standbys.

A worker consumes only while it holds a lease in Redis, renewed with its heartbeat about once a
second (LEASE_TTL_MS long); a standby takes over within one TTL when the active one dies, and at
once when the holder is a process of this host that no longer exists (a crashed or restarted
worker's successor does not wait out its predecessor's lease).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid

import redis

from backend.storage.store import Store

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 1.0


def new_token() -> str:
    """host:pid:nonce. Hosts must have unique names per PID namespace, as containers do by default."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def dead_local_process(token: str) -> bool:
    """Whether a worker token names a process of this host that no longer exists."""
    host, _, rest = token.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # e.g. EPERM: it exists, as another user
    return False


class Lease:
    """One worker's hold on the lease, and the heartbeat that keeps it."""

    def __init__(self, store: Store, token: str, ttl_ms: int):
        self.store = store
        self.token = token
        self.ttl_ms = ttl_ms
        self.key = store.keys.worker_lease
        self._last_heartbeat = 0.0

    @property
    def fence(self) -> tuple[str, str]:
        """(lease key, token): a fenced write goes through only while the lease is still ours."""
        return self.key, self.token

    def acquire(self) -> bool:
        """Take the lease if it is free, ours, or held by a dead process of this host."""
        if self.store.acquire_lease(self.token, self.ttl_ms):
            return True
        holder = self.store.lease_holder()
        if holder is None or not dead_local_process(holder):
            return False
        if self.store.take_over_lease(holder, self.token, self.ttl_ms):
            log.warning(
                "worker %s took over the lease of %s, a process of this host that is gone", self.token, holder
            )
            return True
        return False

    def beat(self, now: float) -> None:
        """Renew now (e.g. right after subscribing: readiness on every node reads the heartbeat)."""
        self.store.renew_lease(self.token, self.ttl_ms)
        self._last_heartbeat = now

    def due(self, now: float) -> bool:
        return now - self._last_heartbeat >= HEARTBEAT_EVERY_S

    def keep(self, now: float) -> bool:
        """Renew about once a second (`due`); False when the lease is lost."""
        self._last_heartbeat = now
        if self.store.renew_lease(self.token, self.ttl_ms):
            return True
        log.warning("worker %s lost its lease; going back to standby", self.token)
        return False

    def release(self) -> None:
        with contextlib.suppress(redis.RedisError):  # Redis is gone: the lease expires by itself
            self.store.release_lease(self.token)
