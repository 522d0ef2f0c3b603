"""How many partitions this worker process may hold: its fair share of the live workers.

Every worker process reports itself about once a second (the `workers` hash, which
/api/health lists). With N live processes and P partitions each may hold ceil(P / N): a process
that joins makes the others hand their highest partitions over (each consumer checks at its
heartbeat), and when one dies its reports go stale within LEASE_TTL_MS, the share of the others
grows, and their standby consumers take its partitions as its leases expire.
"""

from __future__ import annotations

import math
import threading


class Shares:
    def __init__(self, partitions: int):
        self.partitions = partitions
        self.target = partitions  # until the first count of live workers says otherwise
        self.held: set[int] = set()
        self._lock = threading.Lock()
        self.on_change = None  # the process's report: /api/health shows a new holder at once

    def set_live_workers(self, live: int) -> None:
        self.target = math.ceil(self.partitions / max(1, live))

    def may_take(self, k: int) -> bool:
        with self._lock:
            return k in self.held or len(self.held) < self.target

    def took(self, k: int) -> None:
        with self._lock:
            self.held.add(k)

    def gave_up(self, k: int) -> None:
        with self._lock:
            if k not in self.held:
                return
            self.held.discard(k)
        self.changed()

    def changed(self) -> None:
        """A consumer became active or stood down: report now (in the consumer's thread, before
        its heartbeat makes the node ready)."""
        if self.on_change is not None:
            self.on_change()

    def should_release(self, k: int) -> bool:
        """Whether partition k is one of the highest held beyond the share: those go first, so
        processes agree on which to hand over without talking to each other."""
        with self._lock:
            extra = len(self.held) - self.target
            return extra > 0 and k in sorted(self.held)[-extra:]
