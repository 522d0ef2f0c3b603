"""The write path's overlap on a real Redis (storage/pipe.py, BatchProcessor with a pipe): a
batch's script sent without waiting for its reply, up to two in flight, and what arrives past
that gathered into one batch."""

from __future__ import annotations

import time

import orjson
import pytest
import redis

from backend.config import current
from backend.ingest.batch import HOLD_BATCH, BatchProcessor
from backend.ingest.consumer import IDLE_WAIT_S, Consumer
from backend.ingest.pubsub import PubSubReader
from backend.ingest.sources import PubSubSource
from backend.ingest.stream import FIELD, GROUP, Entry
from backend.realtime.broadcast import Broadcaster, parse_fanout_message
from backend.storage.store import WRITER_NAME, Store
from tests.helpers import wait_for


@pytest.fixture
def cfg(redis_url, names):
    return {**current().as_dict(), "REDIS_URL": redis_url, **names}


@pytest.fixture
def fanout(r, cfg):
    """What the worker publishes for the web nodes, as they receive it."""
    channel = f"{cfg['KEY_PREFIX']}fanout"
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(channel)
    wait_for(lambda: r.pubsub_numsub(channel)[0][1] == 1, message="subscribed to the fan-out channel")
    received: list[tuple[int, int, list[bytes]]] = []

    def drain():
        while (message := sub.get_message(timeout=0.01)) is not None:
            received.append(parse_fanout_message(message["data"]))
        return received

    yield channel, drain
    sub.close()


@pytest.fixture
def processor(cfg, fanout):
    store = Store.from_config(cfg, partition=0)
    proc = BatchProcessor(cfg, store, Broadcaster(None, channel=fanout[0]), fence=("", ""), pipe=store.pipe())
    yield proc
    proc.pipe.close()
    store.redis.close()


def _batch(tag: str, n: int) -> list[bytes]:
    return [orjson.dumps({"metric": "pipe", "value": i, "id": f"{tag}{i}"}) for i in range(n)]


def _ids(received) -> list[str]:
    return [orjson.loads(body)["id"] for _, _, bodies in received for body in bodies]


def _accepted(r, cfg) -> int:
    return int(r.hget(f"{cfg['KEY_PREFIX']}stats", "accepted") or 0)


def test_a_sent_batch_reaches_the_fanout_before_its_reply_is_read(processor, fanout, r, cfg):
    _, drain = fanout
    first, second = _batch("a", 3), _batch("b", 2)
    processor.process(first)
    assert processor.in_flight == 1 and processor.processed == 0  # no reply read yet...
    wait_for(lambda: _ids(drain()) == ["a0", "a1", "a2"], message="the first batch published")
    assert _accepted(r, cfg) == 3  # ...yet Redis ran the script: stored and published

    processor.process(second)  # sent too, with the first reply still unread
    assert processor.in_flight == 2 and processor.processed == 0
    processor.flush()
    assert processor.in_flight == 0 and processor.processed == 5 and processor.batches == 2

    wait_for(lambda: len(drain()) == 2, message="the second batch published")
    received = drain()
    assert _ids(received) == ["a0", "a1", "a2", "b0", "b1"]
    (seq_a, _, _), (seq_b, _, _) = received
    assert seq_b == seq_a + 3  # numbered in the order sent
    assert processor.next_seq == seq_b + 2
    assert [orjson.loads(e)["id"] for e in r.lrange(cfg["RECENT_KEY"], 0, -1)] == [
        "b1",
        "b0",
        "a2",
        "a1",
        "a0",
    ]


def test_past_two_writes_in_flight_what_arrives_is_gathered_into_one_batch(processor, fanout, r, cfg):
    """While Redis has not answered (here: writes paused), the worker does not queue script
    after script behind the two it sent: later takes become one batch, sent once Redis answers."""
    _, drain = fanout
    r.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
    try:
        for tag in "abcd":
            processor.process(_batch(tag, 2))
        assert processor.in_flight == 3  # two sent and unanswered, one open (c and d together)
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
    processor.flush()
    wait_for(lambda: len(drain()) == 3, message="three batches published")
    assert [len(bodies) for _, _, bodies in drain()] == [2, 2, 4]
    assert _ids(drain()) == ["a0", "a1", "b0", "b1", "c0", "c1", "d0", "d1"]
    assert processor.processed == 8 and processor.batches == 3


def test_a_gathered_batch_stays_within_max_batch(cfg, fanout, r):
    """A take that would carry the open batch past MAX_BATCH waits for Redis to answer the oldest
    write (here: until the pause ends) and starts the next open batch instead."""
    store = Store.from_config(cfg, partition=0)
    proc = BatchProcessor(
        {**cfg, "MAX_BATCH": 3},
        store,
        Broadcaster(None, channel=fanout[0]),
        fence=("", ""),
        pipe=store.pipe(),
    )
    r.execute_command("CLIENT", "PAUSE", 300, "WRITE")
    try:
        for tag in "abcd":
            proc.process(_batch(tag, 2))
        proc.flush()
        wait_for(lambda: len(fanout[1]()) == 4, message="four batches published")
        assert [len(bodies) for _, _, bodies in fanout[1]()] == [2, 2, 2, 2]
        assert _ids(fanout[1]()) == ["a0", "a1", "b0", "b1", "c0", "c1", "d0", "d1"]
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
        proc.pipe.close()
        store.redis.close()


def test_writes_lost_with_the_connection_come_back_in_order_and_are_stored_on_retry(processor, r, cfg):
    stored = _batch("s", 2)
    processor.process(stored)
    processor.flush()
    (writer,) = [c for c in r.client_list() if c["name"] == WRITER_NAME]
    r.client_kill_filter(_id=writer["id"])  # the writer's connection dies before the next sends

    lost_1, lost_2 = _batch("x", 3), _batch("y", 2)
    with pytest.raises(redis.ConnectionError):
        processor.process(lost_1)
        processor.process(lost_2)  # (if the first send still went into the socket's buffer)
        processor.flush()
    unstored = processor.take_unstored()
    assert unstored in (lost_1, lost_1 + lost_2)  # every message not known to be stored, in order
    assert processor.in_flight == 0 and processor.take_unstored() == []
    assert _accepted(r, cfg) == 2  # nothing of them reached Redis

    processor.process(unstored)  # what the consumer does after reconnecting: a new connection
    processor.flush()
    assert _accepted(r, cfg) == 2 + len(unstored)
    assert processor.processed == 2 + len(unstored)


def test_a_pump_with_a_write_in_flight_only_takes_what_is_waiting_and_reads_the_reply_when_idle(
    cfg, fanout, r, names
):
    """The consumer never waits idle with a reply unread: the next take does not wait, and an
    empty one reads the reply (so a quiet worker's figures and lease checks stay current)."""
    worker = Consumer(cfg, Broadcaster(None, channel=fanout[0]))
    pubsub = worker.sub_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(names["REDIS_CHANNEL"])
    wait_for(lambda: r.pubsub_numsub(names["REDIS_CHANNEL"])[0][1] == 1, message="subscribed")
    assert worker.store.acquire_lease(worker.token, 3000)
    reader = PubSubReader(pubsub, max_bytes=1 << 20, start_task=worker.start_task).start()
    takes: list[tuple[float, int]] = []
    real = reader.take

    def spy(limit, timeout, max_bytes):
        got = real(limit, timeout, max_bytes)
        takes.append((timeout, len(got)))
        return got

    reader.take = spy
    try:
        for message in _batch("p", 3):
            r.publish(names["REDIS_CHANNEL"], message)
        wait_for(lambda: reader.pending() == 3, message="3 messages read off the socket")
        source = PubSubSource(reader, worker.max_batch, worker.max_batch_bytes)
        assert worker.pump(source) == 3
        assert worker.batch.in_flight == 1
        assert worker.pump(source) == 0  # nothing waiting: the reply is read, no idle wait
        assert takes == [(IDLE_WAIT_S, 3), (0, 0)]
        assert worker.batch.in_flight == 0 and worker.processed == 3
        wait_for(lambda: _ids(fanout[1]()) == ["p0", "p1", "p2"], message="the batch published")
    finally:
        reader.stop()
        pubsub.close()
        worker.batch.pipe.close()
        worker.store.redis.close()
        worker.sub_client.close()


@pytest.mark.parametrize(("watched", "live_cap"), [(True, 100), (False, 100), (True, 0)])
def test_a_backlog_goes_in_smaller_batches_while_a_web_node_watches_live(
    cfg, fanout, r, names, watched, live_cap
):
    """MAX_BATCH_LIVE while Keys.watched exists (a web node has clients getting every event),
    MAX_BATCH otherwise (and always with MAX_BATCH_LIVE=0): the same backlog of 250 is written
    in batches of at most 100, or as one."""
    cfg = {**cfg, "MAX_BATCH": 300, "MAX_BATCH_LIVE": live_cap}
    capped = watched and live_cap > 0
    worker = Consumer(cfg, Broadcaster(None, channel=fanout[0]))
    pubsub = worker.sub_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(names["REDIS_CHANNEL"])
    wait_for(lambda: r.pubsub_numsub(names["REDIS_CHANNEL"])[0][1] == 1, message="subscribed")
    assert worker.store.acquire_lease(worker.token, 3000)
    worker.source = worker._open_source(pubsub)
    try:
        if watched:
            r.set(f"{names['KEY_PREFIX']}watched", "1", px=3000)  # what a web node's ticker sets
        worker._follow_watchers()
        assert worker.batch.max_batch == worker.source.max_batch == (100 if capped else 300)
        pipe = r.pipeline(transaction=False)
        for message in _batch("w", 250):
            pipe.publish(names["REDIS_CHANNEL"], message)
        pipe.execute()
        wait_for(lambda: worker.source.reader.pending() == 250, message="the backlog read off the socket")
        while worker.processed < 250:
            worker.pump(worker.source)
        wait_for(lambda: len(_ids(fanout[1]())) == 250, message="every event published")
        sizes = [len(bodies) for _, _, bodies in fanout[1]()]
        assert _ids(fanout[1]()) == [f"w{i}" for i in range(250)]
        if capped:
            assert len(sizes) >= 3 and max(sizes) <= 100, sizes
        else:
            assert sizes == [250]
    finally:
        worker.source.close()
        pubsub.close()
        worker.batch.pipe.close()
        worker.store.redis.close()
        worker.sub_client.close()


# --- the current minute's updates, held back while events queue --------------------------------
def _counts(r, cfg, minute: int) -> tuple[int, int]:
    """Events of metric `pipe` in the minute's bucket, and in its 60 second buckets."""
    prefix = cfg["KEY_PREFIX"]
    pipe = r.pipeline(transaction=False)
    pipe.hget(f"{prefix}agg:60:{minute}", "pipe|#c")
    for sec in range(minute, minute + 60):
        pipe.hget(f"{prefix}agg:1:{sec}", "pipe|#c")
    counts = [int(c or 0) for c in pipe.execute()]
    return counts[0], sum(counts[1:])


def _a_minute_with_room() -> int:
    """The current minute, once at least 5 s of it are left: a test's batches all fall in it."""
    wait_for(lambda: time.time() % 60 < 55, timeout=10, message="a minute with 5 s left")
    return int(time.time()) // 60 * 60


def test_while_events_queue_the_minute_waits_and_flush_writes_it_merged(processor, r, cfg):
    minute = _a_minute_with_room()
    waiting = [1]
    processor.backlog = lambda: waiting[0]
    processor.process(_batch("a", 3))
    wait_for(lambda: _accepted(r, cfg) == 3, message="the first batch stored")
    processor.process(_batch("b", 2))
    wait_for(lambda: _accepted(r, cfg) == 5, message="both batches stored")
    assert _counts(r, cfg, minute) == (0, 5)  # the seconds at once, the minute held
    processor.flush()  # before the worker idles
    assert _counts(r, cfg, minute) == (5, 5)

    waiting[0] = 0  # nothing waiting, nothing in flight: a batch writes its own minute
    processor.process(_batch("c", 1))
    wait_for(lambda: _accepted(r, cfg) == 6, message="the last batch stored")
    assert _counts(r, cfg, minute) == (6, 6)
    processor.flush()
    assert _counts(r, cfg, minute) == (6, 6)  # nothing held was written twice


def test_a_large_batch_holds_its_minute_even_alone(processor, r, cfg):
    minute = _a_minute_with_room()
    processor.process(_batch("a", HOLD_BATCH))
    wait_for(lambda: _accepted(r, cfg) == HOLD_BATCH, message="the batch stored")
    assert _counts(r, cfg, minute) == (0, HOLD_BATCH)
    processor.flush()
    assert _counts(r, cfg, minute) == (HOLD_BATCH, HOLD_BATCH)


def test_a_batch_sent_behind_an_unanswered_write_holds_its_minute(processor, r, cfg):
    minute = _a_minute_with_room()
    processor.process(_batch("a", 3))  # nothing in flight: written whole
    processor.process(_batch("b", 2))  # the first reply is unread yet
    assert processor.in_flight == 2
    wait_for(lambda: _accepted(r, cfg) == 5, message="both batches stored")
    assert _counts(r, cfg, minute) == (3, 5)
    processor.flush()
    assert _counts(r, cfg, minute) == (5, 5)


@pytest.mark.parametrize("hold_ms", [0, 30])
def test_held_minute_updates_go_out_after_minute_hold_ms_and_never_with_it_0(cfg, fanout, r, hold_ms):
    minute = _a_minute_with_room()
    store = Store.from_config(cfg, partition=0)
    processor = BatchProcessor(
        {**cfg, "MINUTE_HOLD_MS": hold_ms},
        store,
        Broadcaster(None, channel=fanout[0]),
        fence=("", ""),
        pipe=store.pipe(),
    )
    processor.backlog = lambda: 1  # events always queue
    try:
        processor.process(_batch("a", 3))
        sent = time.monotonic()
        wait_for(lambda: _accepted(r, cfg) == 3, message="the first batch stored")
        assert _counts(r, cfg, minute) == ((3 if hold_ms == 0 else 0), 3)
        wait_for(lambda: time.monotonic() - sent > hold_ms / 1000, message="MINUTE_HOLD_MS gone by")
        processor.process(_batch("b", 2))  # carries the first batch's minute, and writes its own
        wait_for(lambda: _accepted(r, cfg) == 5, message="the second batch stored")
        assert _counts(r, cfg, minute) == (5, 5)
    finally:
        processor.pipe.close()
        store.redis.close()


@pytest.mark.parametrize("releasing", [True, False])
def test_held_updates_of_stored_batches_survive_a_lost_write_and_retried_ones_count_once(
    processor, r, cfg, releasing
):
    """A write lost with the connection carried the held updates of batches already stored
    (held again, written by the next batch) and maybe of batches retried with it (counted again
    by the retry); or it held its own, and is retried. Either way, afterwards the minute holds
    exactly what its seconds hold."""
    minute = _a_minute_with_room()
    waiting = [1]
    processor.backlog = lambda: waiting[0]
    sent = 0
    for tag, n in (("a", 3), ("b", 2), ("c", 1)):
        processor.process(_batch(tag, n))
        sent += n
        wait_for(lambda sent=sent: _accepted(r, cfg) == sent, message=f"batch {tag} stored")
    assert _counts(r, cfg, minute) == (0, 6)
    (writer,) = [c for c in r.client_list() if c["name"] == WRITER_NAME]
    r.client_kill_filter(_id=writer["id"])

    waiting[0] = 0 if releasing else 1
    last = _batch("d", 4)
    with pytest.raises(redis.ConnectionError):
        processor.process(last)  # releases what is held (or holds its own), on a dead connection
        processor.flush()
    unstored = processor.take_unstored()
    assert unstored[-4:] == last
    waiting[0] = 0
    processor.process(unstored)
    processor.flush()
    stored = _accepted(r, cfg)
    assert stored == 6 + len(unstored)
    assert _counts(r, cfg, minute) == (stored, stored)


def test_a_batch_of_stream_entries_writes_what_is_held_before_itself(processor, r, cfg):
    minute = _a_minute_with_room()
    processor.backlog = lambda: 1
    processor.process(_batch("a", 3))
    wait_for(lambda: _accepted(r, cfg) == 3, message="the Pub/Sub batch stored")
    assert _counts(r, cfg, minute) == (0, 3)

    stream = f"{cfg['KEY_PREFIX']}entries"
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    r.xadd(stream, {FIELD: orjson.dumps({"metric": "pipe", "value": 1, "id": "s0"})})
    [(_, read)] = r.xreadgroup(GROUP, "test", {stream: ">"})
    processor.process([], entries=[Entry(entry_id, fields) for entry_id, fields in read], ack_key=stream)
    assert _counts(r, cfg, minute) == (4, 4)  # written at once, the held part before it
    assert r.xpending(stream, GROUP)["pending"] == 0
