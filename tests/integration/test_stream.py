"""INGEST_TRANSPORT=stream: the durable ingest path, with real Redis and real server processes.

Exactly once is checked where it is decided, in Redis: the worker's `accepted` counter and the
aggregates (written in the transaction that acknowledges the stream entries), plus every seq and
id being unique in what clients and /api/metrics/recent got.
"""

from __future__ import annotations

import signal
import threading
import time

import orjson
import pytest
import requests

from backend.ingest.stream import CONSUMER, GROUP
from tests.helpers import paced_producer, wait_for
from tests.integration.sio import Recorder

STREAM = {"INGEST_TRANSPORT": "stream"}
MQ = {"MESSAGE_QUEUE": "true", "LEASE_TTL_MS": "1500", **STREAM}


def xadd(r, stream: str, events: list, field: str = "event") -> None:
    pipe = r.pipeline(transaction=False)
    for event in events:
        pipe.xadd(stream, {field: event if isinstance(event, (bytes, str)) else orjson.dumps(event)})
    pipe.execute()


def stat(r, names: dict, name: str) -> int:
    return int(r.hget(f"{names['KEY_PREFIX']}stats", name) or 0)


def aggregate_count(server, metric: str) -> int:
    body = requests.get(f"{server.url}/api/metrics/aggregate?window=300&metric={metric}", timeout=5).json()
    return body["aggregate"].get(metric, 0)


def pending(r, stream: str) -> int:
    return r.xpending(stream, GROUP)["pending"]


def test_events_added_while_no_worker_runs_are_processed_once_when_one_starts(server_factory, r, names):
    stream = names["INGEST_STREAM"]
    # No server and no consumer group yet: the stream is created by the producer.
    xadd(r, stream, [{"metric": "backlog", "value": i} for i in range(3000)])
    env = {**STREAM, "RECENT_MAX": "5000"}
    server = server_factory(env=env)
    wait_for(lambda: stat(r, names, "accepted") == 3000, timeout=20, message="3000 accepted")
    assert aggregate_count(server, "backlog") == 3000
    recent = server.get("/api/metrics/recent?limit=5000&metric=backlog").json()["metrics"]
    assert sorted(e["value"] for e in recent) == list(range(3000))
    seqs = [e["seq"] for e in recent]
    assert len(set(seqs)) == len(seqs) == 3000
    assert pending(r, stream) == 0
    health = server.get("/api/health").json()["worker"]
    assert health["transport"] == "stream"

    # A restart re-reads nothing that was acknowledged; what arrived meanwhile is processed once.
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=10) == 0
    xadd(r, stream, [{"metric": "backlog", "value": i} for i in range(3000, 3500)])
    server = server_factory(env=env)
    wait_for(lambda: stat(r, names, "accepted") >= 3500, timeout=20, message="3500 accepted")
    wait_for(lambda: aggregate_count(server, "backlog") >= 3500, message="aggregate caught up")
    assert stat(r, names, "accepted") == 3500 and aggregate_count(server, "backlog") == 3500
    assert r.hget(f"{names['KEY_PREFIX']}stats", "rejected") is None
    # The worker trims what it acknowledged (XTRIM MINID ~: whole 100-entry nodes), so a drained
    # stream keeps at most about one node of history.
    wait_for(lambda: r.xlen(stream) <= 100, timeout=10, message="acknowledged entries trimmed")


def test_sigkill_of_the_active_worker_under_load_loses_and_repeats_nothing(server_factory, r, names):
    stream = names["INGEST_STREAM"]
    workers = [server_factory(command="worker", env=MQ) for _ in range(2)]
    web = server_factory(args=("--no-worker",), env=MQ)

    def active():
        for w in workers:
            if w.process.poll() is None and "active, subscribed" in w.log():
                return w
        return None

    first = wait_for(active, timeout=15, message="an active worker")
    standby = next(w for w in workers if w is not first)
    wait_for(lambda: "is standby" in standby.log(), timeout=10, message="the second worker to stand by")

    total, chunk, every_s = 20_000, 200, 0.05  # 4,000 events/s for 5 s

    def send(start: int, stop: int) -> None:
        xadd(r, stream, [{"metric": "load", "value": i} for i in range(start, stop)])

    with Recorder(web.url, batch_window=60) as rec:
        wait_for(lambda: rec.sub_acks, message="subscribe ack")
        producer = paced_producer(send, total, chunk, every_s)
        wait_for(lambda: stat(r, names, "accepted") >= 3000, timeout=20, message="the first worker busy")
        first.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        accepted_at_kill = stat(r, names, "accepted")
        wait_for(lambda: "active, subscribed" in standby.log(), timeout=15, message="standby takeover")
        takeover_s = time.monotonic() - killed_at
        producer.join(30)
        assert not producer.is_alive() and producer.produced == total
        wait_for(lambda: stat(r, names, "accepted") >= total, timeout=30, message="everything accepted")
        # Broadcasts follow the stream's order: a late duplicate would reach the client before this.
        xadd(r, stream, [{"metric": "end"}])
        wait_for(lambda: rec.got_marker("end"), timeout=15, message="the end marker")
        received = rec.batched_events()[:-1]

    assert accepted_at_kill < total, "the kill must land mid-stream"
    assert stat(r, names, "accepted") == total + 1  # stored once each: acked in the same transaction
    assert aggregate_count(web, "load") == total
    assert pending(r, stream) == 0
    ids = [e["id"] for e in received]
    seqs = [e["seq"] for e in received]
    assert len(set(ids)) == len(ids) and len(set(seqs)) == len(seqs)  # no duplicates
    values = {e["value"] for e in received}
    assert values <= set(range(total))
    # A worker killed between its EXEC and its emit has stored and acknowledged a batch it never
    # broadcast: clients can miss that one batch (GET /api/metrics/recent?after=SEQ has it).
    missed = total - len(values)
    print(
        f"\nstream transport, SIGKILL of the active worker at {accepted_at_kill}/{total} events: "
        f"standby took over after {takeover_s:.2f}s; accepted {stat(r, names, 'accepted')} "
        f"(exactly once); clients got {len(received)} events, 0 duplicates, {missed} never broadcast"
    )
    assert missed <= 5000  # at most the killed worker's last batch (MAX_BATCH)


def test_a_worker_that_stalls_past_its_lease_stores_nothing_twice(server_factory, r, names):
    """SIGSTOP the active worker under load for longer than its lease, then let it go on: its
    successor has re-read its pending entries meanwhile, and whatever the stalled one was holding
    (a batch about to be written, or entries its blocked read was given) must not be stored
    again (the write is fenced by the lease) nor stay pending (they are claimed back)."""
    stream = names["INGEST_STREAM"]
    workers = [server_factory(command="worker", env=MQ) for _ in range(2)]
    web = server_factory(args=("--no-worker",), env=MQ)

    def active():
        return next((w for w in workers if "active, subscribed" in w.log()), None)

    first = wait_for(active, timeout=15, message="an active worker")
    standby = next(w for w in workers if w is not first)
    wait_for(lambda: "is standby" in standby.log(), timeout=10, message="the second worker to stand by")
    total = 10_000
    producer = threading.Thread(
        target=lambda: [
            (xadd(r, stream, [{"metric": "stall", "value": i} for i in range(s, s + 100)]), time.sleep(0.025))
            for s in range(0, total, 100)
        ],
        daemon=True,
    )
    producer.start()
    wait_for(lambda: stat(r, names, "accepted") >= 1000, timeout=20, message="the first worker busy")
    first.process.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: "active, subscribed" in standby.log(), timeout=15, message="standby takeover")
        wait_for(lambda: stat(r, names, "accepted") >= 5000, timeout=20, message="the standby busy")
    finally:
        first.process.send_signal(signal.SIGCONT)
    wait_for(lambda: "lost its lease" in first.log(), timeout=10, message="the stalled worker to notice")
    # Back in standby, the stalled worker holds nothing more it could write.
    wait_for(
        lambda: "is standby" in first.log().split("lost its lease", 1)[1],
        timeout=10,
        message="the stalled worker to stand by",
    )
    producer.join(30)
    wait_for(lambda: stat(r, names, "accepted") >= total and pending(r, stream) == 0, timeout=30)
    assert stat(r, names, "accepted") == total
    assert aggregate_count(web, "stall") == total
    assert first.process.poll() is None  # back as a standby, not crashed


def test_malformed_entries_are_dead_lettered_and_acknowledged(server_factory, r, names):
    stream = names["INGEST_STREAM"]
    # An entry delivered to a worker that died, then trimmed away before anyone acknowledged it:
    # the next worker finds it pending with no fields.
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    xadd(r, stream, [{"metric": "ghost"}])
    (ghost_id, _), *_ = r.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=1)[0][1]
    r.xdel(stream, ghost_id)
    xadd(r, stream, ["hello"], field="other")  # no event field
    xadd(r, stream, [b"{not json", {"metric": 5}, {"metric": "good", "value": 1}])

    server = server_factory(env=STREAM)
    wait_for(lambda: stat(r, names, "rejected") == 4, timeout=15, message="4 dead letters")
    wait_for(lambda: stat(r, names, "accepted") == 1, message="the good one accepted")
    body = server.get("/api/metrics/rejected?limit=10").json()
    assert body["reasons"] == {"invalid_entry": 2, "invalid_json": 1, "invalid_metric": 1}
    details = {item["reason"] + ": " + item["detail"] for item in body["rejected"]}
    assert any("trimmed" in d for d in details), details
    assert any("no 'event' field" in d for d in details), details
    assert any(item["raw"] == '{"other":"hello"}' for item in body["rejected"])
    assert pending(r, stream) == 0  # dead letters are acknowledged like good events
    assert server.get("/api/ready").status_code == 200


def test_stream_mode_still_takes_pubsub_and_the_ingest_api_xadds(server_factory, r, names):
    server = server_factory(env=STREAM)
    with Recorder(server.url, batch_window=60) as rec:
        wait_for(lambda: rec.sub_acks, message="subscribe ack")
        # The original wire contract: PUBLISH on the channel, processed best effort as before.
        pipe = r.pipeline(transaction=False)
        for i in range(50):
            pipe.publish(names["REDIS_CHANNEL"], orjson.dumps({"metric": "wire", "value": i}))
        pipe.execute()
        wait_for(lambda: len(rec.batched_events()) >= 50, message="published events")
        # POST /api/ingest goes through the stream now.
        resp = server.post("/api/ingest", json=[{"metric": "api", "value": i} for i in range(20)])
        assert resp.status_code == 202, resp.text
        xadd(r, names["INGEST_STREAM"], [{"metric": "xadd", "value": i} for i in range(30)])
        wait_for(lambda: len(rec.batched_events()) >= 100, message="ingested and XADDed events")
        # Broadcast in order: a duplicate of any of the 100 would reach the client before this.
        xadd(r, names["INGEST_STREAM"], [{"metric": "end"}])
        wait_for(lambda: rec.got_marker("end"), message="the end marker")
        got = rec.batched_events()[:-1]
    by_metric: dict[str, list] = {}
    for e in got:
        by_metric.setdefault(e["metric"], []).append(e["value"])
    assert by_metric == {"wire": list(range(50)), "api": list(range(20)), "xadd": list(range(30))}
    assert [e["id"] for e in got if e["metric"] == "api"] == resp.json()["ids"]
    info = r.xinfo_groups(names["INGEST_STREAM"])[0]
    assert info["entries-read"] == 51 and info["pending"] == 0  # the API's 20, our 30 and the marker


def test_the_consumer_group_is_recreated_when_redis_loses_it(server_factory, r, names):
    stream = names["INGEST_STREAM"]
    server = server_factory(env=STREAM)
    xadd(r, stream, [{"metric": "before", "value": i} for i in range(10)])
    wait_for(lambda: stat(r, names, "accepted") == 10, message="10 accepted")
    r.flushdb()  # what an embedded Redis restarted without persistence looks like to the worker
    xadd(r, stream, [{"metric": "after", "value": i} for i in range(10)])  # a new stream, no group
    wait_for(lambda: stat(r, names, "accepted") == 10, timeout=15, message="10 accepted after the flush")
    assert aggregate_count(server, "after") == 10
    assert server.process.poll() is None
    assert server.get("/api/ready").status_code == 200
    assert pending(r, stream) == 0


@pytest.mark.parametrize("mode", ["gevent", "threading"])
def test_other_async_modes_read_the_stream_and_the_channel(server_factory, r, names, mode):
    server = server_factory(args=("--async-mode", mode), env=STREAM)
    with Recorder(server.url, batch_window=60) as rec:
        wait_for(lambda: rec.sub_acks, message="subscribe ack")
        xadd(r, names["INGEST_STREAM"], [{"metric": "mode", "value": i} for i in range(50)])
        wait_for(lambda: len(rec.batched_events()) >= 50, message=f"50 stream events under {mode}")
        r.publish(names["REDIS_CHANNEL"], orjson.dumps({"metric": "mode", "value": 50}))
        wait_for(lambda: len(rec.batched_events()) >= 51, message=f"a published event under {mode}")
    assert [e["value"] for e in rec.batched_events()] == list(range(51))


def test_entries_stuck_pending_elsewhere_are_claimed_and_processed(server_factory, r, names):
    """An entry handed to a reader that never acknowledged it (a worker that lost its lease after
    its successor's replay, or any other consumer name) is taken over once it has waited a lease
    TTL, instead of staying pending for good."""
    stream = names["INGEST_STREAM"]
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    xadd(r, stream, [{"metric": "stuck", "value": 1}])
    r.xreadgroup(GROUP, "someone-else", {stream: ">"}, count=1)
    xadd(r, stream, [{"metric": "fresh", "value": 2}])
    server = server_factory(env={**STREAM, "LEASE_TTL_MS": "1500"})
    wait_for(lambda: aggregate_count(server, "fresh") == 1, message="the fresh entry")
    wait_for(lambda: aggregate_count(server, "stuck") == 1, timeout=15, message="the stuck entry")
    assert "pending for over 1500 ms; re-reading them" in server.log()
    assert pending(r, stream) == 0 and stat(r, names, "accepted") == 2
