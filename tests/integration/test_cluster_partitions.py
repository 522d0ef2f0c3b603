"""The scale-out topology on a real 3-master Redis Cluster: two `pulseboard worker` processes split
four partitions, two web-only nodes serve clients, producers POST /api/ingest, and one worker is
SIGKILLed half way through 20,000 events. Everything is stored once and reaches each client of
both web nodes once."""

from __future__ import annotations

import signal
import threading

import requests

from tests.helpers import wait_for
from tests.integration.sio import Recorder

P = 4
CLUSTER = {
    "REDIS_CLUSTER": "true",
    "INGEST_PARTITIONS": str(P),
    "INGEST_TRANSPORT": "stream",
    "MESSAGE_QUEUE": "true",
    "LEASE_TTL_MS": "1500",
}


def accepted(client, names) -> int:
    return sum(int(client.hget(f"{names['KEY_PREFIX']}{{{k}}}:stats", "accepted") or 0) for k in range(P))


def held(web) -> dict[str, list[int]]:
    workers = requests.get(f"{web.url}/api/health", timeout=5).json()["workers"]
    return {w["token"]: w["partitions"] for w in workers if w.get("partitions")}


def test_two_workers_on_a_cluster_lose_and_repeat_nothing_when_one_is_killed(
    server_factory, redis_cluster, cluster_client, names
):
    url = redis_cluster.url
    workers = [server_factory(command="worker", redis_url=url, env=CLUSTER) for _ in range(2)]
    web = server_factory(redis_url=url, env={**CLUSTER, "RUN_WORKER": "false"})
    web2 = server_factory(redis_url=url, env={**CLUSTER, "RUN_WORKER": "false"})  # a second web node
    before = wait_for(
        lambda: (h := held(web)) and len(h) == 2 and all(len(v) == P // 2 for v in h.values()) and h,
        timeout=20,
        message="both workers with two partitions each",
    )
    assert sorted(k for v in before.values() for k in v) == list(range(P))

    total, per_request = 20_000, 200
    metrics = [f"c{i}" for i in range(16)]

    def post_all():
        for start in range(0, total, per_request):
            body = [{"metric": metrics[i % 16], "value": i} for i in range(start, start + per_request)]
            answer = requests.post(f"{web.url}/api/ingest", json=body, timeout=10)
            assert answer.status_code == 202, answer.text

    with Recorder(web.url, batch_window=60) as rec, Recorder(web2.url, batch_window=60) as rec2:
        wait_for(lambda: rec.sub_acks and rec2.sub_acks, message="subscribe acks")
        producer = threading.Thread(target=post_all, daemon=True)
        producer.start()
        wait_for(lambda: accepted(cluster_client, names) >= total // 2, timeout=30, message="half way")
        workers[1].process.send_signal(signal.SIGKILL)
        producer.join(60)
        assert not producer.is_alive()
        wait_for(lambda: accepted(cluster_client, names) >= total, timeout=30, message="everything stored")
        for r in (rec, rec2):
            wait_for(lambda r=r: len(r.batched_events()) >= total, timeout=30, message="everything delivered")
        received, received2 = rec.batched_events(), rec2.batched_events()

    assert accepted(cluster_client, names) == total
    counts = requests.get(f"{web.url}/api/metrics/aggregate?window=300", timeout=5).json()["aggregate"]
    assert sum(counts.get(m, 0) for m in metrics) == total
    for got in (received, received2):  # every client of every web node: each event exactly once
        ids = [e["id"] for e in got]
        assert len(set(ids)) == len(ids) == total
    after = held(web)
    assert list(after.values()) == [list(range(P))]  # the survivor holds every partition
