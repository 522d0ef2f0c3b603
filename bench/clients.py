"""Socket.IO client helper: many python-socketio AsyncClients in one asyncio process.

    python -m bench.clients --url URL --clients K --tag TAG [--window 60]

Each client connects over WebSocket, sends ``subscribe {"mode": "batch", "window": W}`` and waits
for the ack, then records every ``metrics`` packet: receive time, and per event its ``seq``,
``id`` and publish time ``pt``.

So that 25 clients in one process do not pay 25 JSON decodes of the same packet (the server
encodes a room emit once and sends the same text to every member), the JSON module given to
python-socketio decodes each distinct ``metrics`` packet once: a packet is looked up by its length
and first/last characters and reused only if the whole text compares equal, so every client
still proves it received exactly those bytes. The summary keeps numpy arrays, not dicts.

Per client, per step the helper checks: ``seq`` strictly increases across everything received
(no duplicate, no reordering), events not from this run ("foreign") are counted. Per process,
per step, over the distinct packets: every key ``(step, publisher, index)`` occurs once, and
indexes 0..n-1 of every publisher are all there. The runner compares the counts with what was
published.

Commands: ``{"cmd": "report", "step": S, "expected": N, "timeout": T}`` waits until every client
has N events of step S (or T seconds) and replies with that step's figures; ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import threading
import time
from collections import OrderedDict

import numpy as np
import orjson

from bench.events import INDEX_MASK, PUB_MASK, PUB_SHIFT, STEP_SHIFT
from bench.latency import Histogram
from bench.proto import reply

CACHE_MAX_PACKETS = 4096
CACHE_MAX_CHARS = 64 * 1024 * 1024
SMALL = 32  # parts with fewer events keep Python lists: numpy costs more than it saves there


class Part:
    """The events of one step inside one packet."""

    __slots__ = ("foreign", "keys", "n", "pts", "seq_first", "seq_last", "seq_mono", "step")

    def __init__(self, step: int, seqs: list, pts: list, keys: list, foreign: int):
        self.step = step
        self.n = len(seqs)
        self.seq_first = seqs[0] if seqs else -1
        self.seq_last = seqs[-1] if seqs else -1
        self.seq_mono = all(b > a for a, b in itertools.pairwise(seqs))
        self.pts = pts if self.n <= SMALL else np.asarray(pts, dtype=np.float64)
        self.keys = keys
        self.foreign = foreign


def summarize(events: list, tag: str) -> list[Part]:
    """Per-step parts of one `metrics` packet (almost always exactly one)."""
    taglen = len(tag)
    by_step: dict[int, tuple[list, list, list]] = {}
    foreign_seqs: list = []
    for event in events:
        seq = event.get("seq")
        event_id = event.get("id")
        pt = event.get("pt")
        if type(seq) is not int or type(pt) is not float or not str(event_id).startswith(tag):
            foreign_seqs.append(seq if type(seq) is int else -1)
            continue
        key = int(event_id[taglen:])
        group = by_step.get(key >> STEP_SHIFT)
        if group is None:
            group = by_step[key >> STEP_SHIFT] = ([], [], [])
        group[0].append(seq)
        group[1].append(pt)
        group[2].append(key)
    parts = [Part(step, seqs, pts, keys, 0) for step, (seqs, pts, keys) in by_step.items()]
    if foreign_seqs:
        parts.append(Part(-1, foreign_seqs, [], [], len(foreign_seqs)))
    return parts


class SharedJson:
    """The `json` module python-socketio uses, with one decode per distinct `metrics` packet."""

    def __init__(self, tag: str):
        self.tag = tag
        self.cache: OrderedDict = OrderedDict()
        self.cache_chars = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def dumps(obj, **_kwargs) -> str:
        return orjson.dumps(obj).decode()

    def loads(self, s, **_kwargs):
        if not (isinstance(s, str) and s.startswith('["metrics",')):
            return orjson.loads(s)
        key = (len(s), s[:160], s[-64:])
        hit = self.cache.get(key)
        if hit is not None and hit[0] == s:  # full comparison: the same bytes, not just alike
            self.hits += 1
            return hit[1]
        self.misses += 1
        obj = orjson.loads(s)
        result = ["metrics", summarize(obj[1], self.tag)]
        if hit is not None:
            self.cache_chars -= len(hit[0])
        self.cache[key] = (s, result)
        self.cache_chars += len(s)
        while len(self.cache) > CACHE_MAX_PACKETS or self.cache_chars > CACHE_MAX_CHARS:
            _, (old, _) = self.cache.popitem(last=False)
            self.cache_chars -= len(old)
        return result


class StepStats:
    """Process-wide figures of one step: latency and the distinct events seen."""

    def __init__(self) -> None:
        self.hist = Histogram()
        self.small: list[float] = []
        self.seen_parts: set[int] = set()  # seq_first of parts already counted
        self.packets = 0
        self.events = 0
        self.keys: list = []

    def account(self, part: Part) -> None:
        if part.seq_first in self.seen_parts:
            return  # a packet evicted from the cache and decoded again for a lagging client
        self.seen_parts.add(part.seq_first)
        self.packets += 1
        self.events += part.n
        self.keys.append(part.keys)

    def flush_small(self) -> None:
        if self.small:
            self.hist.add(np.asarray(self.small, dtype=np.float64))
            self.small = []

    def distinct(self) -> dict:
        keys = (
            np.concatenate([np.asarray(k, dtype=np.int64) for k in self.keys]) if self.keys else np.zeros(0)
        )
        keys = keys.astype(np.int64)
        unique = np.unique(keys)
        pubs = {}
        if unique.size:
            pub_of = (unique >> PUB_SHIFT) & PUB_MASK
            index_of = unique & INDEX_MASK
            for pub in np.unique(pub_of).tolist():
                sel = index_of[pub_of == pub]
                pubs[str(pub)] = [int(sel.size), int(sel.min()), int(sel.max())]
        return {"packets": self.packets, "events": self.events, "unique_keys": int(unique.size), "pubs": pubs}


class ClientStep:
    __slots__ = ("count", "first_recv", "last_recv")

    def __init__(self, t: float):
        self.count = 0
        self.first_recv = t
        self.last_recv = t


class BenchClient:
    def __init__(self, index: int, pool: Pool):
        import socketio

        self.index = index
        self.pool = pool
        self.steps: dict[int, ClientStep] = {}
        self.last_seq = -1
        self.order_errors = 0
        self.foreign = 0
        self.aggregates = 0
        self.packets = 0
        self.connected = False
        self.disconnect_reason = None
        self.sio = socketio.AsyncClient(
            reconnection=False,
            json=pool.json,
            websocket_extra_options={"max_msg_size": 0},
        )
        self.sio.on("metrics", self.on_metrics)
        self.sio.on("aggregate", self.on_aggregate)
        self.sio.on("disconnect", self.on_disconnect)

    def on_metrics(self, parts) -> None:
        t = time.time()
        self.packets += 1
        for part in parts:
            if part.step < 0:
                self.foreign += part.foreign
                continue
            if part.seq_first <= self.last_seq or not part.seq_mono:
                self.order_errors += 1
            self.last_seq = part.seq_last
            step = self.steps.get(part.step)
            if step is None:
                step = self.steps[part.step] = ClientStep(t)
            step.count += part.n
            step.last_recv = t
            stats = self.pool.step(part.step)
            stats.account(part)
            if part.n <= SMALL:
                stats.small.extend([t - pt for pt in part.pts])
                if len(stats.small) > 200_000:
                    stats.flush_small()
            else:
                stats.hist.add(t - part.pts)

    def on_aggregate(self, _body) -> None:
        self.aggregates += 1

    def on_disconnect(self, reason=None) -> None:
        self.connected = False
        self.disconnect_reason = str(reason)

    async def start(self, url: str, window: int) -> None:
        await self.sio.connect(url, transports=["websocket"], wait_timeout=30)
        self.connected = True
        ack = await self.sio.call("subscribe", {"mode": "batch", "window": window}, timeout=30)
        if not (isinstance(ack, dict) and ack.get("ok")):
            raise RuntimeError(f"subscribe refused: {ack!r}")


class Pool:
    def __init__(self, url: str, n: int, tag: str, window: int):
        self.url = url
        self.window = window
        self.json = SharedJson(tag)
        self.steps: dict[int, StepStats] = {}
        self.clients = [BenchClient(i, self) for i in range(n)]

    def step(self, step: int) -> StepStats:
        stats = self.steps.get(step)
        if stats is None:
            stats = self.steps[step] = StepStats()
        return stats

    async def start(self) -> None:
        # A few at a time: 50 simultaneous handshakes would measure the accept queue, not us.
        for i in range(0, len(self.clients), 10):
            await asyncio.gather(*(c.start(self.url, self.window) for c in self.clients[i : i + 10]))

    async def report(self, step: int, expected: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                (c.steps.get(step).count if step in c.steps else 0) >= expected or not c.connected
                for c in self.clients
            ):
                break
            await asyncio.sleep(0.02)
        # A duplicate would arrive right behind the last original: give it a moment to show up.
        await asyncio.sleep(0.2)
        stats = self.steps.pop(step, StepStats())
        stats.flush_small()
        clients = []
        for c in self.clients:
            cs = c.steps.pop(step, None)
            clients.append(
                {
                    "received": cs.count if cs else 0,
                    "first_recv": cs.first_recv if cs else None,
                    "last_recv": cs.last_recv if cs else None,
                    "order_errors": c.order_errors,
                    "foreign": c.foreign,
                    "aggregates": c.aggregates,
                    "connected": c.connected,
                    "disconnect_reason": c.disconnect_reason,
                }
            )
        return {
            "step": step,
            "clients": clients,
            "distinct": stats.distinct(),
            "latency": stats.hist.to_sparse(),
            "decode_cache": {"hits": self.json.hits, "misses": self.json.misses},
        }

    async def close(self) -> None:
        await asyncio.gather(*(c.sio.disconnect() for c in self.clients), return_exceptions=True)


def _stdin_commands(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
    for line in sys.stdin:
        line = line.strip()
        if line:
            loop.call_soon_threadsafe(queue.put_nowait, orjson.loads(line))
    loop.call_soon_threadsafe(queue.put_nowait, {"cmd": "quit"})


async def amain(args) -> int:
    pool = Pool(args.url, args.clients, args.tag, args.window)
    try:
        await pool.start()
    except Exception as exc:
        reply({"error": f"connect failed: {type(exc).__name__}: {exc}"})
        return 1
    reply({"ready": True, "clients": len(pool.clients)})
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    threading.Thread(target=_stdin_commands, args=(loop, queue), daemon=True).start()
    while True:
        cmd = await queue.get()
        if cmd["cmd"] == "quit":
            break
        try:
            if cmd["cmd"] == "report":
                reply(await pool.report(int(cmd["step"]), int(cmd["expected"]), float(cmd["timeout"])))
            elif cmd["cmd"] == "status":
                reply(
                    {
                        "connected": sum(c.connected for c in pool.clients),
                        "packets": sum(c.packets for c in pool.clients),
                    }
                )
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})
    await pool.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clients")
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--window", type=int, default=60)
    args = parser.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
