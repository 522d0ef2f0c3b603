"""The generator against a real redis-server: delivery, pacing, dashboard control, reconnects, CLI."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis

from backend.cli.embedded_redis import EmbeddedRedis
from backend.config import current
from backend.storage.keys import Keys
from generator import cli
from generator.publisher import Generator, Summary

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 30.0  # generous: only a broken generator, never a slow machine, should hit it


@pytest.fixture(scope="module")
def gen_redis():
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def gen_names():
    """A private channel and key prefix per test, so tests never see each other's traffic."""
    tag = uuid.uuid4().hex[:8]
    return f"metrics-{tag}", Keys(prefix=f"test-{tag}:")


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = WAIT_S, pump=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pump is not None:
            pump()
        result = condition()
        if result:
            return result
        if pump is None:
            time.sleep(0.01)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}")


class Subscriber:
    """A real redis-py PubSub that collects decoded messages per channel."""

    def __init__(self, url: str, *channels: str):
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(*channels)
        self.messages: dict[str, list] = {c: [] for c in channels}
        confirmed = 0
        deadline = time.monotonic() + WAIT_S
        while confirmed < len(channels) and time.monotonic() < deadline:
            msg = self.pubsub.get_message(timeout=0.1)
            if msg and msg["type"] == "subscribe":
                confirmed += 1
        assert confirmed == len(channels), "subscription not confirmed"

    def pump(self, timeout: float = 0.05) -> None:
        msg = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        while msg is not None:
            self.messages[msg["channel"].decode()].append(orjson.loads(msg["data"]))
            msg = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0)

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


class Running:
    """A Generator running in a background thread, stopped and joined on exit."""

    def __init__(self, generator: Generator, **run_kwargs):
        self.generator = generator
        self.stop = threading.Event()
        self.summary: Summary | None = None
        self.thread = threading.Thread(target=self._run, kwargs=run_kwargs, daemon=True)

    def _run(self, **kwargs) -> None:
        self.summary = self.generator.run(self.stop, **kwargs)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "generator did not stop"
        self.generator.close()


def status_of(client: redis.Redis, keys: Keys) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(keys.generator_status).items()}


@pytest.fixture
def redis_client(gen_redis):
    c = redis.Redis.from_url(gen_redis.url)
    yield c
    c.close()


# -- delivery and pacing ---------------------------------------------------------------------------


def test_every_published_event_is_received_at_about_the_requested_rate(gen_redis, gen_names):
    channel, keys = gen_names
    sub = Subscriber(gen_redis.url, channel)
    try:
        gen = Generator(gen_redis.url, channel=channel, keys=keys, rate=2000, seed=1)
        with Running(gen, max_events=4000) as running:
            received = sub.messages[channel]
            wait_for(lambda: len(received) >= 4000, "4000 events", pump=sub.pump)
            running.thread.join(WAIT_S)
        summary = running.summary
        sub.pump(timeout=0.2)  # anything extra would show up now
    finally:
        sub.close()
    assert summary.published == 4000
    assert len(received) == summary.published
    assert len({e["id"] for e in received}) == 4000
    assert all(e["source"] == "generator" and "metric" in e for e in received)
    # ~2 s of work; loose band because CI machines are noisy, but pacing must not run ahead.
    assert 1000 <= summary.rate <= 2200, summary.line()


def test_duration_bounds_the_run_and_the_rate_holds(gen_redis, gen_names):
    channel, keys = gen_names
    gen = Generator(gen_redis.url, channel=channel, keys=keys, rate=500, seed=2)
    with Running(gen, duration_s=1.5) as running:
        running.thread.join(WAIT_S)
    summary = running.summary
    assert 1.5 <= summary.elapsed_s < 5
    assert 0.5 * 500 * 1.5 <= summary.published <= 500 * summary.elapsed_s + 1


def test_status_hash_and_stop_announcement(gen_redis, gen_names, redis_client):
    channel, keys = gen_names
    sub = Subscriber(gen_redis.url, keys.generator_events)
    try:
        gen = Generator(gen_redis.url, channel=channel, keys=keys, rate=300, profile="mixed", seed=3)
        with Running(gen):
            status = wait_for(
                lambda: (s := status_of(redis_client, keys)) and int(s["published"]) > 0 and s, "status hash"
            )
            assert status["running"] == "1" and status["profile"] == "mixed"
            assert float(status["rate"]) == 300.0 and int(status["pid"]) == os.getpid()
            assert 0 < redis_client.ttl(keys.generator_status) <= 5
            announced = sub.messages[keys.generator_events]
            wait_for(lambda: announced, "status announcement", pump=sub.pump)
            assert announced[0]["type"] == "status" and announced[0]["running"] is True
        wait_for(lambda: announced[-1]["state"] == "stopped", "stop announcement", pump=sub.pump)
    finally:
        sub.close()
    assert not redis_client.exists(keys.generator_status)


# -- dashboard control -----------------------------------------------------------------------------


def test_control_hash_pause_resume_rate_and_profile(gen_redis, gen_names, redis_client, caplog):
    channel, keys = gen_names
    caplog.set_level(logging.WARNING, logger="generator")
    # A leftover from a previous run must not win over the command line.
    redis_client.hset(keys.generator_control, mapping={"running": "0", "rate": "5", "profile": "original"})
    sub = Subscriber(gen_redis.url, channel, keys.generator_events)
    events, announced = sub.messages[channel], sub.messages[keys.generator_events]
    gen = Generator(
        gen_redis.url,
        channel=channel,
        keys=keys,
        rate=200,
        profile="mixed",
        seed=4,
        control_interval_s=0.2,
    )
    try:
        with Running(gen):
            wait_for(lambda: len(events) >= 50, "first events", pump=sub.pump)
            control = {
                k.decode(): v.decode() for k, v in redis_client.hgetall(keys.generator_control).items()
            }
            assert control == {"running": "1", "rate": "200.0", "profile": "mixed"}

            # Pause.
            redis_client.hset(keys.generator_control, "running", "0")
            wait_for(lambda: status_of(redis_client, keys).get("state") == "paused", "paused status")
            wait_for(lambda: any(a["state"] == "paused" for a in announced), "paused event", pump=sub.pump)
            # Let two more control polls pass, then nothing new may have arrived.
            sub.pump(timeout=0.2)
            count = len(events)
            published = gen.published
            first = float(status_of(redis_client, keys)["updated"])
            wait_for(
                lambda: float(status_of(redis_client, keys).get("updated", 0)) > first + 0.3,
                "two status refreshes while paused",
            )
            sub.pump(timeout=0.2)
            assert len(events) == count == published == gen.published

            # Resume with a new rate and profile.
            redis_client.hset(
                keys.generator_control, mapping={"running": "1", "rate": "1000", "profile": "original"}
            )
            wait_for(
                lambda: (
                    (s := status_of(redis_client, keys)).get("state") == "running"
                    and s.get("rate") == "1000.0"
                ),
                "resumed status",
            )
            wait_for(
                lambda: any(isinstance(e["ts"], str) for e in events[count:]),
                "original events",
                pump=sub.pump,
            )
            assert any(a["running"] and a["rate"] == 1000.0 and a["profile"] == "original" for a in announced)

            # Measure the new rate from the generator's own counter over about a second.
            t0, n0 = time.monotonic(), gen.published
            wait_for(lambda: time.monotonic() - t0 >= 1.0, "a second of publishing", pump=sub.pump)
            rate = (gen.published - n0) / (time.monotonic() - t0)
            assert 400 <= rate <= 1200, rate

            # Invalid control values are ignored, not fatal.
            written_at = time.time()
            redis_client.hset(keys.generator_control, mapping={"rate": "lots", "profile": "hostile"})
            wait_for(lambda: float(status_of(redis_client, keys).get("updated", 0)) > written_at, "a refresh")
            wait_for(lambda: "ignoring invalid generator control" in caplog.text, "a warning")
            assert gen.state.rate == 1000.0 and gen.state.profile == "original" and gen.state.running
        sub.pump(timeout=0.2)
        assert len(events) == gen.published
    finally:
        sub.close()


# -- Redis going away ----------------------------------------------------------------------------


def test_reconnects_with_backoff_when_redis_restarts(gen_names, caplog):
    channel, keys = gen_names
    caplog.set_level(logging.WARNING, logger="generator")
    server = EmbeddedRedis().start()
    client = redis.Redis.from_url(server.url)
    try:
        gen = Generator(
            server.url,
            channel=channel,
            keys=keys,
            rate=500,
            seed=5,
            control_interval_s=0.2,
            backoff_min_s=0.05,
            backoff_max_s=0.4,
            socket_timeout_s=2.0,
        )
        with Running(gen) as running:
            wait_for(lambda: gen.published > 200, "publishing before the outage")
            server.stop()

            def attempts() -> list[float]:
                return [
                    float(m.group(1))
                    for r in caplog.records
                    if (m := re.search(r"reconnect attempt \d+ in ([\d.]+)s", r.getMessage()))
                ]

            # Wait until backoff has reached its cap twice, proving it keeps trying without spinning.
            wait_for(lambda: len(attempts()) >= 6, "six reconnect attempts")
            during_outage = gen.published
            server.start()  # same port
            wait_for(lambda: gen.reconnects >= 1, "reconnect")
            wait_for(lambda: gen.published > during_outage + 200, "publishing after the restart")
            # The restarted Redis is empty: the generator puts its control state back.
            wait_for(lambda: client.exists(keys.generator_control), "control hash restored")
            assert client.hget(keys.generator_control, "running") == b"1"
            wait_for(lambda: client.exists(keys.generator_status), "status hash restored")
            # A subscriber that joins after the restart gets events.
            sub = Subscriber(server.url, channel)
            try:
                wait_for(lambda: len(sub.messages[channel]) >= 20, "events after restart", pump=sub.pump)
            finally:
                sub.close()
            assert running.thread.is_alive()
        delays = attempts()
        assert delays[:6] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.4, 0.4], abs=0.005)  # doubling, capped
        assert running.summary.reconnects >= 1
        assert any("reconnected to redis" in r.getMessage() for r in caplog.records)
    finally:
        client.close()
        server.close()


def test_starts_while_redis_is_down_then_connects_when_it_comes_up(gen_names, caplog):
    channel, keys = gen_names
    caplog.set_level(logging.WARNING, logger="generator")
    server = EmbeddedRedis()  # port chosen, server not started yet
    gen = Generator(server.url, channel=channel, keys=keys, rate=200, backoff_min_s=0.05, backoff_max_s=0.2)
    try:
        with Running(gen) as running:
            wait_for(
                lambda: sum("reconnect attempt" in r.getMessage() for r in caplog.records) >= 2,
                "reconnect attempts while Redis is down",
            )
            assert gen.published == 0 and running.thread.is_alive()
            server.start()
            wait_for(lambda: gen.published > 0, "publishing once Redis is up")
        assert running.summary.reconnects == 1
    finally:
        server.close()


def test_stop_is_prompt_while_backing_off(gen_names, caplog):
    channel, keys = gen_names
    caplog.set_level(logging.WARNING, logger="generator")
    server = EmbeddedRedis()  # never started
    # A 30 s backoff: stopping must interrupt the wait, not sit it out.
    gen = Generator(server.url, channel=channel, keys=keys, rate=100, backoff_min_s=30, backoff_max_s=30)
    running = Running(gen)
    with running:
        wait_for(
            lambda: any("reconnect attempt 1 in 30.00s" in r.getMessage() for r in caplog.records),
            "generator backing off",
        )
        stopped_at = time.monotonic()
    assert time.monotonic() - stopped_at < 10
    assert running.summary.published == 0 and running.summary.reconnects == 0
    server.close()


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_requires_a_redis_url(capsys):
    assert cli.main(["--redis-url", ""]) == 2
    assert "set REDIS_URL or use `pulseboard up`" in capsys.readouterr().err


def test_cli_rejects_bad_arguments(capsys):
    for argv in (["--rate", "0"], ["--rate", "abc"], ["--duration", "-1"], ["--profile", "hostile"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    capsys.readouterr()


def test_cli_parser_defaults_come_from_config():
    args = cli.build_parser().parse_args([])
    assert args.rate is None and args.profile is None and args.redis_url is None  # -> Config at run time
    assert args.duration == 0 and args.burst_every == 120 and args.seed is None


def test_cli_runs_a_bounded_count_and_prints_a_summary(gen_redis, capsys):
    channel = current().REDIS_CHANNEL
    sub = Subscriber(gen_redis.url, channel)
    try:
        code = cli.main(["--redis-url", gen_redis.url, "--rate", "1000", "--count", "300", "--seed", "1"])
        wait_for(lambda: len(sub.messages[channel]) >= 300, "CLI events", pump=sub.pump)
    finally:
        sub.close()
    assert code == 0
    out = capsys.readouterr().out
    assert re.search(r"published 300 events in [\d.]+s \([\d.]+/s, target 1000/s\), 0 reconnects", out), out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_process_stops_cleanly_on_signal(gen_redis, redis_client, sig):
    tag = uuid.uuid4().hex[:8]
    channel = f"metrics-{tag}"
    keys = Keys(prefix=f"test-{tag}:")
    env = {
        **os.environ,
        "REDIS_URL": gen_redis.url,
        "REDIS_CHANNEL": channel,
        "KEY_PREFIX": keys.prefix,
        "PULSEBOARD_ENV_FILE": os.devnull,
    }
    sub = Subscriber(gen_redis.url, channel)
    proc = subprocess.Popen(
        [sys.executable, "-m", "generator.cli", "--rate", "400"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(sub.messages[channel]) >= 100, "events from the CLI process", pump=sub.pump)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, err
        match = re.search(r"published (\d+) events", out)
        assert match, (out, err)
        published = int(match.group(1))
        wait_for(lambda: len(sub.messages[channel]) >= published, "every published event", pump=sub.pump)
        sub.pump(timeout=0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sub.close()
    assert len(sub.messages[channel]) == published
    assert not redis_client.exists(keys.generator_status)


# -- the stream transport --------------------------------------------------------------------------


def stream_events(client: redis.Redis, stream: str) -> list[dict]:
    return [orjson.loads(fields[b"event"]) for _, fields in client.xrange(stream)]


def test_stream_transport_xadds_every_event_once(gen_redis, gen_names, redis_client):
    channel, keys = gen_names
    stream = f"{channel}:stream"
    gen = Generator(
        gen_redis.url, channel=channel, keys=keys, rate=2000, seed=1, transport="stream", stream=stream
    )
    with Running(gen, max_events=1500) as running:
        running.thread.join(WAIT_S)
    summary = running.summary
    events = stream_events(redis_client, stream)
    assert summary.published == len(events) == 1500, summary.line()
    assert len({e["id"] for e in events}) == 1500
    assert all(e["source"] == "generator" for e in events)
    assert int(redis_client.get(gen.writer.sent_key)) == 1500  # the marker each batch's transaction sets
    assert redis_client.pubsub_numsub(channel) == [(channel.encode(), 0)]
    assert (summary.dropped, summary.unsent, summary.lost) == (0, 0, 0)


def test_stream_transport_keeps_events_through_an_outage_and_drops_the_oldest_past_its_bound(
    gen_names, caplog
):
    channel, keys = gen_names
    stream = f"{channel}:stream"
    caplog.set_level(logging.WARNING, logger="generator")
    server = EmbeddedRedis()  # port chosen, Redis down
    gen = Generator(
        server.url,
        channel=channel,
        keys=keys,
        rate=400,
        seed=3,
        max_batch=50,
        backlog_s=1.0,  # holds 400 events
        backoff_min_s=0.05,
        backoff_max_s=0.2,
        transport="stream",
        stream=stream,
    )
    try:
        with Running(gen) as running:
            wait_for(lambda: gen.writer.dropped > 0 and len(gen.writer.backlog) == 400, "a full backlog")
            server.start()
            client = redis.Redis.from_url(server.url)
            wait_for(lambda: gen.published > 400, "the backlog sent, and more")
        summary = running.summary
        events = stream_events(client, stream)
        client.close()
    finally:
        server.close()
    assert summary.published == len(events), summary.line()
    assert len({e["id"] for e in events}) == len(events)
    # The model numbers its events (hex after the run's prefix): the first one sent is the oldest
    # the backlog still held; everything after it arrived, in order, with no gap.
    numbers = [int(e["id"].rsplit("-", 1)[1], 16) for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert numbers[0] - 1 == summary.dropped > 0  # the ones before it are the dropped ones
    assert f"{summary.dropped} dropped from the full backlog" in summary.line()
    assert any("backlog full" in r.getMessage() for r in caplog.records)


def test_stream_batch_whose_reply_was_lost_is_neither_lost_nor_sent_twice(gen_redis, gen_names, redis_client):
    channel, keys = gen_names
    gen = Generator(gen_redis.url, channel=channel, keys=keys, transport="stream", stream=f"{channel}:s")
    try:
        # The connection dropped during EXEC: had the transaction run, it set the marker to 13.
        writer = gen.writer
        writer.published, writer.inflight = 10, 3
        writer.backlog.extend([b"{}"] * 5)
        redis_client.set(writer.sent_key, 13)
        writer.reconnected()
        assert (writer.published, len(writer.backlog), writer.inflight) == (13, 2, 0)  # it had: not resent
        writer.inflight = 2
        writer.reconnected()  # the marker says 13, not 15: it had not, so it is sent again
        assert (writer.published, len(writer.backlog), writer.inflight) == (13, 2, 0)
    finally:
        gen.close()


def test_cli_transport_defaults_to_the_config():
    assert cli.build_parser().parse_args([]).transport is None  # -> INGEST_TRANSPORT at run time
    assert cli.build_parser().parse_args(["--transport", "stream"]).transport == "stream"
