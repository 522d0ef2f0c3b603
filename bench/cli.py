"""`python -m bench` (`make bench`): run the benchmark, print tables, write JSON.

    python -m bench [--quick] [--only ingest,late,fanout,baseline,queries,soak,modes,scaling]
                    [--json bench-results/latest.json] [--profile] [...]

The full run takes about 15 minutes plus `--soak-seconds` (600 by default); `--quick` takes
2-3 minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
import traceback
from pathlib import Path

import orjson

from bench.events import SHAPES

SECTIONS = ("realtime", "ingest", "late", "fanout", "baseline", "queries", "soak", "modes", "scaling")

# name: (full run, --quick)
DEFAULTS = {
    "ingest_events": (200_000, 50_000),
    "publishers": (2, 2),
    "late_events": (200_000, 50_000),
    "late_rounds": (3, 2),
    "fanout_clients": ([1, 10, 50], [1, 10, 50]),
    "fanout_rates": ([2000, 5000, 10000, 20000], [2000, 10000]),
    "step_seconds": (10.0, 4.0),
    "drain_seconds": (10.0, 5.0),
    "baseline_rates": ([50, 100, 250, 500, 1000, 2000], [100, 500]),
    "query_fill_rate": (200.0, 50.0),
    "query_requests": (200, 50),
    "soak_seconds": (600.0, 30.0),
    "soak_rate": (5000.0, 5000.0),
    "modes_events": (100_000, 30_000),
    "modes_rate": (10000.0, 5000.0),
    "profile_fanout_rate": (10000.0, 10000.0),
    "scaling_events": (200_000, 50_000),
    "scaling_rounds": (3, 1),
}


def _ints(text: str) -> list[int]:
    try:
        values = [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("expected positive numbers")
    return values


def _sections(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    return names


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.isupper():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with an upper-case setting name, got {text!r}")
    return key, value


def _modes(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in ("eventlet", "gevent", "threading")]
    if bad or not names:
        raise argparse.ArgumentTypeError("modes are eventlet, gevent, threading")
    return names


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = {k: v[0] for k, v in DEFAULTS.items()}
    p.add_argument("--quick", action="store_true", help="a 2-3 minute smoke run with smaller counts")
    p.add_argument(
        "--only",
        type=_sections,
        default=list(SECTIONS),
        metavar="LIST",
        help=f"sections to run, comma-separated: {','.join(SECTIONS)} (default all)",
    )
    p.add_argument(
        "--json",
        default="bench-results/latest.json",
        metavar="PATH",
        help="where to write the results (default %(default)s); logs and profiles go beside it",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also sample the server with py-spy during an extra ingest burst and fan-out step",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="keep raising the rate after a step that did not keep up (default: stop the ladder)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--event-shape",
        choices=SHAPES,
        default="mixed",
        help="mixed: the generator's traffic (value objects, tags; about 210 bytes); original: the "
        'original design\'s {"metric", "value", "ts"} with its value objects and an ISO ts '
        "(about 130 bytes)",
    )
    p.add_argument(
        "--background-seconds",
        type=float,
        default=2.0,
        metavar="S",
        help="how long to watch the machine idle before each section (default %(default)s)",
    )
    p.add_argument(
        "--server-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for every server started (repeatable), e.g. WORKER_MODE=thread to try a "
        "configuration without editing code; recorded in the results",
    )
    g = p.add_argument_group("realtime")
    g.add_argument(
        "--realtime-scenarios",
        type=lambda v: [x for x in v.split(",") if x],
        default=None,
        metavar="LIST",
        help="only these scenarios of the realtime section, by label (e.g. batch-1k,event-500-readers)",
    )
    g = p.add_argument_group("ingest")
    g.add_argument(
        "--ingest-events", type=int, default=None, help=f"events in the burst (default {d['ingest_events']})"
    )
    g.add_argument(
        "--publishers", type=int, default=None, help=f"burst publisher processes (default {d['publishers']})"
    )
    g.add_argument(
        "--late-events",
        type=int,
        default=None,
        help=f"late section: events per burst, in-order and spread over the hour (default {d['late_events']})",
    )
    g.add_argument(
        "--late-rounds",
        type=int,
        default=None,
        help=f"late section: in-order + spread rounds, best of each reported (default {d['late_rounds']})",
    )
    g = p.add_argument_group("fan-out and baseline")
    g.add_argument("--fanout-clients", type=_ints, default=None, help="client counts (default 1,10,50)")
    g.add_argument(
        "--fanout-rates",
        type=_ints,
        default=None,
        help="events/s, increasing (default 2000,5000,10000,20000)",
    )
    g.add_argument("--fanout-publishers", type=int, default=1, help="paced publisher processes (default 1)")
    g.add_argument(
        "--step-seconds", type=float, default=None, help=f"seconds per rate (default {d['step_seconds']:g})"
    )
    g.add_argument(
        "--drain-seconds",
        type=float,
        default=None,
        help=f"how long clients may take to get the last event after publishing ends (default {d['drain_seconds']:g})",
    )
    g.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    g.add_argument("--baseline-clients", type=int, default=50)
    g.add_argument(
        "--baseline-rates",
        type=_ints,
        default=None,
        help="per-event strategy rates (default 50,100,250,500,1000,2000)",
    )
    g.add_argument(
        "--latency-ms", type=float, default=100.0, help="p99 target for a rate to count as sustainable"
    )
    g.add_argument(
        "--baseline-latency-ms", type=float, default=1000.0, help="the looser p99 bound also reported"
    )
    g = p.add_argument_group("queries")
    g.add_argument(
        "--query-fill-rate",
        type=float,
        default=None,
        help="events/s of data in the filled hour (default 200)",
    )
    g.add_argument("--query-requests", type=int, default=None, help="requests per endpoint (default 200)")
    g.add_argument(
        "--query-live-rate",
        type=float,
        default=1000.0,
        help="events/s arriving during the live reads (default 1000)",
    )
    g = p.add_argument_group("soak")
    g.add_argument("--soak-seconds", type=float, default=None, help="default 600 (30 with --quick)")
    g.add_argument(
        "--soak-rate",
        type=float,
        default=None,
        help="events/s (default 5000: a rate the 10-client fan-out sustains here; a soak is not an overload test)",
    )
    g.add_argument("--soak-clients", type=int, default=10)
    g = p.add_argument_group("async modes")
    g.add_argument("--modes", type=_modes, default=["eventlet", "gevent", "threading"])
    g.add_argument("--modes-events", type=int, default=None, help="ingest burst per mode (default 100000)")
    g.add_argument("--modes-rate", type=float, default=None, help="fan-out rate per mode (default 10000)")
    g.add_argument("--modes-clients", type=int, default=10)
    g.add_argument(
        "--profile-fanout-rate", type=float, default=None, help="rate of the profiled fan-out step"
    )
    g = p.add_argument_group("scaling (worker processes over ingest partitions)")
    g.add_argument(
        "--scaling-events",
        type=int,
        default=None,
        help=f"backlog per run, XADDed before the workers start (default {d['scaling_events']})",
    )
    g.add_argument(
        "--scaling-rounds",
        type=int,
        default=None,
        help="rounds of the configurations P=1/1 worker, P=2/1 worker, P=2/2 workers, run "
        f"alternately (default {d['scaling_rounds']}, 1 with --quick)",
    )
    g.add_argument(
        "--scaling-configs",
        type=lambda s: [x for x in s.split(",") if x],
        default=["p1w1", "p2w1", "p2w2"],
        help="which configurations: p1w1 (P=1, 1 worker), p2w1, p2w2 (default all three)",
    )
    g.add_argument(
        "--scaling-starts",
        type=lambda s: [x for x in s.split(",") if x],
        default=["cold", "warm"],
        help="cold (workers start after the backlog), warm (workers already running), or both",
    )
    g.add_argument(
        "--scaling-cluster",
        action="store_true",
        help="also run them on an embedded 3-master Redis Cluster (REDIS_CLUSTER=true)",
    )
    g.add_argument(
        "--scaling-shared-session",
        action="store_true",
        help="start the workers in the bench's own session instead of one session each: with "
        "autogroup scheduling they then share one fair share of the CPU (the default gives each "
        "its own, as separate services would have)",
    )
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset from the full-run or --quick defaults."""
    which = 1 if args.quick else 0
    for name, values in DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, values[which])
    args.fanout_rates = sorted(args.fanout_rates)
    args.baseline_rates = sorted(args.baseline_rates)
    return args


def run(args: argparse.Namespace) -> int:
    from bench import fanout, ingest, modes, queries, realtime, report, scaling, soak
    from bench.context import Bench
    from bench.harness import Redis, background_load, code_version, machine_info

    opts = resolve(args)
    json_path = Path(opts.json)
    out_dir = json_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def say(text: str) -> None:
        print(text, flush=True)

    redis = Redis()
    bench = Bench(opts=opts, redis=redis, out_dir=out_dir, py_spy=None, say=say)
    machine = machine_info(redis.version())
    if opts.profile:
        bench.py_spy = machine["py_spy"]
        if not bench.py_spy:
            say("--profile: py-spy not found (pip install py-spy); running without profiles")
    results: dict = {
        "meta": {
            "started": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
            "quick": opts.quick,
            "sections": opts.only,
            "options": {k: v for k, v in vars(opts).items() if k not in ("func",)},
            "machine": machine,
            "code": code_version(),
            "host": platform.node(),
        },
    }
    say(
        f"bench: {'quick' if opts.quick else 'full'} run of {', '.join(opts.only)}; "
        f"{machine['cpu_model']}, {machine['logical_cpus']} CPUs, Python {machine['python']}, "
        f"redis-server {machine['redis_server']}"
    )
    failed = []
    try:
        for section in SECTIONS:
            if section not in opts.only:
                continue
            say(f"\n== {section} ==")
            redis.client.flushall()
            background = background_load(opts.background_seconds)
            results["meta"].setdefault("background_before_section", {})[section] = background
            say(
                f"  background: machine {background['machine_busy_pct']}% busy before we start "
                f"(load {background['load_avg_1m']}; {', '.join(background['top_processes']) or 'no single process over 1%'})"
            )
            t0 = time.monotonic()
            try:
                if section == "ingest":
                    results["ingest"] = ingest.ingest(
                        bench, events=opts.ingest_events, publishers=opts.publishers
                    )
                    if opts.profile and bench.py_spy:
                        say("  ingest: profiled repeat ...")
                        redis.client.flushall()
                        results["ingest"]["profiled_run"] = ingest.ingest(
                            bench, events=opts.ingest_events, publishers=opts.publishers, profile=True
                        )
                elif section == "realtime":
                    results["realtime"] = realtime.realtime(bench)
                elif section == "late":
                    results["late"] = ingest.late(
                        bench,
                        events=opts.late_events,
                        publishers=opts.publishers,
                        rounds=opts.late_rounds,
                        profile=bool(opts.profile and bench.py_spy),
                    )
                elif section == "fanout":
                    results["fanout"] = fanout.fanout(bench)
                elif section == "baseline":
                    results["baseline"] = fanout.baseline(bench, results.get("fanout"))
                elif section == "queries":
                    results["queries"] = queries.queries(bench)
                elif section == "soak":
                    results["soak"] = soak.soak(bench)
                elif section == "modes":
                    results["modes"] = modes.modes(bench)
                elif section == "scaling":
                    results["scaling"] = scaling.scaling(bench)
                results[section]["elapsed_s"] = round(time.monotonic() - t0, 1)
                say(report.section(section, results[section], opts))
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                failed.append(section)
                results[section] = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
                say(f"  {section} FAILED: {type(exc).__name__}: {exc}")
            _write(json_path, results, started)
    except KeyboardInterrupt:
        say("\ninterrupted: writing what was measured so far")
        results["meta"]["interrupted"] = True
    finally:
        _write(json_path, results, started)
        redis.close()
    say("\n" + report.targets(results, opts))
    say(f"\nresults: {json_path}  (logs and profiles in {out_dir})")
    return 1 if failed or results["meta"].get("interrupted") else 0


def _write(path: Path, results: dict, started: float) -> None:
    from bench import report

    results["meta"]["elapsed_s"] = round(time.time() - started, 1)
    results["targets"] = report.target_rows(results)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    tmp.replace(path)


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(
        argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    )


def main(argv: list[str] | None = None) -> int:
    from backend.config import load
    from backend.logsetup import setup

    args = build_parser().parse_args(argv)
    config = load()  # the environment (and .env) is read here
    setup("WARNING" if config.LOG_LEVEL.upper() == "INFO" else config.LOG_LEVEL, config.LOG_FORMAT)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
