"""The open/close state machine of an alert condition, on an explicit clock.

A condition opens after it has held at every evaluation for ``for_s`` seconds, and closes after it
has been false at every evaluation for ``clear_s`` seconds. One evaluation that flips the other
way restarts the timer, so a condition hovering around its threshold cannot flap.
"""

from __future__ import annotations

OK, PENDING, FIRING = "ok", "pending", "firing"


class Hysteresis:
    __slots__ = ("clear_s", "for_s", "since", "state")

    def __init__(self, for_s: float, clear_s: float):
        if for_s < 0 or clear_s < 0:
            raise ValueError("for_s and clear_s must be >= 0")
        self.for_s = for_s
        self.clear_s = clear_s
        self.state = OK
        # PENDING: when the condition became true. FIRING: when it became false (None while true).
        self.since: float | None = None

    @property
    def firing(self) -> bool:
        return self.state == FIRING

    def step(self, t: float, active: bool) -> str | None:
        """Feed the condition's value at time `t` (non-decreasing); returns "open", "close" or None."""
        if self.state == OK:
            if not active:
                return None
            self.state, self.since = PENDING, t
        if self.state == PENDING:
            if not active:
                self.state, self.since = OK, None
                return None
            if t - self.since >= self.for_s:
                self.state, self.since = FIRING, None
                return "open"
            return None
        # FIRING
        if active:
            self.since = None
            return None
        if self.since is None:
            self.since = t
        if t - self.since >= self.clear_s:
            self.state, self.since = OK, None
            return "close"
        return None

    def force_firing(self) -> None:
        """Adopt an alert that is already open (e.g. found in Redis after a restart)."""
        self.state, self.since = FIRING, None

    def reset(self) -> None:
        self.state, self.since = OK, None
