"""The benchmark's events: the generator's `mixed` traffic, with ids the clients can check.

Every event carries ``id = <tag><key>`` where ``key = step << 40 | publisher << 32 | index``, so a
client can tell which step and publisher an event came from and check that it saw indexes
0..n-1 of every publisher exactly once. Fan-out events also carry ``"pt"``: the publisher's
``time.time()`` right before the PUBLISH pipeline that sent it (one of the up to four extra
scalar keys the contract tolerates and keeps), so latency is measured publish -> client receipt.
"""

from __future__ import annotations

import time

import orjson

from generator.traffic import PROFILES, TrafficModel

STEP_SHIFT = 40
PUB_SHIFT = 32
INDEX_MASK = (1 << PUB_SHIFT) - 1
PUB_MASK = (1 << (STEP_SHIFT - PUB_SHIFT)) - 1


def make_key(step: int, pub: int, index: int) -> int:
    return (step << STEP_SHIFT) | (pub << PUB_SHIFT) | index


def split_key(key: int) -> tuple[int, int, int]:
    return key >> STEP_SHIFT, (key >> PUB_SHIFT) & PUB_MASK, key & INDEX_MASK


# The generator's profiles: its mixed traffic, and the original design's producer.
SHAPES = PROFILES


class Templates:
    """Pre-encoded event bodies without ts/id/pt; an event is one bytes %-format away.

    Shapes:
    - `mixed`: the generator's traffic (value objects, tags, source; about 210 bytes an event),
      with ts in unix seconds;
    - `original`: the original design's producer, `{"metric", "value", "ts"}` with its five
      metrics' value objects and ts in ISO-8601 without a zone (about 130 bytes with the id and
      pt the clients need)."""

    def __init__(self, seed: int, n: int = 4096, shape: str = "mixed"):
        model = TrafficModel(shape, seed=seed, burst_every_s=0.0, id_prefix="t-")
        bodies = []
        for event in model.events(n, 1_000_000.0, 1_000_010.0):
            body = {k: v for k, v in event.items() if k not in ("ts", "id")}
            bodies.append(orjson.dumps(body)[:-1])  # without the closing brace
        self.bodies = bodies
        self.iso = shape == "original"
        self._second = -1
        self._prefix = b""

    def _ts(self, ts: float) -> bytes:
        if not self.iso:
            return b"%.6f" % ts
        sec = int(ts)
        if sec != self._second:  # one strftime a second, not one an event
            self._second = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
        return b'"%s.%06d"' % (self._prefix, int((ts - sec) * 1_000_000))

    def encode(self, i: int, ts: float, event_id: str, pt: float | None) -> bytes:
        body = self.bodies[i % len(self.bodies)]
        if pt is None:
            return b'%s,"ts":%s,"id":"%s"}' % (body, self._ts(ts), event_id.encode())
        return b'%s,"ts":%s,"id":"%s","pt":%.6f}' % (body, self._ts(ts), event_id.encode(), pt)
