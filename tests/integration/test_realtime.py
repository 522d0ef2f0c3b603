"""Real time: natural batching, one script per batch, the fan-out, and the worker's own process."""

from __future__ import annotations

import os
import signal
import time

import orjson
import pytest

from backend.config import current
from backend.ingest.consumer import IDLE_WAIT_S, Consumer
from backend.ingest.pubsub import PubSubReader
from backend.ingest.sources import PubSubSource
from backend.realtime.broadcast import decode_fanout_message
from backend.realtime.fanout import batch_text, event_texts, text_frame
from tests.helpers import wait_for
from tests.integration.collect import Collect
from tests.integration.sio import Recorder


@pytest.fixture
def worker(redis_url, names):
    cfg = {**current().as_dict(), "REDIS_URL": redis_url, **names}
    w = Consumer(cfg, Collect())
    yield w
    w.store.redis.close()
    w.sub_client.close()


def test_a_batch_takes_what_is_waiting_and_never_waits_for_more(worker, r, names):
    """Natural batching: the reader takes messages off the socket as they arrive; a pump takes
    everything already there in one batch, and waits only while there is nothing at all."""
    pubsub = worker.sub_client.pubsub()
    pubsub.subscribe(names["REDIS_CHANNEL"])
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # the confirmation, out of the way
    pubsub.ignore_subscribe_messages = True
    assert worker.store.acquire_lease(worker.token, 3000)
    reader = PubSubReader(pubsub, max_bytes=1 << 20, start_task=worker.start_task).start()
    takes: list[tuple[int, float, int]] = []
    real = reader.take

    def spy(limit, timeout, max_bytes):
        got = real(limit, timeout, max_bytes)
        takes.append((limit, timeout, len(got)))
        return got

    reader.take = spy
    try:
        for i in range(3):
            r.publish(names["REDIS_CHANNEL"], orjson.dumps({"metric": "nb", "value": i}))
        wait_for(lambda: reader.pending() == 3, message="3 messages read off the socket")
        source = PubSubSource(reader, worker.max_batch, worker.max_batch_bytes)
        assert worker.pump(source) == 3
        assert takes == [(worker.max_batch, IDLE_WAIT_S, 3)]  # one take: all of them, no second wait
        (batch,) = worker.broadcaster.batches
        events = [orjson.loads(e) for e in batch]
        assert [e["value"] for e in events] == [0, 1, 2]
        assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[0]["seq"] + 3))

        # A lone event is a batch of its own: stored and handed over without waiting for company.
        r.publish(names["REDIS_CHANNEL"], orjson.dumps({"metric": "nb", "value": 3}))
        wait_for(lambda: reader.pending() == 1, message="the lone message read")
        assert worker.pump(source) == 1
        assert [orjson.loads(e)["value"] for e in worker.broadcaster.batches[-1]] == [3]
    finally:
        reader.stop()
        pubsub.close()


def test_a_full_reader_buffer_drops_and_counts_instead_of_stalling(worker, r, names):
    pubsub = worker.sub_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(names["REDIS_CHANNEL"])
    payload = orjson.dumps({"metric": "full", "value": 1, "pad": "x" * 200})
    reader = PubSubReader(pubsub, max_bytes=len(payload) * 10, start_task=worker.start_task).start()
    try:
        pipe = r.pipeline(transaction=False)
        for _ in range(50):
            pipe.publish(names["REDIS_CHANNEL"], payload)
        pipe.execute()
        wait_for(lambda: reader.pending() + reader.dropped == 50, message="all 50 accounted for")
        buffered = reader.pending()
        assert buffered <= 10 and reader.dropped == 50 - buffered
        assert reader.take(100, 0) == [payload] * buffered  # what was kept is intact, in order
    finally:
        reader.stop()
        pubsub.close()


def test_one_round_trip_stores_a_batch(worker, r, names):
    """The write is one EVALSHA: seq, recent lists, aggregates, counters."""
    from backend.core.aggregate import BatchAccumulator
    from backend.core.events import validate

    now = 1_800_000_000.0
    evs = [validate({"metric": "rt", "value": {"ms": i}, "ts": now}, now=now, retention_s=3600,
                    future_tolerance_s=300) for i in range(5)]  # fmt: skip
    acc = BatchAccumulator()
    for ev in evs:
        acc.add(ev)
    worker.store.write_batch([], {}, [], received=0)  # the script loaded (first use: NOSCRIPT, LOAD)
    before = r.info("commandstats")
    worker.store.write_batch([ev.data for ev in evs], acc.deltas(), [], received=5)
    after = r.info("commandstats")

    def calls(stats, name):
        return stats.get(f"cmdstat_{name}", {}).get("calls", 0)

    # Other clients' commands are not ours, but nothing else talks to this database now.
    assert calls(after, "evalsha") - calls(before, "evalsha") == 1
    assert calls(after, "incrby") - calls(before, "incrby") == 1  # inside the script
    assert calls(after, "exec") == calls(before, "exec")
    assert r.hget(f"{names['KEY_PREFIX']}stats", "accepted") == b"5"
    assert len(r.lrange(f"{names['KEY_PREFIX']}recent:rt", 0, -1)) == 5


def test_fanout_message_and_frames_round_trip():
    """The channel message is numbered by the web node exactly as the store numbers events."""
    bodies = [orjson.dumps({"id": "a", "metric": "m"}), orjson.dumps({"id": "b", "metric": "m"})]
    encoded = decode_fanout_message(b"41\n" + b"\n".join(bodies))
    assert [orjson.loads(e) for e in encoded] == [
        {"seq": 41, "id": "a", "metric": "m"},
        {"seq": 42, "id": "b", "metric": "m"},
    ]
    assert orjson.loads(batch_text(encoded)[1:]) == ["metrics", [orjson.loads(e) for e in encoded]]
    assert [orjson.loads(t[1:]) for t in event_texts(encoded)] == [
        ["metric", orjson.loads(e)] for e in encoded
    ]
    for size in (5, 200, 70_000):  # the three length encodings of RFC 6455
        frame = text_frame(b"x" * size)
        assert frame[0] == 0x81 and (frame[1] & 0x80) == 0  # final text frame, unmasked
        assert frame.endswith(b"x" * size) and len(frame) - size in (2, 4, 10)


def test_per_event_and_batch_clients_get_every_event_from_the_same_batches(live_server, r):
    with Recorder(live_server.url) as legacy, Recorder(live_server.url, batch_window=60) as batch:
        wait_for(lambda: batch.sub_acks and legacy.connected_msgs, message="both clients ready")
        pipe = r.pipeline(transaction=False)
        for i in range(300):
            pipe.publish(live_server.channel, orjson.dumps({"metric": "both", "value": i}))
        pipe.execute()
        wait_for(lambda: len(legacy.metric) >= 300 and len(batch.batched_events()) >= 300, message="300 each")
        assert [e["value"] for e in legacy.metric] == list(range(300))
        assert legacy.metric == batch.batched_events()  # same events, same seqs, same order


def test_the_worker_runs_in_a_process_of_its_own_and_is_restarted(server_factory, r, names):
    server = server_factory(env={"WORKER_MODE": "process"})
    health = server.get("/api/health").json()
    (worker,) = health["workers"]
    pid = int(worker["token"].split(":")[1])
    assert pid != server.process.pid and worker["role"] == "active"
    with Recorder(server.url, batch_window=60) as rec:
        wait_for(lambda: rec.sub_acks, message="subscribe ack")
        r.publish(names["REDIS_CHANNEL"], orjson.dumps({"metric": "child", "value": 1}))
        wait_for(lambda: rec.batched_events(), message="the event, through the fan-out channel")
        os.kill(pid, signal.SIGKILL)

        # The supervisor restarts it, and the new worker takes the dead one's lease at once
        # (its lease would otherwise block it for LEASE_TTL_MS).
        def new_worker_subscribed():
            workers = server.get("/api/health").json()["workers"]
            return [
                w
                for w in workers
                if f":{pid}:" not in w["token"] and w["role"] == "active" and w["subscribed"]
            ]

        wait_for(new_worker_subscribed, timeout=15, message="a new worker, active and subscribed")
        assert "took over the lease" in server.log()
        r.publish(names["REDIS_CHANNEL"], orjson.dumps({"metric": "child", "value": 2}))
        wait_for(lambda: len(rec.batched_events()) == 2, message="the event after the restart")
        # One /metrics for the node: the web process's own figures and both workers' together.
        text = server.get("/metrics").text
        assert _sample(text, "pulseboard_connected_clients") >= 1
        assert _sample(text, "pulseboard_events_accepted_total") == 2
    assert [e["value"] for e in rec.batched_events()] == [1, 2]


def _sample(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} not in /metrics"
    return values[0]


def test_metric_names_beyond_the_bound_are_dead_lettered(server_factory, r, names):
    server = server_factory(env={"MAX_METRICS": "3", "WORKER_MODE": "thread"})
    pipe = r.pipeline(transaction=False)
    for i in range(5):
        pipe.publish(names["REDIS_CHANNEL"], orjson.dumps({"metric": f"name{i}", "value": i}))
    pipe.execute()
    stats = f"{names['KEY_PREFIX']}stats"
    wait_for(lambda: r.hget(stats, "received") == b"5", message="5 received")
    assert r.hget(stats, "accepted") == b"3"
    assert r.hget(stats, "rejected:too_many_metrics") == b"2"
    rejected = server.get("/api/metrics/rejected").json()
    reasons = [item["reason"] for item in rejected.get("rejected", rejected.get("items", []))]
    assert reasons.count("too_many_metrics") == 2
    # Names already admitted keep working.
    r.publish(names["REDIS_CHANNEL"], orjson.dumps({"metric": "name0", "value": 9}))
    wait_for(lambda: r.hget(stats, "accepted") == b"4", message="a known name still accepted")


def test_recent_per_metric_answers_for_a_quiet_metric(live_server, r):
    r.publish(live_server.channel, orjson.dumps({"metric": "quiet", "value": 1}))
    pipe = r.pipeline(transaction=False)
    for i in range(800):  # more than RECENT_MAX of another metric after it
        pipe.publish(live_server.channel, orjson.dumps({"metric": "loud", "value": i}))
    pipe.execute()
    wait_for(
        lambda: (
            [e["value"] for e in live_server.get("/api/metrics/recent?limit=1&metric=loud").json()["metrics"]]
            == [799]
        ),
        message="the loud metric stored",
    )
    quiet = live_server.get("/api/metrics/recent?metric=quiet").json()["metrics"]
    assert [e["value"] for e in quiet] == [1]
    assert not any(
        e["metric"] == "quiet" for e in live_server.get("/api/metrics/recent?limit=500").json()["metrics"]
    )


def test_a_late_burst_larger_than_redis_output_buffer_loses_nothing(server_factory, r, names):
    """Events stamped over the last hour, published faster than the worker processes them, more
    bytes than Redis lets a subscriber fall behind by: the worker reads them off the socket into
    its own buffer, so Redis never disconnects it."""
    limit = r.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
    server = server_factory(env={"WORKER_MODE": "process"})
    r.config_set("client-output-buffer-limit", "pubsub 8mb 4mb 10")
    try:
        now = time.time()
        total = 15_000
        pad = {f"pad{j}": "p" * 240 for j in range(8)}  # ~2 KB an event, 30 MB in all: ~4x the limit
        # Paced at ~4,000 events/s (8 MB/s): faster than late events are processed, slow
        # enough that a reader keeps up with the socket even on a busy machine.
        pipe = r.pipeline(transaction=False)
        for i in range(total):
            event = {
                "metric": f"late{i % 5}",
                "value": {"ms": i % 997},
                "ts": now - 3500 + (i % 3500),
                "tags": pad,
            }
            pipe.publish(names["REDIS_CHANNEL"], orjson.dumps(event))
            if i % 400 == 399:
                pipe.execute()
                time.sleep(0.1)
        pipe.execute()
        stats = f"{names['KEY_PREFIX']}stats"
        wait_for(
            lambda: int(r.hget(stats, "accepted") or 0) >= total, timeout=60, message=f"{total} accepted"
        )
        assert int(r.hget(stats, "accepted")) == total
        assert "closed the worker's subscription" not in server.log()
    finally:
        r.config_set("client-output-buffer-limit", limit)


def test_after_seq_resyncs_any_gap_within_the_history(live_server, r):
    """More events than the recent list holds were sent while a client was away: `after=SEQ`
    answers all of them (paged, oldest first) and says the answer is complete."""
    r.publish(live_server.channel, orjson.dumps({"metric": "gap", "value": -1}))
    wait_for(
        lambda: live_server.get("/api/metrics/recent?limit=1").json()["metrics"], message="the first event"
    )
    last_seen = live_server.get("/api/metrics/recent?limit=1").json()["metrics"][0]["seq"]
    pipe = r.pipeline(transaction=False)
    for i in range(3000):  # 6x RECENT_MAX
        pipe.publish(live_server.channel, orjson.dumps({"metric": "gap", "value": i}))
    pipe.execute()
    wait_for(
        lambda: (
            [e["value"] for e in live_server.get("/api/metrics/recent?limit=1").json()["metrics"]] == [2999]
        ),
        message="all stored",
    )
    got: list[dict] = []
    after = last_seen
    while True:
        body = live_server.get(f"/api/metrics/recent?after={after}&order=asc&limit=1000").json()
        got += body["metrics"]
        if "next_after" not in body:
            break
        after = body["next_after"]
    assert body["complete"] is True
    assert [e["value"] for e in got] == list(range(3000))
    assert [e["seq"] for e in got] == list(range(last_seen + 1, last_seen + 3001))

    newest = live_server.get(f"/api/metrics/recent?after={last_seen}&limit=100").json()
    assert [e["value"] for e in newest["metrics"]] == list(range(2999, 2899, -1))
    assert newest["complete"] is False  # 2,900 older ones are not in this answer

    # A gap older than the history is reported as such, not answered as if nothing was missed.
    old = live_server.get("/api/metrics/recent?after=1&order=asc&limit=10").json()
    assert old["complete"] is False and old["oldest_seq"] > 2


def test_a_web_node_tells_the_worker_while_clients_get_every_event(live_server, r, names):
    """Keys.watched exists while the node has a client getting every event (the worker then
    writes batches of MAX_BATCH_LIVE) and expires once it has none."""
    key = f"{names['KEY_PREFIX']}watched"
    assert not r.exists(key)  # no client yet: the server's ticks have not set it
    with Recorder(live_server.url, batch_window=60) as batch:
        wait_for(lambda: batch.sub_acks, message="the batch client subscribed")
        wait_for(lambda: r.exists(key), message="the ticker noted a live client")
        assert 0 < r.pttl(key) <= 3000
    wait_for(lambda: not r.exists(key), timeout=10, message="the key expired once nobody watched")
