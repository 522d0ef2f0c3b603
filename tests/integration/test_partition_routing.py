"""INGEST_PARTITIONS=4 on one Redis (no cluster): producers route each event to its metric's
partition's channel or stream (producer.partition_of); with one partition the names are today's."""

from __future__ import annotations

import time

import orjson
import pytest
import redis

from backend.cli.importer.stream import StreamWriter as ImportWriter
from backend.ingest.stream import GROUP
from backend.storage.keys import Keys, Partitioning
from backend.web.runtime import get_runtime
from generator.publisher import Generator
from generator.transport import StreamWriter
from producer import partition_of

P = 4


def metrics_per_partition(n: int = 2) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {k: [] for k in range(P)}
    i = 0
    while any(len(v) < n for v in out.values()):
        name = f"m{i}"
        if len(out[k := partition_of(name, P)]) < n:
            out[k].append(name)
        i += 1
    return out


@pytest.fixture
def app4(redis_url, names):
    from backend import create_app

    def make(**extra):
        return create_app(
            {"TESTING": True, "REDIS_URL": redis_url, "ASYNC_MODE": "threading", **names, **extra}
        )

    return make


def _drain(ps, want: int, timeout: float = 5.0) -> list[dict]:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        m = ps.get_message(timeout=0.1)
        if m is not None and m["type"] == "message":
            got.append(orjson.loads(m["data"]))
    return got


def test_post_ingest_stream_routes_to_partition_streams(app4, r, names):
    client = app4(INGEST_PARTITIONS=P, INGEST_TRANSPORT="stream").test_client()
    by_part = metrics_per_partition()
    events = [{"metric": m, "value": 1} for ms in by_part.values() for m in ms]
    assert client.post("/api/ingest", json=events).status_code == 202
    parts = Partitioning(count=P)
    for k in range(P):
        got = [
            orjson.loads(f[b"event"])["metric"] for _, f in r.xrange(parts.stream(names["INGEST_STREAM"], k))
        ]
        assert sorted(got) == sorted(by_part[k])
    assert not r.exists(names["INGEST_STREAM"])


def test_post_ingest_stream_is_one_transaction_on_one_redis(app4, r, names, monkeypatch):
    """All or nothing across partitions: one MULTI holds every partition's XADDs."""
    app = app4(INGEST_PARTITIONS=P, INGEST_TRANSPORT="stream")
    with app.app_context():
        store = get_runtime().store
    made = []
    real = store.redis.pipeline

    def spy(transaction=True, **kw):
        made.append(transaction)
        return real(transaction=transaction, **kw)

    monkeypatch.setattr(store.redis, "pipeline", spy)
    events = [{"metric": m, "value": 1} for ms in metrics_per_partition().values() for m in ms]
    assert app.test_client().post("/api/ingest", json=events).status_code == 202
    assert made == [True]


def test_post_ingest_pubsub_routes_to_partition_channels(app4, r, names):
    client = app4(INGEST_PARTITIONS=P).test_client()
    parts = Partitioning(count=P)
    subs = []
    for k in range(P):
        ps = r.pubsub()
        ps.subscribe(parts.channel(names["REDIS_CHANNEL"], k))
        assert ps.get_message(timeout=5)["type"] == "subscribe"
        subs.append(ps)
    by_part = metrics_per_partition()
    events = [{"metric": m, "value": 1} for ms in by_part.values() for m in ms]
    assert client.post("/api/ingest", json=events).status_code == 202
    for k, ps in enumerate(subs):
        assert sorted(e["metric"] for e in _drain(ps, 2)) == sorted(by_part[k])
        ps.close()


def test_one_partition_keeps_todays_channel_and_stream(app4, r, names):
    client = app4(INGEST_TRANSPORT="stream").test_client()
    assert client.post("/api/ingest", json=[{"metric": "cpu", "value": 1}] * 3).status_code == 202
    assert r.xlen(names["INGEST_STREAM"]) == 3
    assert r.keys("*{*") == []  # no tagged name anywhere


@pytest.mark.parametrize("transport", ["stream", "pubsub"])
def test_generator_routes_to_partitions(redis_url, r, names, transport):
    keys = Keys(prefix=names["KEY_PREFIX"])
    parts = Partitioning(count=P)
    channel, stream = names["REDIS_CHANNEL"], names["INGEST_STREAM"]
    ps = r.pubsub()
    if transport == "pubsub":
        ps.psubscribe(channel + ":*")
        assert ps.get_message(timeout=5)["type"] == "psubscribe"
    gen = Generator(
        redis_url, channel=channel, keys=keys, rate=2000, transport=transport, stream=stream, partitions=P,
        cluster=False,
    )  # fmt: skip
    try:
        assert gen.run(max_events=200).published == 200
        seen: dict[int, int] = {}
        if transport == "stream":
            for k in range(P):
                for _, f in r.xrange(parts.stream(stream, k)):
                    assert partition_of(orjson.loads(f[b"event"])["metric"], P) == k
                    seen[k] = seen.get(k, 0) + 1
            # One Redis: one transaction per batch, with the run's one marker (today's name).
            (marker,) = r.keys(keys.generator_sent("*"))
            assert int(r.get(marker)) == 200
        else:
            deadline = time.monotonic() + 5
            while sum(seen.values()) < 200 and time.monotonic() < deadline:
                m = ps.get_message(timeout=0.1)
                if m and m["type"] == "pmessage":
                    k = int(m["channel"].decode().rsplit("{", 1)[1].rstrip("}"))
                    assert partition_of(orjson.loads(m["data"])["metric"], P) == k
                    seen[k] = seen.get(k, 0) + 1
        assert sum(seen.values()) == 200 and len(seen) >= 2
        assert not r.exists(stream)
    finally:
        gen.close()
        ps.close()


class _FailSecond:
    """A client whose second transaction of a flush fails after running (reply lost)."""

    def __init__(self, client):
        self.client = client
        self.fail_at = 2
        self.count = 0

    def pipeline(self, transaction=True):
        pipe = self.client.pipeline(transaction=transaction)
        real = pipe.execute
        self.count += 1
        if self.count == self.fail_at:

            def execute(*a, **kw):
                real(*a, **kw)  # it ran ...
                raise redis.ConnectionError("reply lost")  # ... but we never heard

            pipe.execute = execute
        return pipe

    def get(self, key):
        return self.client.get(key)


def test_per_partition_transactions_resume_exactly_after_a_lost_reply(r, names):
    """Cluster layout (one MULTI per partition, one marker each): after a reply is lost mid-batch,
    each partition's marker tells whether its part went through; nothing is lost or sent twice."""
    parts = Partitioning(count=P, cluster=True)
    keys = Keys(prefix=names["KEY_PREFIX"])
    stream = names["INGEST_STREAM"]
    client = _FailSecond(r)
    writer = StreamWriter(
        client, stream, 0, keys.generator_sent("run"), max_batch=1000, parts=parts,
        partition_sent_key=lambda k: parts.keys(keys, k).generator_sent("run"),
    )  # fmt: skip
    by_part = metrics_per_partition(3)
    events = [{"metric": m, "value": i} for i, m in enumerate(m for ms in by_part.values() for m in ms)]
    writer.take(events, rate=1000)
    with pytest.raises(redis.ConnectionError):
        writer.flush()
    assert writer.inflight == len(events)
    client.fail_at = 0
    writer.reconnected()  # partitions 0 and 1 went through (1's reply was lost): 2 and 3 did not
    assert writer.published == 6 and len(writer.backlog) == 6 and writer.inflight == 0
    writer.flush()
    assert writer.published == len(events) and not writer.backlog
    for k in range(P):
        got = [orjson.loads(f[b"event"])["metric"] for _, f in r.xrange(parts.stream(stream, k))]
        assert sorted(got) == sorted(by_part[k])  # each exactly once
        assert int(r.get(parts.keys(keys, k).generator_sent("run"))) == 3


def test_importer_writes_partition_streams_in_one_transaction(r, names):
    parts = Partitioning(count=P)
    stream = names["INGEST_STREAM"]
    for k in range(P):
        r.xgroup_create(parts.stream(stream, k), GROUP, id="0", mkstream=True)
    writer = ImportWriter(r, stream, maxlen=10_000, chunk=100, max_backlog=1000, parts=parts)
    writer.check_group()
    by_part = metrics_per_partition(3)
    events = [{"metric": m, "value": 1} for ms in by_part.values() for m in ms]
    writer.send(
        [orjson.dumps(e) for e in events], 1, len(events), lambda *a: True, print, [writer.partition_of(e) for e in events]
    )  # fmt: skip
    assert writer.queued == len(events) and writer.backlog == len(events)
    for k in range(P):
        got = [orjson.loads(f[b"event"])["metric"] for _, f in r.xrange(parts.stream(stream, k))]
        assert sorted(got) == sorted(by_part[k])
    # drain() waits for every partition's stream: not done while one still has entries pending.
    for k in range(P - 1):
        key = parts.stream(stream, k)
        for _, entries in r.xreadgroup(GROUP, "worker", {key: ">"}):
            r.xack(key, GROUP, *(entry_id for entry_id, _ in entries))
    polls = []
    assert writer.drain(lambda state, backlog: polls.append(backlog) or len(polls) < 3, print) is False
    assert polls == [3, 3, 3]  # partition 3's three events
    key = parts.stream(stream, P - 1)
    for _, entries in r.xreadgroup(GROUP, "worker", {key: ">"}):
        r.xack(key, GROUP, *(entry_id for entry_id, _ in entries))
    assert writer.drain(lambda *a: True, print) is True


def test_importer_refuses_when_a_partition_has_no_worker(r, names):
    from backend.cli.importer.reading import ImportFailed

    parts = Partitioning(count=P)
    stream = names["INGEST_STREAM"]
    for k in range(P - 1):
        r.xgroup_create(parts.stream(stream, k), GROUP, id="0", mkstream=True)
    writer = ImportWriter(r, stream, maxlen=10_000, chunk=100, max_backlog=1000, parts=parts)
    with pytest.raises(ImportFailed, match=r"\{3\}"):
        writer.check_group()


def test_import_command_routes_lines_to_partition_streams(redis_url, r, names, tmp_path):
    import io

    from backend.cli.importer.command import Importer

    parts = Partitioning(count=P)
    stream = names["INGEST_STREAM"]
    for k in range(P):
        r.xgroup_create(parts.stream(stream, k), GROUP, id="0", mkstream=True)
    by_part = metrics_per_partition(5)
    lines = [{"metric": m, "value": i} for i, m in enumerate(m for ms in by_part.values() for m in ms)]
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in lines))
    importer = Importer(
        str(path), redis_url=redis_url, stream=stream, maxlen=10_000, chunk=7, wait=False,
        err=io.StringIO(), tty=False, partitions=P, cluster=False,
    )  # fmt: skip
    try:
        result = importer.run()
    finally:
        importer.close()
    assert result.queued == len(lines)
    for k in range(P):
        got = [orjson.loads(f[b"event"])["metric"] for _, f in r.xrange(parts.stream(stream, k))]
        assert sorted(got) == sorted(by_part[k])
