"""When events fall due: the generator's rate control, pure and unit-tested.

:class:`generator.publisher.Generator` asks a :class:`Pacer` how many events to send now and
:func:`sleep_until` when to wake next.
"""

from __future__ import annotations

import math

TICK_S = 0.01  # batch interval at high rates: ~100 pipelines/s keeps per-event overhead low
MAX_BATCH = 1000  # events per pipeline, bounds memory and the time a stop waits for a batch
MAX_LAG_S = 1.0  # further behind schedule than this, skip the backlog instead of bursting it


class Pacer:
    """Deadline-based rate control: event k of the current schedule is due at anchor + k/rate.

    Counting against a fixed anchor rather than sleeping 1/rate after each send means sleep
    overshoot and publish time never accumulate into drift. When the sender falls further than
    `max_lag_s` behind (a stall, a slow machine, a rate above what we can reach) the backlog is
    skipped rather than sent in one burst, so consumers never see a catch-up spike.
    """

    def __init__(self, rate: float, now: float, max_batch: int = MAX_BATCH, max_lag_s: float = MAX_LAG_S):
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        self.rate = float(rate)
        self.max_batch = max_batch
        self.max_lag_s = max_lag_s
        self.anchor = now
        self.sent = 0  # since anchor
        self.skipped = 0  # lifetime events dropped by lag resets

    def owed(self, now: float) -> int:
        """Events due by `now` and not sent, uncapped (what an outage did not send)."""
        return max(0, math.floor((now - self.anchor) * self.rate + 1e-6) - self.sent)

    def due(self, now: float) -> int:
        """How many events to send now (at most max_batch; 0 if not yet due)."""
        # The epsilon absorbs float error, so waking exactly at next_due_at() always finds the
        # event due instead of spinning one more time on 0.99999 of it.
        owed = math.floor((now - self.anchor) * self.rate + 1e-6) - self.sent
        if owed > self.rate * self.max_lag_s + self.max_batch:
            self.skipped += owed
            self.reset(now)
            return 0
        return max(0, min(owed, self.max_batch))

    def record(self, n: int) -> None:
        self.sent += n

    def next_due_at(self) -> float:
        """Monotonic time at which the next event falls due."""
        return self.anchor + (self.sent + 1) / self.rate

    def set_rate(self, rate: float, now: float) -> None:
        # Re-anchor so the new rate applies from now on, not retroactively since the start.
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        self.rate = float(rate)
        self.reset(now)

    def reset(self, now: float) -> None:
        """Start a fresh schedule at `now` (after a pause, reconnect or rate change)."""
        self.anchor = now
        self.sent = 0


def sleep_until(now: float, next_due: float, last_batch: float, tick_s: float) -> float:
    """When the loop should wake to send next.

    If events are already owed, at once. Otherwise at the next due time, but never sooner than
    one tick after the last batch: at high rates that gathers ~rate*tick events per pipeline
    instead of paying a round trip per event.
    """
    if next_due <= now:
        return now
    return max(next_due, last_batch + tick_s)
