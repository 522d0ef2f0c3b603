"""A broadcaster for tests that run a worker or consumer in the test process."""

from __future__ import annotations

from backend.realtime.broadcast import Broadcaster


class Collect(Broadcaster):
    """A broadcaster that keeps what the worker hands over (this process has no clients)."""

    def __init__(self):
        super().__init__(None, channel=None)
        self.batches: list[list[bytes]] = []

    def publish(self, encoded):
        self.batches.append(encoded)
