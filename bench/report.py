"""Readable tables of the results, and the targets met or not."""

from __future__ import annotations


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, list):
        return "/".join(_fmt(v) for v in x)
    return str(x)


def _step_rows(steps: list[dict]) -> list[list]:
    rows = []
    for s in steps:
        if "skipped" in s:
            rows.append([s.get("clients"), s["target_rate"], "skipped: " + s["skipped"]] + [None] * 11)
            continue
        lat = s["latency_ms"]
        rows.append(
            [
                s["clients"],
                s["target_rate"],
                s["publish_rate"],
                s["published"],
                s["received_min"],
                s["lost"],
                s["exactly_once"],
                lat["p50_ms"],
                lat["p95_ms"],
                lat["p99_ms"],
                s["server_cpu_pct"],
                s["server_rss_mb"],
                s["client_procs_cpu_pct"],
                s["kept_up"],
            ]
        )
    return rows


STEP_HEADERS = [
    "clients",
    "target/s",
    "pub/s",
    "published",
    "recv min",
    "lost",
    "exact",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "srv CPU%",
    "srv MB",
    "clients CPU%",
    "kept up",
]


def section(name: str, r: dict, opts) -> str:
    if "error" in r:
        return f"  {name}: ERROR {r['error']}"
    if name == "realtime":
        from bench.realtime import line

        return "\n".join(line(run) for run in r["runs"])
    if name == "ingest":
        # "bare sub" is a bare Pub/Sub subscriber, or with the stream transport a bare consumer group
        return _ingest_table([(f"eventlet/{r.get('transport', 'pubsub')}", r)])
    if name == "late":
        rows = [
            [
                kind,
                r["events"],
                "now" if kind == "in_order" else f"uniform over {r['spread_s']}s",
                r[kind]["rate"],
                r[kind]["publish_rate"],
                r[kind]["cpu_pct"].get("server"),
                r[kind]["cpu_pct"].get("redis"),
                r[kind]["accepted"],
            ]
            for kind in ("in_order", "spread")
        ]
        heads = ["burst", "events", "ts", "worker /s", "pub /s", "srv CPU%", "redis CPU%", "accepted"]
        return (
            table(heads, rows)
            + f"\n  spread / in-order: {_fmt(r['ratio'])} (best of {len(r.get('rounds', [])) // 2} rounds each; "
            f"all rounds, in-order/spread: {', '.join(_fmt(x['rate']) for x in r.get('rounds', []))}; "
            f"{r['transport']} transport; rejected {r['rejected']})"
        )
    if name in ("fanout",):
        steps = [dict(s, clients=run["clients"]) for run in r["runs"] for s in run["steps"]]
        return table(STEP_HEADERS, _step_rows(steps))
    if name == "baseline":
        steps = [dict(s, clients=r["clients"]) for s in r["per_event"]["steps"]]
        out = ["per-event strategy (WORKER_STRATEGY=per_event):", table(STEP_HEADERS, _step_rows(steps))]
        rows = [
            [k, v["batch_rate"], v["batch_lower_bound_only"], v["per_event_rate"], v["ratio"]]
            for k, v in r["criteria"].items()
        ]
        out += [
            "",
            f"sustainable rate at {r['clients']} clients (0 lost, exactly once, kept up):",
            table(["criterion", "batch /s", "batch ≥ (ladder top)", "per-event /s", "ratio"], rows),
        ]
        return "\n".join(out)
    if name == "queries":
        rows = []
        for mode, label in (("at_rest", "at rest"), ("live", f"live {r['live_rate']:g}/s")):
            rows += [
                [label, k, v["n"], v["p50_ms"], v["p95_ms"], v["p99_ms"], v["max_ms"], v["bytes"]]
                for k, v in r[mode].items()
            ]
        f = r["fill"]
        head = (
            f"filled {f['events']:,} events over {f['window_s']} s ({f['bucket_keys']} bucket hashes, "
            f"{f['fill_events_per_s']:,.0f} events/s through validate+aggregate+write_batch)"
        )
        return (
            head
            + "\n"
            + table(
                ["data", "GET /api/metrics/…", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "bytes"], rows
            )
        )
    if name == "soak":
        rss, mem, lat = r["server_rss_mb"], r["redis_used_memory_mb"], r["latency_ms"]
        return table(
            [
                "s",
                "rate/s",
                "clients",
                "published",
                "lost",
                "exact",
                "p99 ms",
                "RSS start/warm/end/max MB",
                "RSS drift",
                "redis MB start/end",
            ],
            [
                [
                    r["seconds"],
                    r["publish_rate"],
                    r["clients"],
                    r["published"],
                    r["lost"],
                    r["exactly_once"],
                    lat["p99_ms"],
                    [rss["start"], rss["warm"], rss["end"], rss["max"]],
                    f"{r['rss_drift_pct_from_warm']:+.1f}%",
                    [mem["start"], mem["end"]],
                ]
            ],
        )
    if name == "modes":
        ing = [(m, e["ingest"]) for m, e in r.items() if isinstance(e, dict) and "ingest" in e]
        out = [_ingest_table(ing)]
        steps = []
        for m, e in r.items():
            if isinstance(e, dict) and "fanout" in e:
                steps += [dict(s, clients=f"{m}:{e['fanout']['clients']}") for s in e["fanout"]["steps"]]
            elif isinstance(e, dict) and "error" in e:
                out.append(f"{m}: ERROR {e['error']}")
        out += ["", table(STEP_HEADERS, _step_rows(steps))]
        return "\n".join(out)
    if name == "scaling":
        from bench import scaling

        return "\n".join([table(scaling.HEADERS, scaling.rows(r)), *scaling.summary_lines(r)])
    return ""


def _ingest_table(entries: list[tuple[str, dict]]) -> str:
    rows = []
    for mode, r in entries:
        if "error" in r:
            rows.append([mode, "ERROR"] + [None] * 8)
            continue
        w, b = r["worker"], r["bare"]
        rows.append(
            [
                mode,
                r["events"],
                w["rate"],
                w["publish_rate"],
                b["rate"],
                r["ratio_to_bare"],
                w["cpu_pct"].get("server"),
                w["cpu_pct"].get("redis"),
                w["rss_mb_after"],
                w["accepted"],
            ]
        )
    return table(
        [
            "mode",
            "events",
            "worker /s",
            "pub /s",
            "bare sub /s",
            "ratio",
            "srv CPU%",
            "redis CPU%",
            "srv MB",
            "accepted",
        ],
        rows,
    )


def target_rows(results: dict) -> list[dict]:
    rows = []

    def add(target: str, value, met, note: str = "") -> None:
        rows.append({"target": target, "value": value, "met": met, "note": note})

    rt = results.get("realtime")
    if rt and "runs" in rt:
        _realtime_rows({r["label"]: r for r in rt["runs"]}, add)
    ing = results.get("ingest")
    if ing and "worker" in ing:
        rate = ing["worker"]["rate"]
        add(
            "ingest >= 50,000 events/s",
            rate,
            rate is not None and rate >= 50_000,
            f"{rate / 50_000:.2f}x of target" if rate else "did not complete",
        )
        ratio = ing["ratio_to_bare"]
        add(
            "ingest >= 40% of a bare subscriber",
            ratio,
            ratio is not None and ratio >= 0.40,
            f"bare subscriber {ing['bare']['rate']}/s",
        )
    late = results.get("late")
    if late and "ratio" in late:
        ratio = late["ratio"]
        add(
            "late events (ts spread over the hour) >= 50% of the in-order ingest rate",
            ratio,
            ratio is not None and ratio >= 0.5,
            f"in-order {late['in_order']['rate']}/s, spread {late['spread']['rate']}/s",
        )
    fan = results.get("fanout")
    if fan and "runs" in fan:
        run50 = next((r for r in fan["runs"] if r["clients"] == 50), None)
        if run50:
            step = next(
                (s for s in run50["steps"] if s.get("target_rate") == 20000 and "skipped" not in s), None
            )
            sus = fan["sustainable"]["50"]
            if step:
                ok = bool(
                    step["kept_up"]
                    and step["latency_ms"]["p99_ms"] is not None
                    and step["latency_ms"]["p99_ms"] <= 100
                )
                add(
                    "20,000 events/s to 50 clients, 0 lost, p99 <= 100 ms",
                    f"lost {step['lost']}, p99 {step['latency_ms']['p99_ms']} ms",
                    ok,
                    f"sustainable at 50 clients: {sus['rate']}/s",
                )
            else:
                add(
                    "20,000 events/s to 50 clients, 0 lost, p99 <= 100 ms",
                    None,
                    False,
                    f"20k step not run or skipped; sustainable at 50 clients: {sus['rate']}/s",
                )
    base = results.get("baseline")
    if base and "criteria" in base:
        for crit, v in base["criteria"].items():
            add(
                f"batch vs per-event at {base['clients']} clients >= 10x ({crit})",
                v["ratio"],
                v["ratio"] is not None and v["ratio"] >= 10,
                f"batch {v['batch_rate']}/s{' (ladder top: a lower bound)' if v['batch_lower_bound_only'] else ''}, "
                f"per-event {v['per_event_rate']}/s",
            )
    q = results.get("queries")
    if q and "aggregate_3600_p95_ms" in q:
        v = q["aggregate_3600_p95_ms"]
        add(
            "aggregate over 3600 s p95 <= 10 ms (live ingest)",
            v,
            v <= 10,
            f"{v / 10:.1f}x the target; at rest (cacheable) {q['aggregate_3600_p95_ms_at_rest']} ms",
        )
    s = results.get("soak")
    if s and "rss_drift_pct_from_warm" in s:
        d = s["rss_drift_pct_from_warm"]
        add(
            "soak RSS flat within ±10%",
            d,
            abs(d) <= 10,
            f"{s['seconds']:g}s at {s['target_rate']:g}/s, from start {s['rss_drift_pct_from_start']:+.1f}%",
        )
    return rows


# label: (target, p50 at most, p99 at most): 0 lost, 0 duplicates and 0 dropped always
_REALTIME_TARGETS = {
    "batch-1k": ("1,000 events/s to 50 batch clients: p50 <= 3, p99 <= 20 ms", 3, 20),
    "event-2k": ("2,000 events/s to 50 per-event clients: p99 <= 200 ms", None, 200),
    "batch-20k": ("20,000 events/s to 50 batch clients: p99 <= 100 ms", None, 100),
    "batch-40k": ("40,000 events/s to 50 batch clients: p99 <= 250 ms", None, 250),
    "batch-20k-original": ("20,000 events/s (original's events): p99 <= 100 ms", None, 100),
    "batch-40k-original": ("40,000 events/s (original's events): p99 <= 250 ms", None, 250),
    "event-500-readers": ("500 events/s to 5 clients beside 8 wide readers: p99 <= 250 ms", None, 250),
}


def _realtime_rows(runs: dict, add) -> None:
    for label, (target, p50_max, p99_max) in _REALTIME_TARGETS.items():
        r = runs.get(label)
        if r is None:
            continue
        clean = r["lost"] == 0 and r["duplicates"] == 0 and r["dropped_by_server"] == 0
        fast = r["p99_ms"] is not None and r["p99_ms"] <= p99_max
        if p50_max is not None:
            fast = fast and r["p50_ms"] is not None and r["p50_ms"] <= p50_max
        add(
            target + ", 0 lost",
            f"lost {r['lost']}, p50 {r['p50_ms']}, p99 {r['p99_ms']} ms",
            clean and fast,
            f"{r.get('shape', 'mixed')} events; clients' CPU {r['client_cpu_pct']}%",
        )
    stalled, plain = runs.get("batch-1k-stalled"), runs.get("batch-1k")
    if stalled is not None:
        after = stalled.get("stalled_dropped_after_s")
        note = ""
        if plain is not None and plain["p99_ms"] and stalled["p99_ms"] is not None:
            note = f"others' p99 {stalled['p99_ms']} ms, {plain['p99_ms']} ms without it"
        add("a stalled client is dropped within 10 s", after, after is not None and after <= 10, note)


def targets(results: dict, opts) -> str:
    rows = target_rows(results)
    if not rows:
        return "targets: none of the sections with targets ran"
    return "targets:\n" + table(
        ["target", "measured", "met", "note"], [[r["target"], r["value"], r["met"], r["note"]] for r in rows]
    )
