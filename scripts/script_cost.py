"""Redis's own work per batch: the write script, in instructions, whole and part by part.

    .venv/bin/python scripts/script_cost.py [--shape mixed|original] [--batch N] [--parts] [--held]

It builds the write script's real calls (KEYS and ARGV) for batches of N of the benchmark's
events (bench/events.py), the way the worker does at 40k events/s (BatchProcessor with a pipe that
keeps each call instead of sending it), then runs a `valkey-server` under callgrind twice: the
same warm-up, then 5 calls in one run and 20 in the other. The difference over the 15 extra calls
is the script's instructions per call, without start-up; it repeats within about 1%, where the
server's timing (INFO commandstats) moves 30-50% from run to run on a shared machine.

With --parts it also runs the script with parts taken out, so their shares can be read off:
- without the bucket updates (HINCRBY per hash field: sketch bins, counts, per-tag counters);
- without those and the msgpack decoding of their operations;
- without the recent lists (the pieces cut from the batch's JSON and numbered, LPUSH, LTRIM);
- an empty script with the same arguments (what receiving and parsing the call costs).

Needs valgrind, like scripts/worker_cost.py --instructions.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WARM_CALLS = 10  # calls run before counting: the buckets and lists exist, as in a running system


def batch_calls(shape: str, batch: int, count: int, held: bool = False) -> list[tuple[list, list]]:
    """`count` write-script calls (keys, args) for batches of `batch` events, 40k events/s apart;
    `held`: as while events queue, each batch holding back its minute's updates (the batch that
    releases them, once per MINUTE_HOLD_MS, is not among the calls)."""
    import redis

    from backend import config as cfgmod
    from backend.ingest.batch import BatchProcessor
    from backend.storage.pipe import ScriptPipe
    from backend.storage.store import Store
    from bench.events import Templates

    calls: list[tuple[list, list]] = []

    class Keeping(ScriptPipe):
        """A pipe that keeps each call and answers it at once (a seq the worker can count on)."""

        def send(self, keys, args):
            calls.append((list(keys), list(args)))
            self.unread += 1

        def read(self):
            self.unread -= 1
            return 1000

        def ready(self):
            return True

    class _NoFanout:
        channel = "fan"

    conf = cfgmod.load().as_dict()
    store = Store.from_config(conf, redis.Redis.from_url("redis://127.0.0.1:1/0"), partition=0)
    if held:
        conf["MINUTE_HOLD_MS"] = 10**9
    processor = BatchProcessor(conf, store, _NoFanout(), fence=("x", "y"), pipe=Keeping(None, ""))
    if held:
        processor.backlog = lambda: 1
    templates = Templates(1, shape=shape)
    now = time.time()
    for b in range(count):
        first = b * batch
        raws = [templates.encode(i, now + i / 40_000, f"w{i}", now) for i in range(first, first + batch)]
        processor.process(raws, time.monotonic())
    processor.flush()
    return calls


def variants(script: str) -> dict[str, str]:
    def without(text: str, old: str, new: str) -> str:
        if old not in text:
            raise SystemExit(f"the write script changed: {old!r} is not in it; update script_cost.py")
        return text.replace(old, new)

    decode_ops = "local ops = cmsgpack.unpack(ARGV[i])"
    no_buckets = without(script, decode_ops, decode_ops + "; nbuckets = 0")
    no_decode = without(script, decode_ops, "local ops = {}; nbuckets = 0")
    keep = "local nnew = tonumber(ARGV[15])"
    no_lists = without(
        without(script, keep, keep + "; local all_pieces = npieces; npieces = 0; nlists = 0"),
        "if ARGV[19] == '1'",
        "npieces = all_pieces\nif ARGV[19] == '1'",
    )
    return {
        "whole script": script,
        "without bucket updates": no_buckets,
        "without bucket updates and their decoding": no_decode,
        "without recent lists": no_lists,
        "empty script, same arguments": "return 1",
    }


def instructions(calls: list[tuple[list, list]], script: str, counted: int) -> int:
    """Instructions a valkey-server runs for WARM_CALLS + `counted` calls, start to shutdown."""
    import redis

    from backend.cli.embedded_redis import find_redis_server, free_port

    port = free_port()
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = redis.Redis(port=port)
    try:
        for _ in range(600):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        sha = client.script_load(script)
        for keys, args in calls[: WARM_CALLS + counted]:
            client.evalsha(sha, len(keys), *keys, *args)
        # The server may go before it answers: that is what shutdown does.
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
        err = server.communicate(timeout=120)[1]
    finally:
        if server.poll() is None:
            server.kill()
    return int(re.search(r"Collected : ([\d,]+)", err).group(1).replace(",", ""))


def per_call(calls, script: str) -> float:
    few, many = 5, 20
    return (instructions(calls, script, many) - instructions(calls, script, few)) / (many - few)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=("mixed", "original"), default="mixed")
    p.add_argument("--batch", type=int, default=400, help="events per batch (default 400)")
    p.add_argument("--parts", action="store_true", help="also the script with parts taken out")
    p.add_argument("--held", action="store_true", help="batches holding their minute's updates back")
    args = p.parse_args()
    from backend.storage.scripts import WRITE_BATCH_LUA

    calls = batch_calls(args.shape, args.batch, WARM_CALLS + 20, args.held)
    runs = variants(WRITE_BATCH_LUA) if args.parts else {"whole script": WRITE_BATCH_LUA}
    print(f"{args.shape} events, batches of {args.batch}{', minute held' if args.held else ''}:")
    for name, script in runs.items():
        n = per_call(calls, script)
        print(
            f"  {name:44s} {n / 1e6:6.2f}M instructions a call, {n / args.batch:8,.0f} an event", flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
