"""The benchmark's events: the generator's `mixed` traffic, with ids the clients can check.

Every event carries ``id = <tag><key>`` where ``key = step << 40 | publisher << 32 | index``, so a
client can tell which step and publisher an event came from and check that it saw indexes
0..n-1 of every publisher exactly once. Fan-out events also carry ``"pt"``: the publisher's
``time.time()`` right before the PUBLISH pipeline that sent it (one of the up to four extra
scalar keys the contract tolerates and keeps), so latency is measured publish -> client receipt.
"""

from __future__ import annotations

import orjson

from generator.traffic import TrafficModel

STEP_SHIFT = 40
PUB_SHIFT = 32
INDEX_MASK = (1 << PUB_SHIFT) - 1
PUB_MASK = (1 << (STEP_SHIFT - PUB_SHIFT)) - 1


def make_key(step: int, pub: int, index: int) -> int:
    return (step << STEP_SHIFT) | (pub << PUB_SHIFT) | index


def split_key(key: int) -> tuple[int, int, int]:
    return key >> STEP_SHIFT, (key >> PUB_SHIFT) & PUB_MASK, key & INDEX_MASK


class Templates:
    """Pre-encoded event bodies without ts/id/pt; an event is one bytes %-format away."""

    def __init__(self, seed: int, n: int = 4096):
        model = TrafficModel("mixed", seed=seed, burst_every_s=0.0, id_prefix="t-")
        bodies = []
        for event in model.events(n, 1_000_000.0, 1_000_010.0):
            body = {k: v for k, v in event.items() if k not in ("ts", "id")}
            bodies.append(orjson.dumps(body)[:-1])  # without the closing brace
        self.bodies = bodies

    def encode(self, i: int, ts: float, event_id: str, pt: float | None) -> bytes:
        body = self.bodies[i % len(self.bodies)]
        if pt is None:
            return b'%s,"ts":%.6f,"id":"%s"}' % (body, ts, event_id.encode())
        return b'%s,"ts":%.6f,"id":"%s","pt":%.6f}' % (body, ts, event_id.encode(), pt)
