"""Hostile input on the channel and the ingest API, and a client that stops reading."""

from __future__ import annotations

import base64
import os
import random
import signal
import socket
import subprocess
import sys
import time

import orjson
import requests

from tests.helpers import wait_for
from tests.integration.sio import Recorder

XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '"><svg onload=alert(1)>']


def hostile_messages(n: int, rnd: random.Random) -> list[bytes]:
    """`n` messages that must all be rejected, cycling through every kind of bad input."""
    deep = b"[" * 5000 + b"]" * 5000
    nested_value = orjson.dumps({"metric": "m", "value": {"a": {"b": {"c": 1}}}})
    kinds = [
        lambda i: b"{not json" + str(i).encode(),
        lambda i: b'{"metric": "m", "value": NaN}',
        lambda i: b'{"metric": "m", "value": Infinity}',
        lambda i: b'{"metric": "m", "value": 1e999}',
        lambda i: deep,
        lambda i: nested_value,
        lambda i: orjson.dumps({"metric": 42, "value": 1}),
        lambda i: orjson.dumps({"metric": ["m"], "value": 1}),
        lambda i: orjson.dumps({"metric": "m", "value": "text"}),
        lambda i: orjson.dumps({"metric": "m", "value": [1, 2]}),
        lambda i: orjson.dumps({"metric": "m", "value": True}),
        lambda i: orjson.dumps({"metric": "m", "ts": "yesterday"}),
        lambda i: orjson.dumps({"metric": "m", "ts": 1.0}),
        lambda i: orjson.dumps({"metric": "m", "ts": time.time() + 86400}),
        lambda i: orjson.dumps({"metric": "m", "status": "weird"}),
        lambda i: orjson.dumps({"metric": "m", "tags": {"k": 1}}),
        lambda i: orjson.dumps({"metric": "m", "tags": {f"k{j}": "v" for j in range(40)}}),
        lambda i: orjson.dumps({"metric": "m", **{f"x{j}": j for j in range(10)}}),
        lambda i: orjson.dumps({"metric": "m" * 101}),
        lambda i: orjson.dumps({"metric": "<script>alert(1)</script>"}),
        lambda i: orjson.dumps({"metric": "m\u0000"}),
        lambda i: '{"metric": "\ud800"}'.encode("utf-8", "surrogatepass"),
        lambda i: b"\xff\xfe\xfd",
        lambda i: b"",
        lambda i: b"null",
        lambda i: b"[1, 2, 3]",
        lambda i: b'"just a string"',
        lambda i: orjson.dumps({"value": 1}),
        lambda i: orjson.dumps({"metric": "m", "source": "s" * 70_000}),
        lambda i: base64.b64encode(os.urandom(rnd.randint(1, 200))),
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def valid_events(n: int, marker: str) -> list[dict]:
    return [
        {
            "metric": "good",
            "value": {"ms": i},
            "source": marker,
            "tags": {"note": XSS[i % len(XSS)], "lang": "日本語 ✓ \u200b"},
        }
        for i in range(n)
    ]


def test_ten_thousand_hostile_messages_interleaved_with_valid_events(live_server, r):
    rnd = random.Random(42)
    bad = hostile_messages(10_000, rnd)
    good = valid_events(2_000, "hostile-test")
    stream: list[bytes] = []
    good_iter = iter(good)
    for i, message in enumerate(bad):
        stream.append(message)
        if i % 5 == 0:
            stream.append(orjson.dumps(next(good_iter)))
    assert len(stream) == 12_000

    # Three 10 MB messages, each alone: the worker must drop them by size without parsing.
    huge = b'{"metric": "m", "source": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    with Recorder(live_server.url, batch_window=60) as rec:
        wait_for(lambda: rec.sub_acks, message="subscribe ack")
        for k in range(3):
            r.publish(live_server.channel, huge)
            wait_for(
                lambda k=k: (
                    live_server.get("/api/metrics/stats").json().get("rejected:too_large", 0) >= k + 1
                ),
                message="the 10 MB message dead-lettered",
            )
        for start in range(0, len(stream), 500):
            pipe = r.pipeline(transaction=False)
            for message in stream[start : start + 500]:
                pipe.publish(live_server.channel, message)
            pipe.execute()
        # An end marker behind them all: processed in order, so every message before it was counted
        # and any duplicate of a valid event broadcast by the time it arrives.
        r.publish(live_server.channel, orjson.dumps({"metric": "end"}))
        wait_for(lambda: rec.got_marker("end"), timeout=30, message="all valid events broadcast")
        got = rec.batched_events()[:-1]
    assert len(got) == 2_000
    assert [e["value"]["ms"] for e in got] == list(range(2_000))
    assert got[0]["tags"]["note"] == XSS[0]  # delivered as data, unchanged

    stats = wait_for(
        lambda: (s := live_server.get("/api/metrics/stats").json()).get("rejected") == 10_003 and s,
        timeout=20,
        message="every bad message counted",
    )
    assert stats["accepted"] == 2_001  # and the marker
    assert stats["received"] == 12_004
    reasons = {k for k in stats if k.startswith("rejected:")}
    assert {
        "rejected:invalid_json",
        "rejected:invalid_value",
        "rejected:invalid_metric",
        "rejected:too_large",
        "rejected:not_object",
        "rejected:stale_ts",
        "rejected:future_ts",
        "rejected:unknown_keys",
        "rejected:invalid_tags",
        "rejected:missing_metric",
    } <= reasons
    rejected = live_server.get("/api/metrics/rejected?limit=1000").json()
    assert rejected["count"] == 1000  # DEAD_LETTER_MAX keeps the newest; the total counts all
    assert all(len(item["raw"]) <= 1024 for item in rejected["rejected"])
    agg = live_server.get("/api/metrics/aggregate?window=60").json()
    assert agg["aggregate"] == {"good": 2_000, "end": 1}
    assert live_server.get("/api/ready").status_code == 200


def test_hostile_ingest_requests_get_4xx_and_publish_nothing(server_factory):
    live_server = server_factory(env={"INGEST_RATE_LIMIT": ""})  # 300 requests/s is this test's point
    rnd = random.Random(1)
    with Recorder(live_server.url, batch_window=60) as rec:
        wait_for(lambda: rec.sub_acks, message="subscribe ack")
        statuses = []
        for body in hostile_messages(300, rnd):
            resp = requests.post(
                live_server.url + "/api/ingest",
                data=body,
                timeout=10,
                headers={"Content-Type": "application/json"},
            )
            statuses.append(resp.status_code)
            assert resp.headers["Content-Type"].startswith("application/json")
            assert "error" in resp.json()
        huge = requests.post(
            live_server.url + "/api/ingest",
            data=b"x" * (10 * 1024 * 1024),
            timeout=30,
            headers={"Content-Type": "application/json"},
        )
        statuses.append(huge.status_code)
        ok = live_server.post("/api/ingest", json={"metric": "after_hostile", "value": 1})
        assert ok.status_code == 202
        wait_for(lambda: rec.batched_events(), message="the valid event")
    assert all(400 <= s < 500 for s in statuses), sorted(set(statuses))
    assert huge.status_code == 413
    assert [e["metric"] for e in rec.batched_events()] == ["after_hostile"]


STUCK_CLIENT = """
import sys, socketio
c = socketio.Client()
c.on("metrics", lambda data: None)
c.connect(sys.argv[1], transports=["websocket"])
c.emit("subscribe", {"mode": "batch", "window": 60}, callback=lambda ack: print("subscribed", flush=True))
c.wait()
"""


def _stuck_client(url: str) -> subprocess.Popen:
    """A real Socket.IO client in its own process, frozen with SIGSTOP once subscribed: it stays
    connected but reads nothing, like a client on a dead network or a hung browser tab."""
    proc = subprocess.Popen([sys.executable, "-c", STUCK_CLIENT, url], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "subscribed"
    proc.send_signal(signal.SIGSTOP)
    return proc


def _metric(server, name: str) -> float | None:
    """A sample without labels from the node's /metrics (None when it has none)."""
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def _frames_waiting(server) -> float | None:
    return _metric(server, "pulseboard_fanout_frames_waiting")


_PADDING = {f"pad{j}": "p" * 250 for j in range(16)}  # ~4 KB per event


def _publish_wide(r, channel: str, metric: str, first: int, n: int = 100) -> int:
    """Publish n ~4 KB events of `metric` with values first..first+n-1; returns n."""
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.publish(channel, orjson.dumps({"metric": metric, "value": first + i, "tags": _PADDING}))
    pipe.execute()
    return n


def test_a_client_that_stops_reading_is_dropped_and_does_not_slow_others(server_factory, r):
    # The bytes rule alone: with the default heartbeat (3 s + 5 s) a frozen client is also closed
    # for a missed PONG, which on a busy machine came first (before its kernel buffers filled)
    # and left the bytes rule nothing to drop.
    server = server_factory(
        env={
            "SLOW_CLIENT_SOFT_BYTES": "262144",
            "SLOW_CLIENT_SOFT_S": "1",
            "PING_INTERVAL_S": "25",
            "PING_TIMEOUT_S": "60",
        }
    )
    stuck = _stuck_client(server.url)
    try:
        with Recorder(server.url, batch_window=60) as rec:
            wait_for(lambda: rec.sub_acks, message="subscribe ack")
            total = 0
            deadline = time.monotonic() + 30
            while "dropping slow client" not in server.log() and time.monotonic() < deadline:
                total += _publish_wide(r, server.channel, "fast", total)
                time.sleep(0.05)
                # The healthy client keeps up all along; waiting for it also keeps a server slowed
                # down by a busy machine from falling so far behind that Redis cuts its
                # subscription (client-output-buffer-limit pubsub).
                wait_for(
                    lambda total=total: len(rec.batched_events()) >= total - 1000,
                    timeout=20,
                    message="the healthy client keeping up",
                )
            assert server.log().count("dropping slow client") == 1
            wait_for(
                lambda: len(rec.batched_events()) >= total, timeout=20, message="the healthy client's events"
            )
            assert [e["value"] for e in rec.batched_events()] == list(range(total))
            # Nothing stays counted as waiting for the dropped client (long reads yield to
            # waiting deliveries: a leak would slow every read down).
            wait_for(lambda: _frames_waiting(server) == 0, message="no frames waiting")
        assert server.get("/api/ready").status_code == 200
    finally:
        stuck.kill()
        stuck.wait()
        stuck.stdout.close()


class RawBatchClient:
    """A websocket Socket.IO batch client on a plain socket, read only when the test reads: while
    it does not, the server's writes to it back up in the kernel, as for a slow reader. A small
    receive buffer makes that happen after a few hundred kB instead of megabytes."""

    def __init__(self, url: str, rcvbuf: int = 4096):
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        self.buf = self.buf.split(b"\r\n\r\n", 1)[1]
        self._until(lambda text: text.startswith(b"0{"))
        self.send(b"40")
        self._until(lambda text: text.startswith(b"40"))
        self.send(b'421["subscribe",{"mode":"batch","window":60}]')
        self._until(lambda text: text.startswith(b"431"))

    def send(self, text: bytes) -> None:
        header = bytes([0x81, 0x80 | len(text)]) if len(text) < 126 else None
        assert header is not None
        self.sock.sendall(header + b"\0\0\0\0" + text)  # the all-zero mask leaves the text as is

    def texts(self):
        """Every text frame's payload as it comes; Engine.IO pings answered on the way."""
        while True:
            while len(self.buf) >= 2:
                n, head = self.buf[1] & 0x7F, 2
                if n == 126:
                    n, head = int.from_bytes(self.buf[2:4], "big"), 4
                elif n == 127:
                    n, head = int.from_bytes(self.buf[2:10], "big"), 10
                if len(self.buf) < head + n:
                    break
                payload, self.buf = self.buf[head : head + n], self.buf[head + n :]
                if payload == b"2":
                    self.send(b"3")
                    continue
                yield payload
            chunk = self.sock.recv(1 << 16)
            assert chunk, "the server closed the connection"
            self.buf += chunk

    def _until(self, match) -> None:
        for text in self.texts():
            if match(text):
                return

    def events(self, n: int) -> list[dict]:
        got: list[dict] = []
        for text in self.texts():
            if text.startswith(b'42["metrics",'):
                got += orjson.loads(text[2:])[1]
                if len(got) >= n:
                    return got

    def close(self) -> None:
        self.sock.close()


def _deferred_writes(server) -> float:
    return _metric(server, "pulseboard_fanout_deferred_writes_total") or 0.0


def test_a_client_whose_socket_backs_up_gets_every_event_in_order(server_factory, r):
    """Most batches are written to a client's socket at once; one its kernel buffer cannot take
    whole is finished by its writer, and every later one queued behind it, in order."""
    # A long heartbeat, as in the test above: the client answers PINGs only while it reads, and
    # on a busy machine the phase in which it does not can outlast the default 3 s + 5 s.
    server = server_factory(
        env={
            "SLOW_CLIENT_SOFT_S": "60",
            "SLOW_CLIENT_SOFT_BYTES": str(64 << 20),
            "PING_INTERVAL_S": "25",
            "PING_TIMEOUT_S": "60",
        }
    )
    client = RawBatchClient(server.url)
    try:
        total = 0
        # Not reading meanwhile: publish until the server had to queue for this client.
        while _deferred_writes(server) == 0 and total < 5000:
            total += _publish_wide(r, server.channel, "late", total)
            wait_for(
                lambda total=total: int(r.hget(server.env["KEY_PREFIX"] + "stats", "accepted") or 0) >= total,
                message="the batch stored",
            )
        assert _deferred_writes(server) > 0, "the socket never backed up"
        events = client.events(total)
        assert [e["value"] for e in events] == list(range(total))
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(set(seqs))
        assert "dropping slow client" not in server.log()
    finally:
        client.close()
