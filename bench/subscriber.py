"""Bare subscriber helper: the raw limit of a redis-py (hiredis) Pub/Sub reader on this machine.

    python -m bench.subscriber --redis-url URL --channel CH [--stream KEY]

With ``--stream`` it is instead the bare limit of a durable stream consumer: XREADGROUP of up to
5000 entries (the worker's MAX_BATCH) and one XACK of them per read, nothing else.

It reads the channel the way the worker does (``PubSub.get_message``) and does nothing else with
a message than count it. After ``{"cmd": "count", "expected": N, "timeout": T}`` it reads until it
has N messages (or T seconds pass without one) and replies with the count and the wall times of
the first and last message.
"""

from __future__ import annotations

import argparse
import sys
import time

import redis

from bench.proto import reply, serve


def count(pubsub, expected: int, idle_timeout: float) -> dict:
    n = 0
    first = last = None
    idle_since = time.monotonic()
    while n < expected:
        message = pubsub.get_message(timeout=0.1)
        if message is None or message["type"] != "message":
            # None also stands for an ignored subscribe confirmation, so time the silence.
            if time.monotonic() - idle_since > idle_timeout:
                break  # the publishers are done or gone
            continue
        idle_since = time.monotonic()
        if n == 0:
            first = time.time()
        n += 1
        # Drain what is already buffered without a timeout, as the worker does.
        while n < expected:
            message = pubsub.get_message(timeout=0)
            if message is None:
                break
            if message["type"] == "message":
                n += 1
        last = time.time()
        idle_since = time.monotonic()
    return _result(n, first, last)


def _result(n: int, first: float | None, last: float | None) -> dict:
    """What a count reports: messages received, the first and last receipt, and the rate between."""
    elapsed = (last - first) if (first is not None and last is not None and n > 1) else None
    return {
        "received": n,
        "first_recv": first,
        "last_recv": last,
        "elapsed_s": round(elapsed, 4) if elapsed else None,
        "rate": round((n - 1) / elapsed, 1) if elapsed else None,
    }


STREAM_COUNT = 5000


def count_stream(client, stream: str, expected: int, idle_timeout: float) -> dict:
    n = 0
    first = last = None
    idle_since = time.monotonic()
    while n < expected:
        reply = client.xreadgroup("bare", "bare", {stream: ">"}, count=STREAM_COUNT, block=100)
        entries = reply[0][1] if reply else []
        if not entries:
            if time.monotonic() - idle_since > idle_timeout:
                break
            continue
        if n == 0:
            first = time.time()
        client.xack(stream, "bare", *(entry_id for entry_id, _ in entries))
        n += len(entries)
        last = time.time()
        idle_since = time.monotonic()
    return _result(n, first, last)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.subscriber")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--stream", default=None, help="read this stream with a consumer group instead")
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis_url, socket_timeout=None)
    if args.stream:
        client.xgroup_create(args.stream, "bare", id="$", mkstream=True)
        reply({"ready": True})
        serve(
            {
                "count": lambda cmd: count_stream(
                    client, args.stream, int(cmd["expected"]), float(cmd.get("timeout", 10.0))
                )
            }
        )
        return 0
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(args.channel)
    # Wait for the subscribe confirmation so that "ready" means the channel is really ours.
    deadline = time.monotonic() + 10
    while pubsub.subscribed and time.monotonic() < deadline:
        if client.pubsub_numsub(args.channel)[0][1] >= 1:
            break
        pubsub.get_message(timeout=0.05)
    reply({"ready": True})
    serve({"count": lambda cmd: count(pubsub, int(cmd["expected"]), float(cmd.get("timeout", 10.0)))})
    pubsub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
