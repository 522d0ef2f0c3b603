"""Redis killed and restarted while the generator publishes: everything recovers by itself."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import orjson
import redis
import requests

from backend.cli.embedded_redis import EmbeddedRedis
from backend.cli.procs import generator_command
from tests.conftest import ROOT
from tests.helpers import wait_for
from tests.integration.sio import Recorder

OUTAGE_S = 2.0  # how long Redis stays down: the scenario, not a wait


def _start_generator(own_redis: EmbeddedRedis, server, *extra: str) -> subprocess.Popen:
    """The real generator at 500 events/s, incidents off, against `own_redis`."""
    return subprocess.Popen(
        generator_command(own_redis.url, "--rate", "500", "--seed", "3", "--burst-every", "0", *extra),
        cwd=ROOT,
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _redis_outage(own_redis: EmbeddedRedis, server, rec: Recorder) -> tuple[int, float, float]:
    """Once traffic flows, stop Redis for OUTAGE_S (readiness 503, liveness still 200), start it
    again and wait until the server is ready. Returns (events the client had before the restart,
    when Redis came back (monotonic), seconds from then until ready)."""
    wait_for(lambda: len(rec.batched_events()) >= 500, timeout=15, message="traffic flowing")
    own_redis.stop()
    down_at = time.monotonic()
    wait_for(lambda: server.get("/api/ready").status_code == 503, message="readiness 503")
    assert server.get("/api/health").status_code == 200  # alive, just not ready
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
    received_before = len(rec.batched_events())
    own_redis.start()
    up_at = time.monotonic()
    wait_for(lambda: server.get("/api/ready").status_code == 200, timeout=15, message="readiness 200")
    return received_before, up_at, time.monotonic() - up_at


def test_redis_outage_while_the_generator_publishes(server_factory, names):
    with EmbeddedRedis() as own_redis:
        server = server_factory(redis_url=own_redis.url)
        generator = _start_generator(own_redis, server)
        try:
            with Recorder(server.url, batch_window=60) as rec:
                received_before, up_at, ready_after_s = _redis_outage(own_redis, server, rec)
                wait_for(
                    lambda: len(rec.batched_events()) >= received_before + 500,
                    timeout=20,
                    message="clients receiving again",
                )
                flowing_after_s = time.monotonic() - up_at
                seqs = [e["seq"] for e in rec.batched_events()]
                assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # still increasing after the wipe
            assert server.process.poll() is None
            assert requests.get(server.url + "/api/ready", timeout=5).status_code == 200
        finally:
            generator.send_signal(signal.SIGTERM)
            out, _ = generator.communicate(timeout=15)
        assert generator.returncode == 0, out
        summary = out.strip().splitlines()[-1]
        reconnects = int(re.search(r"(\d+) reconnects", summary).group(1))
        assert reconnects >= 1, summary
        unheard = re.search(r"(\d+) published with no subscriber", summary)
        print(
            f"outage {OUTAGE_S}s: ready again after {ready_after_s:.2f}s, events flowing after "
            f"{flowing_after_s:.2f}s; generator: {summary}; "
            f"published to nobody (lost by Pub/Sub): {unheard.group(1) if unheard else 0}"
        )
        assert "resubscribed" in server.log()
        # The alert evaluator noticed too, and rebuilt its state from Redis once it was back.
        assert "analytics: Redis unavailable" in server.log()
        wait_for(lambda: server.log().count("evaluator active") >= 2, message="evaluator re-activated")


def _outage_run(server_factory, names, transport: str, appendonly: bool = True) -> dict:
    """The generator at 500 events/s through a Redis outage of OUTAGE_S, on one transport.

    With `appendonly` Redis keeps an append-only file, so its restart keeps what it had
    acknowledged (the stream, the consumer group's pending entries, the worker's counters).
    Without persistence a restarted Redis has forgotten everything, the stream included, and no
    transport can get that back: then only what clients received is left to count."""
    with EmbeddedRedis(appendonly=appendonly) as own_redis:
        env = {"INGEST_TRANSPORT": transport}
        server = server_factory(redis_url=own_redis.url, env=env)
        generator = _start_generator(own_redis, server, "--transport", transport)
        try:
            with Recorder(server.url, batch_window=60) as rec:
                received_before, _, _ = _redis_outage(own_redis, server, rec)
                wait_for(
                    lambda: len(rec.batched_events()) >= received_before + 1500,
                    timeout=20,
                    message="clients receiving again",
                )
                generator.send_signal(signal.SIGTERM)
                out, _ = generator.communicate(timeout=15)
                assert generator.returncode == 0, out
                summary = out.strip().splitlines()[-1]
                published = int(re.search(r"published (\d+) events", summary).group(1))
                client = redis.Redis.from_url(own_redis.url)
                # An end marker behind everything the generator sent, on the same transport: the
                # worker stores and broadcasts in order, so once the client has it, every earlier
                # event was stored and broadcast (a duplicate included) already.
                end = orjson.dumps({"metric": "end"})
                if transport == "stream":
                    client.xadd(server.stream, {"event": end})
                else:
                    client.publish(server.channel, end)
                wait_for(lambda: rec.got_marker("end"), timeout=30, message="the worker drained")
                ids = [e["id"] for e in rec.batched_events()[:-1]]
                stats = {k.decode(): int(v) for k, v in client.hgetall(f"{names['KEY_PREFIX']}stats").items()}
                stats["accepted"] -= 1  # the marker
                client.close()
        finally:
            if generator.poll() is None:
                generator.kill()
                generator.communicate(timeout=15)

    def count(what: str) -> int:
        found = re.search(rf"(\d+) {what}", summary)
        return int(found.group(1)) if found else 0

    return {
        "transport": transport,
        "appendonly": appendonly,
        "summary": summary,
        "published": published,
        "accepted": stats.get("accepted", 0),
        "rejected": stats.get("rejected", 0),
        "lost_in_failed_batches": count("lost in failed batches"),
        "not_sent": count("not sent while Redis was down"),
        "no_subscriber": count("published with no subscriber"),
        "dropped": count("dropped from the full backlog"),
        "unsent": count("unsent at exit"),
        "client_ids": ids,
    }


def test_events_lost_in_a_redis_outage_pubsub_vs_stream(server_factory, names):
    """Side by side, same scenario: what a Redis outage costs each transport.

    Lost = what the generator sent but the worker never stored (published + lost in failed
    batches - accepted), plus what it produced and never sent (Pub/Sub: events that fell due while
    Redis was down are not made up; stream: backlog overflow or left at exit)."""
    runs = {t: _outage_run(server_factory, names, t) for t in ("pubsub", "stream")}
    lines = []
    for t, run in runs.items():
        assert len(run["client_ids"]) == len(set(run["client_ids"])), f"{t}: duplicates reached clients"
        undelivered = run["published"] + run["lost_in_failed_batches"] - run["accepted"]
        never_sent = run["not_sent"] + run["dropped"] + run["unsent"]
        run["lost"] = undelivered + never_sent
        lines.append(
            f"  {t:6}: generator published {run['published']}, worker accepted {run['accepted']}; lost "
            f"{run['lost']} = {undelivered} sent but not stored (of which {run['lost_in_failed_batches']} "
            f"in failed batches, {run['no_subscriber']} published with no subscriber) + {never_sent} never "
            f"sent ({run['not_sent']} fell due while Redis was down, {run['dropped']} dropped from the "
            f"backlog, {run['unsent']} unsent at exit)"
        )
    # The same stream run on a Redis without persistence: the restart wipes the stream and every
    # counter, so the clients' unique events are the only record left.
    bare = _outage_run(server_factory, names, "stream", appendonly=False)
    received = len(set(bare["client_ids"]))
    lines.append(
        f"  stream, no persistence: generator published {bare['published']}, clients received {received} "
        f"unique ({len(bare['client_ids']) - received} duplicates): lost {bare['published'] - received} "
        "(entries in Redis and not yet processed when it died), dropped "
        f"{bare['dropped']}, unsent {bare['unsent']}"
    )
    print(
        f"\nRedis killed for {OUTAGE_S}s at 500 events/s (append-only file on unless said):\n"
        + "\n".join(lines)
    )
    for run in runs.values():
        assert run["rejected"] == 0, run["summary"]
    stream = runs["stream"]
    # Everything the generator reports as delivered was stored exactly once ...
    assert stream["accepted"] == stream["published"], stream["summary"]
    assert stream["lost_in_failed_batches"] == 0 and stream["not_sent"] == 0
    # ... and it held the outage's events instead of dropping them (10 s backlog > a 2 s outage).
    assert stream["dropped"] == 0 and stream["unsent"] == 0, stream["summary"]
    assert stream["lost"] == 0
    ids = stream["client_ids"]
    assert len(ids) == len(set(ids))  # no duplicates reached the clients
    # Pub/Sub: the outage's events are simply gone (the figure varies with timing).
    assert runs["pubsub"]["lost"] > 0, runs["pubsub"]["summary"]
