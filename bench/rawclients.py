"""Lean load clients: raw Engine.IO websockets on asyncio, many per process.

    python -m bench.rawclients --url URL --clients K --mode batch|event --tag TAG

The python-socketio client costs tens of microseconds of Python per message, which on a 2-core
machine is taken from the server being measured. These clients speak just enough of RFC 6455 and
Engine.IO/Socket.IO v4 to connect, subscribe, answer pings and count: frames are cut out of each
TCP read in one pass, and each distinct frame (every client gets the same bytes) is decoded
once per process; per client and frame only its receive time is kept. Latency is computed at
report time: receive time minus the `pt` (publish time) of each event in the frame.

Commands (JSON lines on stdin): {"cmd": "mark", "step": S} starts counting step S;
{"cmd": "report", "expected": N, "timeout": T} waits until every client has N events of the
step (or T s) and replies with the figures; {"cmd": "quit"}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import struct
import sys
import time
from urllib.parse import urlparse

import numpy as np
import orjson

from bench.events import STEP_SHIFT
from bench.proto import reply

QUIET_S = 0.25  # no event frame for this long: the step's events are in (or will not come)


def masked_text(payload: bytes) -> bytes:
    """A client's text frame; the all-zero mask (allowed) leaves the payload as it is."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, 0x80 | n) + b"\0\0\0\0" + payload
    return struct.pack("!BBH", 0x81, 0x80 | 126, n) + b"\0\0\0\0" + payload


class Frames:
    """Each distinct event frame decoded once: its step, events, seqs and publish times."""

    def __init__(self, tag: str):
        self.tag = tag.encode()
        self.cache: dict[bytes, tuple] = {}
        self.kept: dict[tuple, bytes] = {}

    def keep(self, payload: bytes) -> bytes:
        """One copy per process of each distinct frame: the 25 clients of a process get the same
        bytes, and a copy each took 2 GB and most of the machine's system time (page faults) at
        40k events/s. Found by length and ends, then compared whole (memcmp: cheaper than
        hashing every client's copy), so every client still proves it got those exact bytes."""
        key = (len(payload), payload[:48], payload[-48:])
        kept = self.kept.get(key)
        if kept is not None and kept == payload:
            return kept
        if kept is None:
            self.kept[key] = payload
        return payload

    def info(self, payload: bytes) -> tuple:
        hit = self.cache.get(payload)
        if hit is None:
            hit = self.cache[payload] = self._decode(payload)
        return hit

    def _decode(self, payload: bytes) -> tuple:
        _event, body = orjson.loads(payload[2:])
        events = body if isinstance(body, list) else [body]
        taglen = len(self.tag)
        ours = [e for e in events if str(e.get("id", "")).encode().startswith(self.tag)]
        if not ours:
            return (-1, 0, -1, -1, None)
        step = int(ours[0]["id"][taglen:]) >> STEP_SHIFT
        pts = np.fromiter((e["pt"] for e in ours), dtype=np.float64, count=len(ours))
        return (step, len(ours), ours[0]["seq"], ours[-1]["seq"], pts)


class Client(asyncio.Protocol):
    def __init__(self, pool: Pool, mode: str):
        self.pool = pool
        self.mode = mode
        self.buf = bytearray()
        self.handshaken = False
        self.ready = asyncio.get_running_loop().create_future()
        self.transport = None
        self.count = 0
        self.last_seq = -1
        self.order_errors = 0
        self.received: list[tuple[bytes, float]] = []
        self.counted = 0  # events of the step in received[:counted_upto]
        self.counted_upto = 0
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport
        u = self.pool.url
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc):
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during the handshake"))

    def send(self, text: bytes) -> None:
        self.transport.write(masked_text(text))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf
        buf += data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            del buf[: end + 4]
            self.handshaken = True
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            head = 2
            if b1 == 126:
                if n - pos < 4:
                    break
                b1 = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif b1 == 127:
                if n - pos < 10:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if n - pos < head + b1:
                break
            opcode = buf[pos] & 0x0F
            payload = bytes(buf[pos + head : pos + head + b1])
            pos += head + b1
            if opcode == 1:
                self.on_text(payload, now)
            elif opcode == 8:
                self.transport.close()
        del buf[:pos]

    def on_text(self, payload: bytes, now: float) -> None:
        if payload.startswith(b'42["metric'):
            if self.pool.recording:
                self.received.append((self.pool.frames.keep(payload), now))
                self.pool.last_frame_at = time.monotonic()
            return
        if payload == b"2":
            self.send(b"3")
        elif payload.startswith(b"0{"):
            self.send(b"40")
        elif payload.startswith(b"40"):
            if self.mode == "batch":
                self.send(b'421["subscribe",{"mode":"batch","window":60}]')
            elif not self.ready.done():
                self.ready.set_result(True)
        elif payload.startswith(b"431") and not self.ready.done():
            self.ready.set_result(True)


class Pool:
    def __init__(self, url: str, n: int, mode: str, tag: str):
        self.url = urlparse(url)
        self.n = n
        self.mode = mode
        self.frames = Frames(tag)
        self.clients: list[Client] = []
        self.recording = False
        self.last_frame_at = 0.0  # time.monotonic() of the newest event frame
        self.step = -1
        self.cpu0 = (time.process_time(), time.monotonic())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.n):
            _, client = await loop.create_connection(
                lambda: Client(self, self.mode), self.url.hostname, self.url.port
            )
            self.clients.append(client)
            await asyncio.wait_for(client.ready, 20)

    def mark(self, step: int) -> None:
        for c in self.clients:
            c.received.clear()
            c.counted = c.counted_upto = 0
        self.frames.kept.clear()
        self.step = step
        self.recording = True
        self.cpu0 = (time.process_time(), time.monotonic())

    def _count(self, c: Client) -> int:
        """Events of this step received so far. Only frames that came since the last look are
        decoded: recounting everything every 50 ms took this loop from reading the last
        frames (the last second of a 20k/s step showed 500 ms of delay that was our own)."""
        step = self.step
        received = c.received
        for payload, _t in received[c.counted_upto :]:
            info = self.frames.info(payload)
            if info[0] == step:
                c.counted += info[1]
        c.counted_upto = len(received)
        return c.counted

    async def report(self, expected: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Count (decode frames) only once none has come for a while: decoding is the heavy
            # part of these clients, and done while the last frames arrive it delayed them by
            # hundreds of ms (the last second of a 20k/s step looked 5x worse than the rest).
            if time.monotonic() - self.last_frame_at < QUIET_S:
                await asyncio.sleep(0.05)
                continue
            if all(self._count(c) >= expected for c in self.clients if not c.closed):
                break
            await asyncio.sleep(0.05)
        cpu = (time.process_time() - self.cpu0[0]) / max(1e-9, time.monotonic() - self.cpu0[1])
        self.recording = False
        counts, order_errors, lats, sent = [], 0, [], []
        for c in self.clients:
            got, last = 0, -1
            for payload, t in c.received:
                step, n, first_seq, last_seq, pts = self.frames.info(payload)
                if step != self.step:
                    continue
                if first_seq <= last:
                    order_errors += 1
                last = last_seq
                got += n
                lats.append(t - pts)
                sent.append(pts)
            counts.append(got)
        lat = np.concatenate(lats) * 1000.0 if lats else np.zeros(0)
        # The worst delay of the events published in each second of the step: a transient
        # (start-up, a pause) shows as one bad second, a backlog as a rising line.
        by_second = []
        if lat.size:
            pt = np.concatenate(sent)
            second = (pt - pt.min()).astype(np.int64)
            worst = np.zeros(int(second.max()) + 1)
            np.maximum.at(worst, second, lat)
            by_second = [round(float(w), 1) for w in worst]
        q = np.percentile(lat, [50, 95, 99]) if lat.size else [None] * 3
        return {
            "clients": len(self.clients),
            "disconnected": sum(c.closed for c in self.clients),
            "received_min": min(counts) if counts else 0,
            "received_max": max(counts) if counts else 0,
            "lost": sum(max(0, expected - k) for k in counts),
            "duplicates": sum(max(0, k - expected) for k in counts),
            "order_errors": order_errors,
            "samples": int(lat.size),
            "p50_ms": _r(q[0]),
            "p95_ms": _r(q[1]),
            "p99_ms": _r(q[2]),
            "max_ms": _r(lat.max()) if lat.size else None,
            "cpu_pct": round(cpu * 100, 1),
            "distinct_frames": len(self.frames.cache),
            "worst_ms_by_second": by_second,
        }


def _r(x):
    return None if x is None else round(float(x), 2)


async def amain(args) -> int:
    pool = Pool(args.url, args.clients, args.mode, args.tag)
    await pool.start()
    reply({"ready": True, "clients": len(pool.clients)})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return 0
        cmd = orjson.loads(line)
        if cmd["cmd"] == "mark":
            pool.mark(int(cmd["step"]))
            reply({"marked": cmd["step"]})
        elif cmd["cmd"] == "report":
            reply(await pool.report(int(cmd["expected"]), float(cmd["timeout"])))
            pool.frames.cache.clear()
            pool.frames.kept.clear()
        elif cmd["cmd"] == "quit":
            return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rawclients")
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=25)
    parser.add_argument("--mode", choices=["batch", "event"], default="batch")
    parser.add_argument("--tag", default="rt-")
    args = parser.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
