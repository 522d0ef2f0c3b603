"""`pulseboard import`: the real command against a real server (INGEST_TRANSPORT=stream) and Redis.

Counts are checked where they are decided: the worker's `accepted` counter and the aggregates the
API serves, per metric and per minute, against what the test wrote into the file.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from backend.cli.procs import pulseboard_command
from tests.conftest import ROOT
from tests.helpers import wait_for

STREAM = {"INGEST_TRANSPORT": "stream"}
METRICS = ("imp.a", "imp.b", "imp.c", "imp.d", "imp.e")


def run_import(server, *args: str, stdin=None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**server.env, "LOG_LEVEL": "WARNING"}
    return subprocess.run(
        pulseboard_command("import", *args),
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_import(server, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        pulseboard_command("import", *args),
        cwd=ROOT,
        env={**server.env, "LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stat(r, server, name: str) -> int:
    return int(r.hget(f"{server.env['KEY_PREFIX']}stats", name) or 0)


def epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).timestamp())


def per_minute(server, metric: str) -> Counter:
    body = server.get(f"/api/metrics/timeseries?window=3600&step=60&metric={metric}").json()
    return Counter({epoch(p["t"]): p["count"] for p in body["points"] if p["count"]})


def test_import_of_100k_events_spread_over_50_minutes_gives_exact_counts(server_factory, r, tmp_path):
    server = server_factory(env=STREAM)
    rng = random.Random(15)
    now = time.time()
    n = 100_000
    by_metric: Counter = Counter()
    by_minute: dict[str, Counter] = {m: Counter() for m in METRICS}
    path = tmp_path / "backlog.ndjson"
    with path.open("wb") as f:
        for i in range(n):
            metric = METRICS[rng.randrange(len(METRICS))]
            # Uniformly over the 50 minutes ending a minute ago, in random order: every chunk
            # touches thousands of seconds, the worker's hard case.
            ts = round(now - 3000 + rng.random() * 2940, 3)
            event = {"metric": metric, "value": {"ms": i % 500}, "ts": ts}
            if i % 3 == 0:
                event["tags"] = {"endpoint": f"/e{i % 7}"}
            f.write(orjson.dumps(event) + b"\n")
            by_metric[metric] += 1
            by_minute[metric][int(ts) // 60 * 60] += 1

    done = run_import(server, str(path))
    assert done.returncode == 0, done.stderr
    assert f"imported {path}: 100,000 events processed by the worker" in done.stdout
    assert "too old (more than RETENTION_S=3600s before now, not aggregated): 0" in done.stdout
    assert "rejected" not in done.stdout

    # The importer waited for the worker: everything is stored by the time it exits.
    assert stat(r, server, "accepted") == n
    assert stat(r, server, "rejected") == 0
    agg = server.get("/api/metrics/aggregate?window=3600").json()
    assert agg["aggregate"] == dict(by_metric)
    for metric in METRICS:
        assert agg["metrics"][metric]["fields"]["ms"]["count"] == by_metric[metric]
        assert per_minute(server, metric) == by_minute[metric], metric
    # Stream entries are all acknowledged: nothing left for the worker to redo.
    assert r.xpending(server.stream, "pulseboard")["pending"] == 0


def test_bad_lines_are_reported_with_reasons_and_the_rest_imported(server_factory, r, tmp_path):
    server = server_factory(env=STREAM)
    now = time.time()
    lines = [
        orjson.dumps({"metric": "good", "value": 1, "ts": now - 10}),  # 1
        b'{"metric": "good", "value": ',  # 2 invalid_json
        b"",  # 3 blank: skipped
        orjson.dumps({"value": 3}),  # 4 missing_metric
        orjson.dumps({"metric": "good", "value": 4, "ts": now - 7200}),  # 5 stale_ts: too old
        orjson.dumps({"metric": "bad name!", "value": 5}),  # 6 invalid_metric
        orjson.dumps({"metric": "good", "value": 6, "ts": now + 3600}),  # 7 future_ts
        b"[1, 2]",  # 8 not_object
        orjson.dumps({"metric": "good", "value": "high"}),  # 9 invalid_value
        orjson.dumps({"metric": "good", "value": 9, "ts": now - 1800}),  # 10
    ]
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.ndjson"

    done = run_import(server, str(path), "--rejects", str(rejects))
    assert done.returncode == 0, done.stderr
    assert "2 events processed by the worker" in done.stdout
    expected = {
        2: "invalid_json",
        4: "missing_metric",
        5: "stale_ts",
        6: "invalid_metric",
        7: "future_ts",
        8: "not_object",
        9: "invalid_value",
    }
    for line, reason in expected.items():
        assert f"line {line}: {reason}: " in done.stderr
    assert "line 5: stale_ts: too old: " in done.stderr
    assert "rejected 7 lines: " in done.stdout
    assert "too old (more than RETENTION_S=3600s before now, not aggregated): 1" in done.stdout
    kept = [orjson.loads(x) for x in rejects.read_bytes().splitlines()]
    assert {k["line"]: k["reason"] for k in kept} == expected
    assert kept[0]["raw"] == '{"metric": "good", "value": '

    assert stat(r, server, "accepted") == 2
    assert stat(r, server, "rejected") == 0  # the bad lines never reached the worker
    assert server.get("/api/metrics/aggregate?window=3600&metric=good").json()["aggregate"] == {"good": 2}


def test_csv_with_a_header_maps_columns_onto_events(server_factory, r, tmp_path):
    server = server_factory(env=STREAM)
    now = int(time.time())
    path = tmp_path / "events.csv"
    path.write_text(
        "metric,value,ts,status,endpoint\n"  # 1
        f"orders,12.5,{now - 60},ok,/checkout\n"  # 2
        f'orders,7,{now - 30},error,"/a,b"\n'  # 3: a quoted comma stays in the tag
        f"orders,,{now - 20},,/cart\n"  # 4: empty value: a pure count
        "orders,1,2\n"  # 5: too few cells
        f"orders,lots,{now},ok,/x\n"  # 6: invalid_value
        f'"orders",3,{now - 5},ok,"multi\nline"\n'  # 7-8: one record over two lines
        f"orders,4,{now - 4000},ok,/old\n",  # 9: too old
        encoding="utf-8",
    )
    done = run_import(server, str(path))
    assert done.returncode == 0, done.stderr
    assert "4 events processed by the worker" in done.stdout
    assert "line 5: invalid_csv: row has 3 cells; the header has 5" in done.stderr
    assert "line 6: invalid_value: " in done.stderr
    assert "line 9: stale_ts: too old: " in done.stderr
    assert "too old (more than RETENTION_S=3600s before now, not aggregated): 1" in done.stdout

    recent = server.get("/api/metrics/recent?metric=orders").json()["metrics"]
    got = sorted(((e["value"], e["status"], e["tags"]["endpoint"]) for e in recent), key=str)
    assert got == sorted(
        [(12.5, "ok", "/checkout"), (7, "error", "/a,b"), (None, "ok", "/cart"), (3, "ok", "multi\nline")],
        key=str,
    )
    body = server.get("/api/metrics/aggregate?window=3600&metric=orders").json()
    assert body["metrics"]["orders"]["count"] == 4 and body["metrics"]["orders"]["errors"] == 1


def test_interrupted_import_resumes_with_exactly_the_remainder(server_factory, r, tmp_path):
    # The worker in the server's own process, so that SIGSTOP below freezes it (WORKER_MODE=auto
    # runs it in a child process on a multi-core machine, which went on draining the backlog).
    server = server_factory(env={**STREAM, "WORKER_MODE": "thread"})
    n = 20_000
    now = time.time()
    path = tmp_path / "resume.ndjson"
    path.write_bytes(
        b"".join(
            orjson.dumps({"metric": "resume", "value": i, "ts": now - 600 + i * 0.02}) + b"\n"
            for i in range(n)
        )
    )
    # Freeze the worker so the importer fills its backlog bound and waits: the interrupt then
    # lands mid-import for certain.
    server.process.send_signal(signal.SIGSTOP)
    try:
        proc = start_import(server, str(path), "--max-backlog", "5000", "--chunk", "500")
        wait_for(
            lambda: r.xlen(server.stream) >= 4500, timeout=30, message="the importer to fill the backlog"
        )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert proc.returncode == 130, err
    assert out.startswith("interrupted ")
    resume = int(re.search(r"--resume-from (\d+)", err).group(1))
    assert 4500 < resume <= 6001  # it stopped at the bound, after queueing the chunk in hand

    done = run_import(server, str(path), "--resume-from", str(resume))
    assert done.returncode == 0, done.stderr
    assert f"{n - resume + 1:,} events processed by the worker" in done.stdout

    assert stat(r, server, "accepted") == n
    body = server.get("/api/metrics/aggregate?window=3600&metric=resume").json()
    field = body["metrics"]["resume"]["fields"]["value"]
    # Every value once: the count and the sum (exact for these integers) both match 0..n-1.
    assert field["count"] == n and field["sum"] == sum(range(n))
    assert field["min"] == 0 and field["max"] == n - 1


def test_stdin_and_unreadable_files(server_factory, r, tmp_path):
    server = server_factory(env=STREAM)
    done = run_import(server, "-", stdin='{"metric": "piped", "value": 1}\n{"metric": "piped"}\n')
    assert done.returncode == 0, done.stderr
    assert "imported stdin: 2 events processed by the worker" in done.stdout
    assert stat(r, server, "accepted") == 2

    missing = run_import(server, str(tmp_path / "nope.ndjson"))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"pulseboard import: cannot read {tmp_path / 'nope.ndjson'}: No such file or directory"
    ]
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("name,value\nx,1\n")
    done = run_import(server, str(bad_header))
    assert done.returncode == 1
    assert "no 'metric' column" in done.stderr


@pytest.mark.parametrize("transport", ["pubsub"])
def test_refuses_when_no_worker_reads_the_stream(server_factory, r, tmp_path, transport):
    server = server_factory(env={"INGEST_TRANSPORT": transport})
    path = Path(tmp_path / "one.ndjson")
    path.write_text('{"metric": "x"}\n')
    done = run_import(server, str(path))
    assert done.returncode == 1
    assert "no worker consumes stream" in done.stderr and "INGEST_TRANSPORT=stream" in done.stderr
    assert r.xlen(server.stream) == 0  # nothing queued that nobody would read
