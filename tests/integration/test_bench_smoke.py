"""`python -m bench` end to end, tiny: it runs, measures for real and writes sane JSON.

No speed thresholds here: machines are noisy, and the benchmark's job is to report figures, not
to pass or fail them. The benchmark runs as a subprocess (`python -m bench`), so the
server's eventlet is never imported into the test process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(tmp_path: Path, *args: str, timeout: float = 90) -> tuple[dict, str]:
    """`python -m bench` with `args` (no idle watch before each section): its JSON results and
    what it printed. The CLI takes sections and sizes only; everything else (Redis, server,
    clients) it starts itself on loopback and stops again."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--background-seconds", "0.2", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.parametrize("transport", ["pubsub", "stream"])
def test_tiny_benchmark_measures_ingest_and_fanout(tmp_path, transport):
    results, _ = run_bench(
        tmp_path,
        "--only", "ingest,fanout",
        "--ingest-events", "2000",
        "--publishers", "1",
        "--fanout-clients", "2",
        "--fanout-rates", "500",
        "--step-seconds", "2",
        "--drain-seconds", "10",
        "--client-procs", "1",
        # the stream transport: the publishers XADD and the bare reader is a consumer group
        "--server-env", f"INGEST_TRANSPORT={transport}",
    )  # fmt: skip

    meta = results["meta"]
    assert meta["sections"] == ["ingest", "fanout"]
    assert meta["machine"]["logical_cpus"] >= 1
    assert meta["machine"]["redis_server"]
    assert meta["machine"]["packages"]["python-socketio"]

    ingest = results["ingest"]
    assert "error" not in ingest, ingest.get("traceback")
    assert ingest["events"] == 2000
    assert ingest["transport"] == transport
    # The worker really took every event: the server's own counters say so.
    assert ingest["worker"]["completed"] is True
    assert ingest["worker"]["accepted"] == 2000
    assert ingest["worker"]["received"] == 2000
    assert ingest["worker"]["rejected"] == 0
    assert ingest["worker"]["rate"] > 0
    assert ingest["bare"]["received"] == 2000
    assert ingest["bare"]["rate"] > 0
    assert ingest["ratio_to_bare"] > 0
    assert ingest["event_bytes_avg"] > 50

    fanout = results["fanout"]
    assert "error" not in fanout, fanout.get("traceback")
    (run,) = fanout["runs"]
    assert run["clients"] == 2
    (step,) = run["steps"]
    assert step["published"] == 1000  # 500/s for 2 s
    # Every client got every event exactly once, in seq order, and nothing else.
    assert step["received_min"] == step["received_max"] == step["published"]
    assert step["lost"] == 0
    assert step["order_errors"] == 0
    assert step["foreign"] == 0
    assert step["coverage_ok"] is True
    assert step["exactly_once"] is True
    lat = step["latency_ms"]
    assert lat["samples"] == 2 * 1000  # one latency sample per delivery
    assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert step["server_cpu_pct"] > 0
    assert step["server_rss_mb"] > 10
    assert step["redis_used_memory_mb"] > 0

    # The summary of targets is there and refers to what was measured.
    targets = {row["target"]: row for row in results["targets"]}
    assert targets["ingest >= 50,000 events/s"]["value"] == ingest["worker"]["rate"]


def test_tiny_late_section_measures_in_order_and_spread_events(tmp_path):
    results, printed = run_bench(
        tmp_path, "--only", "late", "--late-events", "3000", "--late-rounds", "1", "--publishers", "1"
    )
    late = results["late"]
    assert "error" not in late, late.get("traceback")
    assert [r["kind"] for r in late["rounds"]] == ["in_order", "spread"]
    for kind in ("in_order", "spread"):
        # Every event of both bursts stored: the spread ones stay inside the retention window.
        assert late[kind]["completed"] is True and late[kind]["accepted"] == 3000
        assert late[kind]["rate"] > 0
    assert late["rejected"] == 0
    assert late["spread_s"] == 3600 - 120
    assert late["ratio"] == round(late["spread"]["rate"] / late["in_order"]["rate"], 3)
    assert "spread / in-order:" in printed


def test_tiny_scaling_section_drains_a_backlog_with_one_and_two_workers(tmp_path):
    results, printed = run_bench(
        tmp_path,
        "--only", "scaling",
        "--scaling-events", "3000",
        "--scaling-rounds", "1",
        # Warm, P=2 with 1 and 2 workers: the split, the hand-over and the ratio line; the
        # cold runs and P=1 add worker start-ups, not checks (a full run has them all).
        "--scaling-starts", "warm",
        "--scaling-configs", "p2w1,p2w2",
        timeout=240,
    )  # fmt: skip
    scaling = results["scaling"]
    assert "error" not in scaling, scaling.get("traceback")
    runs = scaling["single"]["runs"]
    assert [(r["start"], r["config"]) for r in runs] == [("warm", "p2w1"), ("warm", "p2w2")]
    for run in runs:
        assert "error" not in run, run
        # Every backlogged event stored exactly once, by the workers started for this run.
        assert run["completed"] is True and run["accepted"] == 3000
        assert sum(run["processed_by_worker"]) == 3000
        assert len(run["worker_cpu_pct"]) == run["workers"]
        assert sum(run["per_partition"]) == 3000 and len(run["per_partition"]) == run["partitions"]
    # Warm: the two workers split the partitions before the backlog, one partition each.
    warm2 = next(r for r in runs if r["start"] == "warm" and r["config"] == "p2w2")
    assert sorted(warm2["processed_by_worker"]) == sorted(warm2["per_partition"])
    assert "2 workers / 1 worker" in printed
