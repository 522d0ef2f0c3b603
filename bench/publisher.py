"""Publisher helper: pipelined PUBLISH (or, with --stream, XADD), a pre-encoded burst or paced.

The pipelines are written as raw RESP on a plain socket (see RawConnection), so that the
publisher takes as little CPU as possible from the server it is measuring.

    python -m bench.publisher --redis-url URL --channel CH --tag TAG --pub P [--stream KEY]

With ``--stream KEY`` every event is ``XADD KEY MAXLEN ~ N * event <json>`` instead of a PUBLISH
on the channel, for measuring the server with INGEST_TRANSPORT=stream.

Commands (JSON lines on stdin):
  {"cmd": "prepare", "mode": "burst", "count": N, "step": S, "spread_s": 0}
      encode N events up front, so the burst measures Redis and the consumer, not our encoder.
      With spread_s > 0 each event's ts is drawn uniformly from the spread_s seconds before
      now (a backlog or history import) instead of now (live traffic).
  {"cmd": "prepare", "mode": "paced", "rate": R, "duration": D, "step": S}
      publish round(R*D) events on a fixed schedule (deadline pacing, no catch-up skipping: an
      event that is late is sent late, and the reply says how far behind we fell).
  {"cmd": "go"}  -> {"published", "first_pub", "last_pub", "elapsed_s", "rate", "max_behind_s"}
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import time
from urllib.parse import urlparse

from bench.events import SHAPES, Templates, make_key
from bench.proto import reply, serve

BURST_BATCH = 1000  # events per pipeline in a burst
PACED_TICK_S = 0.002  # at most one pipeline per tick when paced
PACED_MAX_BATCH = 2000


def pack_publish(channel: bytes, payloads: list[bytes]) -> bytes:
    """PUBLISH commands in RESP, ready to write to the socket as one pipeline."""
    head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(channel), channel)
    return b"".join(b"%s$%d\r\n%s\r\n" % (head, len(p), p) for p in payloads)


def pack_xadd(stream: bytes, maxlen: int, payloads: list[bytes]) -> bytes:
    """XADD commands in RESP (MAXLEN ~ maxlen unless 0, field "event"), ready to write as one pipeline."""
    if maxlen > 0:
        n = b"%d" % maxlen
        head = b"*8\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$6\r\nMAXLEN\r\n$1\r\n~\r\n$%d\r\n%s\r\n" % (
            len(stream),
            stream,
            len(n),
            n,
        )
    else:
        head = b"*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n" % (len(stream), stream)
    head += b"$1\r\n*\r\n$5\r\nevent\r\n"
    return b"".join(b"%s$%d\r\n%s\r\n" % (head, len(p), p) for p in payloads)


class RawConnection:
    """A Redis connection that writes pre-packed pipelines and counts the replies.

    redis-py's Pipeline costs a few microseconds of Python per command, and on a 2-core machine
    every microsecond the publisher spends is taken from the consumer being measured. PUBLISH
    replies are integers (":<receivers>\r\n"), XADD replies bulk strings ("$15\r\n<id>\r\n": two
    lines each); we only count reply lines and check none is an error.
    """

    def __init__(self, url: str):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        db = (u.path or "/0").lstrip("/") or "0"
        if u.password:
            self.pipeline(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(u.password), u.password.encode()), 1)
        self.pipeline(b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%s\r\n" % (len(db), db.encode()), 1)

    def pipeline(self, packed: bytes, n: int) -> None:
        """Send `packed` and wait for `n` reply lines."""
        self.sock.sendall(packed)
        seen = 0
        while True:
            seen += self.buf.count(b"\n")
            if b"-" in self.buf[:1] or b"\n-" in self.buf:
                raise RuntimeError(f"redis error: {self.buf[:200]!r}")
            if seen >= n:
                self.buf = b""
                return
            self.buf = self.sock.recv(1 << 20)
            if not self.buf:
                raise RuntimeError("redis closed the connection")


class Publisher:
    def __init__(
        self,
        redis_url: str,
        channel: str,
        tag: str,
        pub: int,
        seed: int,
        stream: str | None = None,
        maxlen: int = 1_000_000,
        shape: str = "mixed",
    ):
        self.conn = RawConnection(redis_url)
        self.channel = channel
        if stream:
            key = stream.encode()
            self.pack = lambda payloads: pack_xadd(key, maxlen, payloads)
            self.lines_per_event = 2
        else:
            key = channel.encode()
            self.pack = lambda payloads: pack_publish(key, payloads)
            self.lines_per_event = 1
        self.tag = tag
        self.pub = pub
        self.templates = Templates(seed=seed + pub, shape=shape)
        self.plan: dict | None = None

    def prepare(self, cmd: dict) -> dict:
        step = int(cmd["step"])
        if cmd["mode"] == "burst":
            count = int(cmd["count"])
            spread = float(cmd.get("spread_s") or 0.0)
            now = time.time()
            rng = random.Random(step * 1000 + self.pub)
            payloads = [
                self.templates.encode(
                    i,
                    now - rng.random() * spread if spread else now,
                    f"{self.tag}{make_key(step, self.pub, i)}",
                    None,
                )
                for i in range(count)
            ]
            chunks = [
                (
                    self.pack(payloads[i : i + BURST_BATCH]),
                    len(payloads[i : i + BURST_BATCH]) * self.lines_per_event,
                )
                for i in range(0, count, BURST_BATCH)
            ]
            self.plan = {"mode": "burst", "chunks": chunks, "count": count}
            return {"prepared": count}
        rate = float(cmd["rate"])
        count = round(rate * float(cmd["duration"]))
        self.plan = {"mode": "paced", "rate": rate, "count": count, "step": step}
        return {"prepared": count}

    def go(self) -> dict:
        plan, self.plan = self.plan, None
        if plan is None:
            raise RuntimeError("go before prepare")
        if plan["mode"] == "burst":
            return self._burst(plan["chunks"], plan["count"])
        return self._paced(plan["rate"], plan["count"], plan["step"])

    def _burst(self, chunks: list[tuple[bytes, int]], count: int) -> dict:
        pipeline = self.conn.pipeline
        first = time.time()
        for packed, n in chunks:
            pipeline(packed, n)
        last = time.time()
        return self._result(count, first, last, 0.0)

    def _paced(self, rate: float, count: int, step: int) -> dict:
        tag, pub, encode, pack = self.tag, self.pub, self.templates.encode, self.pack
        sent = 0
        max_behind = 0.0
        start = time.perf_counter()
        first = last = time.time()
        last_batch = -1.0
        while sent < count:
            now = time.perf_counter()
            owed = min(count, int((now - start) * rate) + 1) - sent
            if owed <= 0 or now - last_batch < PACED_TICK_S:
                next_due = start + sent / rate
                time.sleep(max(0.0002, max(next_due, last_batch + PACED_TICK_S) - now))
                continue
            owed = min(owed, PACED_MAX_BATCH)
            max_behind = max(max_behind, now - (start + sent / rate))
            last_batch = now
            wall = time.time()
            if sent == 0:
                first = wall
            payloads = [
                encode(i, wall, f"{tag}{make_key(step, pub, i)}", wall) for i in range(sent, sent + owed)
            ]
            self.conn.pipeline(pack(payloads), owed * self.lines_per_event)
            sent += owed
            last = time.time()
        return self._result(sent, first, last, max_behind)

    @staticmethod
    def _result(n: int, first: float, last: float, max_behind: float) -> dict:
        elapsed = max(last - first, 1e-9)
        return {
            "published": n,
            "first_pub": first,
            "last_pub": last,
            "elapsed_s": round(elapsed, 4),
            "rate": round(n / elapsed, 1),
            "max_behind_s": round(max(0.0, max_behind), 4),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publisher")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--pub", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stream", default=None, help="XADD to this stream instead of PUBLISH")
    parser.add_argument("--maxlen", type=int, default=1_000_000, help="XADD MAXLEN ~ (with --stream)")
    parser.add_argument("--event-shape", choices=SHAPES, default="mixed")
    args = parser.parse_args(argv)
    publisher = Publisher(
        args.redis_url,
        args.channel,
        args.tag,
        args.pub,
        args.seed,
        stream=args.stream,
        maxlen=args.maxlen,
        shape=args.event_shape,
    )
    reply({"ready": True})
    serve({"prepare": publisher.prepare, "go": lambda cmd: publisher.go()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
