"""The read process (READ_MODE=process, backend/web/readproxy.py) behind a real `serve`.

GET /api/metrics/* is answered by a child process of the web node, on the client's own
connection handed to it (backend/web/handoff.py); these tests check that the answers are the
ones the web process would give, that a connection moves between the two as its requests ask,
that a stuck or dead read process holds back neither deliveries nor health, and that it is
restarted."""

from __future__ import annotations

import gc
import http.client
import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import requests

from backend.web import handoff
from tests.helpers import wait_for
from tests.integration.sio import Recorder

READS = {"READ_MODE": "process"}


def reads_of(server) -> dict:
    return server.get("/api/health").json()["reads"]


def read_process(server) -> psutil.Process:
    """The read process, once it serves (its first read on a handed connection went through)."""

    def up():
        reads = reads_of(server)
        if reads["process"] is None or not reads["handoff"]:
            return None
        server.get("/api/metrics/stats")
        return reads_of(server)["handed"] > reads["handed"] and reads["process"]

    return psutil.Process(wait_for(up, timeout=20, message="the read process serving"))


def ingest(server, events: list) -> None:
    resp = server.post("/api/ingest", json=events)
    assert resp.status_code == 202, resp.text


def comparable(body: dict) -> dict:
    """An aggregate without the parts that move with the clock."""
    return {k: body[k] for k in ("aggregate", "metrics", "window_seconds")} | {
        "count": body["total"]["count"]
    }


def test_reads_are_answered_by_the_read_process_as_the_web_process_would(server_factory):
    server = server_factory(env=READS)
    reader = read_process(server)
    assert "reader" in reader.cmdline()
    assert reader.ppid() == server.process.pid
    # Only this user can reach its socket: it lives in a directory of mode 0700.
    path = next(arg for arg in reader.cmdline() if arg.endswith(".sock"))
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    before = reads_of(server)  # reads made before it listened were answered inline
    # Wide enough (more than 64 metrics) to be streamed in parts through the proxy.
    events = [{"metric": f"m{i % 80}", "value": {"ms": i % 17, "bytes": i}} for i in range(800)]
    ingest(server, events)
    path = "/api/metrics/aggregate?window=300"
    wait_for(lambda: server.get(path).json()["total"]["count"] == 800, message="800 aggregated")
    inline = server_factory(args=("--no-worker",), env={"READ_MODE": "inline"})
    same = {
        path: comparable,
        "/api/metrics/timeseries?window=300&step=60&metric=m3": lambda body: body["points"],
        "/api/metrics/recent?limit=50": lambda body: body["metrics"],
    }
    for p, part in same.items():
        ours, theirs = server.get(p), inline.get(p)
        assert ours.status_code == theirs.status_code == 200
        assert ours.headers["Content-Type"] == theirs.headers["Content-Type"]
        assert part(ours.json()) == part(theirs.json()), p
    assert inline.get("/api/health").json().get("reads") is None  # nothing forwarded there
    bad = server.get("/api/metrics/aggregate?window=0")
    assert bad.status_code == 400 and bad.json()["param"] == "window"
    reads = reads_of(server)
    assert reads["inline"] == before["inline"] and reads["timeouts"] == 0
    assert reads["handed"] >= before["handed"] + 5
    # A read's connection, closed by its client, is closed in both processes (the web process
    # keeps no copy of what it handed over): twenty more leave no more open than before (what is
    # open belongs to clients that keep theirs).
    port = int(server.url.rsplit(":", 1)[1])
    web = psutil.Process(server.process.pid)

    def open_there() -> int:
        gc.collect()  # requests leaves a closed session's connection in a reference cycle
        return sum(
            1
            for process in (reader, web)
            for c in process.net_connections("tcp")
            if c.laddr and c.laddr.port == port and c.raddr
        )

    before_open = open_there()
    for _ in range(20):
        with requests.Session() as http:
            assert http.get(server.url + "/api/metrics/stats", timeout=5).status_code == 200
    wait_for(lambda: open_there() <= before_open, message="the reads' connections closed")


def test_a_kept_connection_moves_between_the_processes_as_its_requests_ask(server_factory):
    server = server_factory(env=READS)
    reader = read_process(server)
    ingest(server, [{"metric": "kept", "value": {"ms": 3}} for _ in range(5)])
    wait_for(
        lambda: server.get("/api/metrics/aggregate?window=60").json()["total"]["count"] == 5,
        message="5 aggregated",
    )
    before = reads_of(server)
    with requests.Session() as http:  # one kept connection, read and other requests in turn
        for _ in range(3):
            agg = http.get(server.url + "/api/metrics/aggregate?window=60", timeout=5)
            assert agg.status_code == 200 and agg.json()["total"]["count"] == 5
            health = http.get(server.url + "/api/health", timeout=5)
            assert health.status_code == 200 and health.json()["status"] == "ok"
            assert http.get(server.url + "/api/metrics/stats", timeout=5).status_code == 200
            assert http.get(server.url + "/", timeout=5).status_code == 200  # the dashboard
    reads = reads_of(server)
    assert reads["handed"] - before["handed"] >= 3  # each read after a non-read went over
    assert reads["received"] - before["received"] >= 3  # and came back for the next one
    assert reads["forwarded"] == before["forwarded"] and reads["inline"] == before["inline"]
    # Two requests in one write (pipelined): the second arrives with the first, and goes along
    # with the connection, in order.
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET /api/metrics/stats HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /api/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    answers = raw.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2 and all(a.startswith(b"200") for a in answers), raw[:300]
    assert b'"received"' in answers[0] and b'"status":"ok"' in answers[1].replace(b" ", b"")
    assert reader.is_running()


def test_an_idle_connection_goes_back_to_the_web_process_and_stays_open(server_factory):
    """The read process holds a connection only while it is in use: idle for IDLE_HOLD_S, it
    goes back (a read process that dies then ends only connections in use)."""
    server = server_factory(env=READS)
    read_process(server)
    host, port = server.url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/api/metrics/stats")
        first = conn.getresponse()
        assert first.status == 200 and isinstance(json.loads(first.read()), dict)
        sock = conn.sock
        before = reads_of(server)  # (on connections of their own: health stays with the web process)
        wait_for(
            lambda: reads_of(server)["received"] > before["received"],
            timeout=handoff.IDLE_HOLD_S + 5,
            message="the idle connection back in the web process",
        )
        conn.request("GET", "/api/health")  # the same connection, now served by the web process
        health = conn.getresponse()
        assert health.status == 200 and b'"status"' in health.read()
        conn.request("GET", "/api/metrics/stats")  # and a read on it goes over again
        again = conn.getresponse()
        assert again.status == 200 and isinstance(json.loads(again.read()), dict)
        assert conn.sock is sock  # never reopened
        assert reads_of(server)["handed"] > before["handed"]
    finally:
        conn.close()


def test_past_its_connection_limit_reads_stay_with_the_web_process_and_are_proxied(server_factory):
    server = server_factory(env={**READS, "READ_MAX_CONNECTIONS": "1"})
    read_process(server)
    with requests.Session() as holder:  # takes the read process's one connection, and keeps it
        assert holder.get(server.url + "/api/metrics/stats", timeout=5).status_code == 200
        before = reads_of(server)
        with requests.Session() as other:
            for _ in range(3):
                assert other.get(server.url + "/api/metrics/stats", timeout=5).status_code == 200
        reads = reads_of(server)
        assert reads["refused"] == before["refused"] + 1  # offered once, then kept by the web node
        assert reads["forwarded"] == before["forwarded"] + 3 and reads["handed"] == before["handed"]
        assert holder.get(server.url + "/api/metrics/stats", timeout=5).status_code == 200
    assert reads_of(server)["handed"] == before["handed"]  # the holder's stayed where it was


def test_a_stuck_read_process_holds_back_neither_deliveries_nor_health(server_factory):
    server = server_factory(env={**READS, "READ_TIMEOUT_S": "1"})
    reader = read_process(server)
    with Recorder(server.url, batch_window=60) as rec:
        wait_for(lambda: rec.sub_acks, message="subscribe ack")
        reader.send_signal(signal.SIGSTOP)  # as if one read held it for a long time
        try:
            # It stops answering the web node's probe: connections stay with the web node,
            # and reads go through the proxy, which gives up on them.
            wait_for(lambda: not reads_of(server)["handoff"], timeout=5, message="no more handing over")
            t0 = time.monotonic()
            slow = server.get("/api/metrics/aggregate?window=3600")
            waited = time.monotonic() - t0
            assert slow.status_code == 504
            assert "did not answer" in slow.json()["error"]
            assert 0.9 <= waited < 5
            ingest(server, [{"metric": "during", "value": i, "id": f"d{i}"} for i in range(50)])
            wait_for(lambda: len(rec.batched_events()) >= 50, message="50 events delivered")
            assert server.get("/api/health").status_code == 200
            assert reads_of(server)["timeouts"] == 1
        finally:
            reader.send_signal(signal.SIGCONT)
    wait_for(lambda: server.get("/api/metrics/stats").status_code == 200, message="reads again")


def test_a_killed_read_process_is_restarted_and_no_read_fails_meanwhile(server_factory):
    server = server_factory(env=READS)
    first = read_process(server)
    ingest(server, [{"metric": "k", "value": 1}])
    first.send_signal(signal.SIGKILL)
    codes = []

    def restarted():
        try:
            codes.append(server.get("/api/metrics/aggregate?window=60").status_code)
        except requests.RequestException as exc:  # would be a failed read: recorded, asserted below
            codes.append(repr(exc))
        pid = reads_of(server)["process"]
        return pid is not None and pid != first.pid and psutil.pid_exists(pid)

    wait_for(restarted, timeout=20, message="a new read process")
    assert set(codes) == {200}, codes
    second = read_process(server)
    assert second.pid != first.pid and "reader" in second.cmdline()
    assert "the read process exited" in server.log()


def test_the_tick_reads_through_the_read_process_and_the_stop_is_clean(server_factory):
    """The tick's aggregates come from the read process. And its server waits for every open
    connection to end: the web node's kept connections must go first, or the stop waits for its
    timeout and kills it."""
    server = server_factory(env=READS)
    read_process(server)
    ingest(server, [{"metric": "ticked", "value": {"ms": 5}} for _ in range(30)])
    with Recorder(server.url, batch_window=60) as rec:
        # The tick's aggregates come from the read process (and keep a connection to it too).
        wait_for(
            lambda: any(a.get("metrics", {}).get("ticked", {}).get("count") == 30 for a in rec.aggregates),
            message="a tick with the 30 events",
        )
        before = reads_of(server)["fetched"]
        wait_for(lambda: reads_of(server)["fetched"] >= before + 2, message="two more ticks")
        # Reads side by side, as the dashboard's panels make them: several kept connections.
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(
                    lambda _: server.get("/api/metrics/timeseries?window=300&step=5").status_code, range(32)
                )
            )
        assert set(codes) == {200}
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0
    assert "the read process stopped (clean)" in server.log()
