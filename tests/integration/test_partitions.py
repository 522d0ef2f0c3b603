"""INGEST_PARTITIONS: worker processes share the partitions, take over a dead one's, lose nothing.

Real Redis, real `pulseboard worker` processes and a web node; producers route with the
backend-free helper (producer/), as any application would.
"""

from __future__ import annotations

import signal
import time

import orjson
import requests

from producer import partition_of, publish, stream_for
from tests.helpers import paced_producer, wait_for
from tests.integration.sio import Recorder

P = 4
PARTS = {"INGEST_PARTITIONS": str(P), "MESSAGE_QUEUE": "true", "LEASE_TTL_MS": "1500"}
STREAM = {**PARTS, "INGEST_TRANSPORT": "stream"}


def accepted(r, names) -> int:
    return sum(int(r.hget(f"{names['KEY_PREFIX']}{{{k}}}:stats", "accepted") or 0) for k in range(P))


def health_workers(web) -> list[dict]:
    return requests.get(f"{web.url}/api/health", timeout=5).json()["workers"]


def held(web) -> dict[str, list[int]]:
    return {w["token"]: w["partitions"] for w in health_workers(web) if w.get("partitions")}


def all_held(web) -> list[int]:
    return sorted(k for partitions in held(web).values() for k in partitions)


def xadd_routed(r, base: str, events: list[dict]) -> None:
    pipe = r.pipeline(transaction=False)
    for event in events:
        pipe.xadd(stream_for(base, partition_of(event["metric"], P)), {"event": orjson.dumps(event)})
    pipe.execute()


def aggregate(web, metric: str) -> int:
    body = requests.get(f"{web.url}/api/metrics/aggregate?window=300&metric={metric}", timeout=5).json()
    return body["aggregate"].get(metric, 0)


def test_one_process_holds_every_partition_and_the_legacy_channel_still_works(server_factory, r, names):
    server = server_factory(env={"INGEST_PARTITIONS": str(P)})
    wait_for(lambda: all_held(server) == list(range(P)), message="all partitions held")
    metrics = [f"m{i}" for i in range(20)]
    assert len({partition_of(m, P) for m in metrics}) == P  # the test spreads over every partition
    for i in range(200):
        publish(r, {"metric": metrics[i % 20], "value": i}, P, channel=names["REDIS_CHANNEL"])
    # The unpartitioned channel (the original producers' format) is consumed too, by partition 0.
    r.publish(names["REDIS_CHANNEL"], orjson.dumps({"metric": "legacy", "value": 1}))
    wait_for(lambda: accepted(r, names) == 201, message="every event stored")
    assert sum(aggregate(server, m) for m in metrics) == 200 and aggregate(server, "legacy") == 1

    recent = requests.get(f"{server.url}/api/metrics/recent?limit=500", timeout=5).json()["metrics"]
    seqs = [e["seq"] for e in recent]
    assert len(set(seqs)) == len(seqs) == 201  # unique over all partitions
    for e in recent:  # seq % P names the partition, and a metric stays in its partition
        if e["metric"] != "legacy":
            assert e["seq"] % P == partition_of(e["metric"], P)

    # Resync: one seq per partition; only newer events of each partition come back.
    newest = {}
    for e in recent:
        newest[e["seq"] % P] = max(newest.get(e["seq"] % P, 0), e["seq"])
    for i in range(8):
        publish(r, {"metric": metrics[i], "value": 1000 + i}, P, channel=names["REDIS_CHANNEL"])
    wait_for(lambda: accepted(r, names) == 209, message="8 more stored")
    after = ",".join(str(s) for s in newest.values())
    body = requests.get(f"{server.url}/api/metrics/recent?after={after}&order=asc", timeout=5).json()
    assert body["complete"] is True
    assert sorted(e["value"] for e in body["metrics"]) == [1000 + i for i in range(8)]
    bad = requests.get(f"{server.url}/api/metrics/recent?after={newest[0]},{newest[0] + P}", timeout=5)
    assert bad.status_code == 400 and "twice" in bad.json()["error"]
    exported = requests.get(f"{server.url}/metrics", timeout=5).text
    assert f"pulseboard_partitions_held {float(P)}" in exported


def test_two_workers_split_the_partitions_and_one_takes_over_when_the_other_dies(server_factory, r, names):
    first = server_factory(command="worker", env=PARTS)
    web = server_factory(args=("--no-worker",), env=PARTS)  # ready once every partition is held
    wait_for(lambda: len(all_held(web)) == P, message="the first worker holds all")
    second = server_factory(command="worker", env=PARTS)
    # The newcomer gets its share: the first hands its highest partitions over.
    split = wait_for(
        lambda: (h := held(web)) and len(h) == 2 and all(len(v) == P // 2 for v in h.values()) and h,
        timeout=15,
        message="two workers with two partitions each",
    )
    assert sorted(k for v in split.values() for k in v) == list(range(P))

    second.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: all_held(web) == list(range(P)) and len(held(web)) == 1, timeout=10)
    took_s = time.monotonic() - killed
    print(f"\npartitions of a SIGKILLed worker taken over in {took_s:.2f}s (LEASE_TTL_MS 1500)")
    assert first.process.poll() is None
    assert took_s < 1.5 + 1 + 2  # LEASE_TTL_MS + 1 s, with slack for this machine


def test_a_worker_killed_under_load_in_stream_mode_loses_and_repeats_nothing(server_factory, r, names):
    base = names["INGEST_STREAM"]
    workers = [server_factory(command="worker", env=STREAM) for _ in range(2)]
    web = server_factory(args=("--no-worker",), env=STREAM)
    wait_for(
        lambda: len(held(web)) == 2 and all_held(web) == list(range(P)),
        timeout=20,
        message="two workers sharing four partitions",
    )
    total, chunk, every_s = 20_000, 200, 0.05  # 4,000 events/s for 5 s
    metrics = [f"load{i}" for i in range(16)]

    def send(start: int, stop: int) -> None:
        xadd_routed(r, base, [{"metric": metrics[i % 16], "value": i} for i in range(start, stop)])

    with Recorder(web.url, batch_window=60) as rec:
        wait_for(lambda: rec.sub_acks, message="subscribe ack")
        producer = paced_producer(send, total, chunk, every_s)
        wait_for(lambda: accepted(r, names) >= total // 2, timeout=20, message="half way")
        workers[1].process.send_signal(signal.SIGKILL)
        producer.join(30)
        assert not producer.is_alive() and producer.produced == total
        wait_for(lambda: accepted(r, names) >= total, timeout=30, message="everything accepted")
        wait_for(lambda: len(rec.batched_events()) >= total, timeout=20, message="every event delivered")
        received = rec.batched_events()

    assert accepted(r, names) == total  # stored once each: acknowledged in the same script
    assert sum(aggregate(web, m) for m in metrics) == total
    ids = [e["id"] for e in received]
    assert len(set(ids)) == len(ids) == total  # every event reached the client exactly once
    assert {e["value"] for e in received} == set(range(total))
    assert workers[0].process.poll() is None
