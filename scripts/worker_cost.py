"""The worker's own work per event: validate, aggregate, build and pack a batch's write.

    .venv/bin/python scripts/worker_cost.py [--shape mixed|original] [--events N] [--batch N] [--held] [--pure]
    .venv/bin/python scripts/worker_cost.py --instructions [--shape ...] [--batch N]   # needs valgrind

It runs the real BatchProcessor on the benchmark's events (bench/events.py) in batches of 850
(by default: about what the worker takes at 40k events/s) with a pipe that packs each write and
answers at once: no Redis, no threads, no sockets, so what it measures is the consumer thread's
Python.

Without --instructions it prints CPU µs per event, which moves ±15% from run to run on a shared
machine. With --instructions it runs itself twice under callgrind (2 and 22 batches: 1,700 and
18,700 events at 850) and prints the difference in instructions per event: start-up and imports
cancel out, and the figure repeats within 0.1%, which is what a change of a few percent needs.
scripts/script_cost.py does the same for Redis's side of a batch, the write script.

It runs the core as `make native` left it (compiled when the build is current); --pure runs a
copy of backend/ with no build beside it, so the core is plain Python (backend/core/native.py).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PURE = "--pure" in sys.argv
if PURE:  # backend/ copied where no build stands beside it: the core imports as Python
    _copy = Path(tempfile.mkdtemp(prefix="pulseboard-pure-"))
    shutil.copytree(ROOT / "backend", _copy / "backend", ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(ROOT))  # bench/
    sys.path.insert(0, str(_copy))
else:
    sys.path.insert(0, str(ROOT))

BATCH = 850


class _Answered:
    """A connection for ScriptPipe that packs and keeps each write and answers at once."""

    def __init__(self):
        import redis

        self._real = redis.Connection()

    def pack_command(self, *args):
        return self._real.pack_command(*args)

    def send_packed_command(self, packed, check_health=True):
        self.sent = packed

    def read_response(self):
        return 1000

    def can_read(self, timeout=0):
        return True

    def disconnect(self):
        pass


class _NoFanout:
    channel = "fan"

    def publish(self, encoded):
        pass


def measure(shape: str, events: int, batch: int = BATCH, held: bool = False) -> float:
    """CPU seconds per event of BatchProcessor.process over `events` events; `held`: as while
    events queue at 40k events/s (the minute's updates held back, released every MINUTE_HOLD_MS)."""
    import redis

    from backend import config as cfgmod
    from backend.ingest.batch import BatchProcessor
    from backend.storage.pipe import ScriptPipe
    from backend.storage.store import Store
    from bench.events import Templates

    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as the worker runs (backend/cli/procs.py)
    conf = cfgmod.load().as_dict()
    store = Store.from_config(conf, redis.Redis.from_url("redis://127.0.0.1:1/0"), partition=0)
    processor = BatchProcessor(
        conf, store, _NoFanout(), fence=("x", "y"), pipe=ScriptPipe(_Answered, "return 1")
    )
    if held:
        # Released once per MINUTE_HOLD_MS of 40k events/s, counted in batches rather than by
        # the clock, which callgrind slows down fifty-fold.
        every = max(1, conf["MINUTE_HOLD_MS"] * 40 // batch)
        processor.minute_hold_s = 1e9
        sent = itertools.count(1)
        processor.backlog = lambda: next(sent) % every
    templates = Templates(1, shape=shape)
    now = time.time()
    # One ts, id and pt for all: formatting them per event would be counted with the worker's
    # work (the worker neither dedups ids nor minds that a batch shares a second).
    first = templates.encode(0, now, "w", now)
    tail = first[len(templates.bodies[0]) :]
    bodies = templates.bodies
    raws = [bodies[i % len(bodies)] + tail for i in range(events + 5 * batch)]
    batches = [raws[i : i + batch] for i in range(0, len(raws), batch)]
    for batch in batches[:5]:  # warm the name caches
        processor.process(batch, time.monotonic())
    cpu = time.process_time()
    for batch in batches[5:]:
        processor.process(batch, time.monotonic())
    processor.flush()
    return (time.process_time() - cpu) / events


def instructions(shape: str, batch: int = BATCH, held: bool = False) -> float:
    def run(n: int) -> int:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                __file__,
                "--shape",
                shape,
                "--events",
                str(n),
                "--batch",
                str(batch),
                *(["--held"] if held else []),
                *(["--pure"] if PURE else []),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(re.search(r"Collected : ([\d,]+)", out.stderr).group(1).replace(",", ""))

    small, large = 2 * batch, 22 * batch
    return (run(large) - run(small)) / (large - small)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=("mixed", "original"), default="mixed")
    p.add_argument("--events", type=int, default=85_000)
    p.add_argument("--batch", type=int, default=BATCH, help=f"events per batch (default {BATCH})")
    p.add_argument("--instructions", action="store_true", help="instructions per event, under callgrind")
    p.add_argument("--held", action="store_true", help="as while events queue: the minute's updates held")
    p.add_argument("--pure", action="store_true", help="the core as Python, whatever `make native` built")
    args = p.parse_args()
    from backend.core import native

    core = "compiled core" if native.compiled() else "Python core"
    if args.instructions:
        n = instructions(args.shape, args.batch, args.held)
        print(f"{args.shape}, {core}: {n:,.0f} instructions per event")
    else:
        cpu = measure(args.shape, args.events, args.batch, args.held)
        print(f"{args.shape}, {core}: {cpu * 1e6:.2f} µs CPU per event")
    if PURE:
        shutil.rmtree(_copy, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
