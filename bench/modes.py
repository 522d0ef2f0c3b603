"""The `modes` section: the ingest burst and one fan-out step under each async mode."""

from __future__ import annotations

from bench.context import Bench
from bench.fanout import ladder
from bench.ingest import ingest


def modes(bench: Bench) -> dict:
    opts = bench.opts
    out = {}
    for mode in opts.modes:
        bench.say(f"  modes: {mode}: ingest {opts.modes_events} events ...")
        entry: dict = {}
        try:
            entry["ingest"] = ingest(
                bench, events=opts.modes_events, publishers=opts.publishers, async_mode=mode
            )
            bench.say(
                f"    worker {entry['ingest']['worker']['rate']}/s, bare {entry['ingest']['bare']['rate']}/s"
            )
            entry["fanout"] = ladder(
                bench,
                n_clients=opts.modes_clients,
                rates=[opts.modes_rate],
                async_mode=mode,
                label=f"modes-{mode}",
            )
        except Exception as exc:  # one mode failing (e.g. gevent missing) must not lose the others
            entry["error"] = f"{type(exc).__name__}: {exc}"
            bench.say(f"    {mode} failed: {entry['error']}")
        out[mode] = entry
    return out
