"""Failures a client can see and survive (issue 11): Redis down or restarted, pool exhaustion,
hostile requests. Each test runs a real server against a real Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import requests

from backend.cli.embedded_redis import EmbeddedRedis
from backend.cli.procs import pulseboard_command
from tests.conftest import ROOT, worker_in_process
from tests.helpers import wait_for

REDIS_BACKED = [
    "/api/metrics/recent",
    "/api/metrics/aggregate?window=60",
    "/api/metrics/timeseries?window=60&step=10",
    "/api/metrics/stats",
    "/api/metrics/rejected",
    "/api/metrics/top?by=endpoint",
    "/api/alerts",
    "/api/rules",
    "/api/generator",
]


@pytest.fixture
def server_factory(server_factory):
    return worker_in_process(server_factory)  # (live_server uses this one too)


def _event(value: float = 1.0) -> dict:
    return {"metric": "latency", "value": value, "ts": time.time()}


def test_redis_down_answers_503_json_logging_one_line_per_outage(server_factory):
    with EmbeddedRedis() as own_redis:
        server = server_factory(redis_url=own_redis.url)
        for path in REDIS_BACKED:
            assert server.get(path).status_code == 200, path
        own_redis.stop()
        for _ in range(2):
            for path in REDIS_BACKED:
                resp = server.get(path)
                assert resp.status_code == 503, (path, resp.text)
                assert resp.json()["error"] == "redis unavailable", path
                assert resp.headers["Retry-After"] == "1"
        resp = server.post("/api/ingest", json=_event())
        assert resp.status_code == 503 and resp.json()["error"] == "redis unavailable"
        own_redis.start()
        wait_ok = [server.get("/api/metrics/stats").status_code for _ in range(3)]
        assert wait_ok[-1] == 200
        assert server.post("/api/ingest", json=_event()).status_code == 202
    log = server.log()
    assert log.count("redis unavailable (") == 1, log
    assert "unhandled error" not in log and "Traceback" not in log, log


def test_pooled_connections_are_retried_after_a_redis_restart(server_factory):
    """Redis restarts between two requests: every pooled connection is dead, and the first use
    of each is retried on a fresh one instead of failing."""
    with EmbeddedRedis() as own_redis:
        server = server_factory(redis_url=own_redis.url)
        # Several pooled connections: concurrent requests each take one.
        with requests.Session() as s:
            for _ in range(3):
                for path in REDIS_BACKED:
                    assert s.get(server.url + path, timeout=5).status_code == 200
        own_redis.stop()
        own_redis.start()
        codes = [server.post("/api/ingest", json=_event(i)).status_code for i in range(20)]
        codes += [server.get(path).status_code for path in REDIS_BACKED]
    assert set(codes) <= {200, 202}, codes


def test_pool_exhaustion_answers_503_with_retry_after(server_factory, r):
    """All of a small pool's connections stuck on a paused Redis: the requests that find none
    free wait REDIS_POOL_TIMEOUT_S and answer 503 + Retry-After (redis-py's default pool answered
    them with MaxConnectionsError, a 500)."""
    server = server_factory(env={"REDIS_MAX_CONNECTIONS": "2", "REDIS_POOL_TIMEOUT_S": "0.2"})
    r.client_pause(1500, all=True)  # commands queue in Redis; connections stay busy meanwhile
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(lambda _: server.get("/api/metrics/stats"), range(10)))
    codes = [resp.status_code for resp in responses]
    busy = [resp for resp in responses if resp.status_code == 503]
    assert busy and set(codes) <= {200, 503}, codes
    for resp in busy:
        assert resp.json()["error"].startswith("server busy"), resp.text
        assert resp.headers["Retry-After"] == "1"
    wait_for(lambda: server.get("/api/metrics/stats").status_code == 200, message="pool free again")


def test_an_overflowed_sum_reads_as_flagged_through_the_api(live_server, r, names):
    """Sums beyond the float range are never read as a wrong finite number (the issue saw 0.0).
    Redis adds in long double, so across batches 1.7e308 + 1.7e308 is kept and reads as an
    overflow (sum null, sum_overflow true), and taking 1.7e308 off again gives the exact sum
    back. Within one batch the sum overflows in Python first: the script then sets the marker
    and the sum stays flagged."""
    stats = f"{names['KEY_PREFIX']}stats"

    def send(*events):
        before = int(r.hget(stats, "accepted") or 0)
        pipe = r.pipeline(transaction=False)
        for event in events:
            pipe.publish(live_server.channel, orjson.dumps(event))
        pipe.execute()
        wait_for(lambda: int(r.hget(stats, "accepted") or 0) == before + len(events), message="stored")
        return live_server.get("/api/metrics/aggregate?window=60").json()["metrics"]

    send({"metric": "big", "value": 1.7e308})
    big = send({"metric": "big", "value": 1.7e308})["big"]["fields"]["value"]
    assert big["sum_overflow"] is True and big["sum"] is None and big["avg"] is None
    big = send({"metric": "big", "value": -1.7e308})["big"]["fields"]["value"]
    assert big["sum_overflow"] is False and big["sum"] == 1.7e308 and big["count"] == 3

    # Published together they are usually one batch (the sum overflows in Python, the marker is
    # set); either way it must read as an overflow.
    one = send(
        {"metric": "huge", "value": 1.7e308},
        {"metric": "huge", "value": 1.7e308},
        {"metric": "ok", "value": 2},
    )
    huge = one["huge"]["fields"]["value"]
    assert huge["sum_overflow"] is True and huge["sum"] is None and huge["max"] == 1.7e308
    assert (
        one["ok"]["fields"]["value"]["sum"] == 2.0 and one["ok"]["fields"]["value"]["sum_overflow"] is False
    )


# --- CORS, CSRF, nosniff (row 11) -------------------------------------------------------------------
def test_rest_cors_follows_cors_origins_and_always_allows_the_own_origin(server_factory):
    server = server_factory(env={"CORS_ORIGINS": "https://dash.example"})
    own = f"http://127.0.0.1:{server.port}"
    for origin in ("https://dash.example", own):
        resp = server.get("/api/metrics/stats", headers={"Origin": origin})
        assert resp.headers.get("Access-Control-Allow-Origin") == origin, origin
        pre = requests.options(
            server.url + "/api/ingest",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-api-key",
            },
            timeout=5,
        )
        assert pre.headers.get("Access-Control-Allow-Origin") == origin
        assert "X-API-Key" in pre.headers["Access-Control-Allow-Headers"]
    resp = server.get("/api/metrics/stats", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    # A cross-site write is refused outright (its browser names the Origin).
    resp = server.post("/api/ingest", json=_event(), headers={"Origin": "https://evil.example"})
    assert resp.status_code == 403 and "CORS_ORIGINS" in resp.json()["error"]
    assert server.post("/api/ingest", json=_event(), headers={"Origin": own}).status_code == 202


def test_socketio_with_an_origin_list_accepts_its_own_origin(server_factory):
    server = server_factory(env={"CORS_ORIGINS": "https://dash.example"})
    own = f"http://127.0.0.1:{server.port}"

    def handshake(origin: str) -> int:
        return server.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": origin}).status_code

    assert handshake(own) == 200  # a list used to lock the dashboard out of its own server
    assert handshake("https://dash.example") == 200
    assert handshake("https://evil.example") == 400


def test_a_bodiless_write_needs_json_or_a_custom_header(live_server):
    """Without INGEST_API_KEY a cross-site form (no Origin sent by old browsers, or a text/plain
    body) could ack an alert; a write now needs a JSON body or X-Requested-With / X-API-Key."""
    for body in ({}, {"data": "x=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}):
        resp = live_server.post("/api/alerts/nope/ack", **body)
        assert resp.status_code == 415 and "X-Requested-With" in resp.json()["error"], resp.text
    assert live_server.post("/api/alerts/nope/ack", headers={"X-Requested-With": "x"}).status_code == 404
    resp = requests.delete(live_server.url + "/api/rules/nope", headers={"X-Requested-With": "x"}, timeout=5)
    assert resp.status_code == 404
    resp = requests.delete(live_server.url + "/api/rules/nope", timeout=5)
    assert resp.status_code == 415


def test_every_response_says_nosniff(live_server):
    for path in (
        "/api/health",
        "/api/metrics/stats",
        "/api/nope",
        "/",
        "/socket.io/?EIO=4&transport=polling",
    ):
        resp = live_server.get(path)
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", (path, resp.status_code)
    assert live_server.post("/api/ingest", data="x").headers.get("X-Content-Type-Options") == "nosniff"


# --- clear errors (row 14) ----------------------------------------------------------------------------
MALFORMED_PACKETS = ["42[", '42["subscribe"', "4x", "42{}", "42[1]", '42"x"', "4" + "[" * 50, "40/nope,"]


def test_malformed_socketio_packets_log_no_error_tracebacks(live_server):
    import re

    for packet in MALFORMED_PACKETS:
        handshake = live_server.get("/socket.io/?EIO=4&transport=polling").text
        sid = re.search(r'"sid":"([^"]+)"', handshake).group(1)
        url = f"{live_server.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
        requests.post(url, data="40", timeout=5)  # connect to the default namespace
        requests.post(url, data=packet, timeout=5)
    assert live_server.get("/api/health").status_code == 200
    log = live_server.log()
    assert "Traceback" not in log and " ERROR " not in log, log


def test_wrong_methods_answer_405_json(live_server):
    for method, path in (("GET", "/api/ingest"), ("GET", "/api/alerts/x/ack"), ("PUT", "/api/metrics/stats")):
        resp = requests.request(method, live_server.url + path, timeout=5)
        assert resp.status_code == 405, (method, path, resp.status_code)
        assert resp.json()["status"] == 405 and "Allow" in resp.headers
    assert "POST" in live_server.get("/api/ingest").headers["Allow"]
    assert live_server.get("/api/nope").status_code == 404


def test_the_documented_ingest_example_is_accepted(live_server):
    doc = live_server.get("/api/openapi.json").json()
    media = doc["paths"]["/api/ingest"]["post"]["requestBody"]["content"]["application/json"]
    for example in (media["example"], doc["components"]["schemas"]["EventIn"]["example"]):
        resp = live_server.post("/api/ingest", json=example)
        assert resp.status_code == 202, resp.text


def test_serve_without_redis_url_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PULSEBOARD_ENV_FILE"] = "/nonexistent"
    for command in ("serve", "worker"):
        done = subprocess.run(
            pulseboard_command(command), env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "REDIS_URL" in lines[0], done.stderr
    env["PORT"] = "not-a-port"
    done = subprocess.run(
        pulseboard_command("serve"), env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode != 0 and done.stderr.strip().splitlines() == [
        "pulseboard: PORT must be an integer, got 'not-a-port'"
    ], done.stderr


# --- busy port (row 8), slow clients (row 4) --------------------------------------------------------
def test_a_second_server_on_a_busy_port_refuses_to_start(live_server):
    env = {**live_server.env, "PORT": str(live_server.port)}
    done = subprocess.run(
        pulseboard_command("serve", "--port", str(live_server.port)),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {live_server.port}" in lines[0] and "in use" in lines[0], done.stderr
    assert live_server.get("/api/health").status_code == 200


def test_a_half_sent_request_is_closed_after_the_header_timeout(server_factory):
    server = server_factory(env={"HTTP_HEADER_TIMEOUT_S": "0.5", "HTTP_IDLE_TIMEOUT_S": "30"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        answer = slow.recv(4096)  # the server closes it (408, then EOF) long before our 10 s timeout
        rest = slow.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408") and rest == b""
    # a complete request on a fresh connection is unaffected
    assert server.get("/api/health").status_code == 200


def test_an_idle_connection_is_closed_after_the_idle_timeout(server_factory):
    server = server_factory(env={"HTTP_IDLE_TIMEOUT_S": "0.5"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle:
        assert idle.recv(4096) == b""  # closed without a byte sent
    assert server.get("/api/health").status_code == 200


# --- rate limit (row 12) ---------------------------------------------------------------------------
def test_the_rate_limit_holds_over_any_window_not_just_fixed_ones(server_factory):
    """A fixed window lets up to twice the limit through around each window boundary; the moving
    window never lets more than the limit through in any second."""
    server = server_factory(env={"INGEST_RATE_LIMIT": "10/second"})
    accepted: list[float] = []
    rejected = 0
    with requests.Session() as s:
        # One hit opens a fixed window; a flood from half-way through it until after it ends got
        # the limit twice within half a second (the limit for the rest of the first window, and
        # again for the whole next one). The pause is the scenario, not a wait for something.
        assert s.post(server.url + "/api/ingest", json=_event(), timeout=5).status_code == 202
        accepted.append(time.monotonic())
        time.sleep(0.5)
        end = accepted[0] + 1.7
        while time.monotonic() < end:
            resp = s.post(server.url + "/api/ingest", json=_event(), timeout=5)
            if resp.status_code == 202:
                accepted.append(time.monotonic())
            else:
                assert resp.status_code == 429, resp.text
                rejected += 1
    assert rejected and len(accepted) >= 10
    # 0.9 s, not 1: client-side timestamps jitter by the round trip
    densest = max(sum(1 for t in accepted if start <= t < start + 0.9) for start in accepted)
    assert densest <= 10, densest


# --- generator identity (row 13) -------------------------------------------------------------------
def test_pulseboard_generate_does_not_retune_the_dashboards_generator(redis_url, r, names, tmp_path):
    from backend.cli.procs import generator_command, stop
    from backend.storage.keys import Keys

    keys = Keys.from_config(names)
    env = {**os.environ, **names, "PULSEBOARD_ENV_FILE": "/nonexistent"}
    dashboard = subprocess.Popen(
        generator_command(redis_url, "--rate", "50", "--burst-every", "0"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    other = None
    try:
        wait_for(lambda: r.exists(keys.generator_status), message="the dashboard generator's status")
        other = subprocess.Popen(
            pulseboard_command("generate", "--redis-url", redis_url, "--rate", "7"),  # no --name
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        own = f"generate-{other.pid}"  # the default identity
        own_status = keys.generator_status_of(own)
        wait_for(lambda: r.exists(own_status), message="the second generator's own status")
        assert r.hget(keys.generator_control_of(own), "rate") == b"7.0"
        assert r.hget(keys.generator_control, "rate") == b"50.0"  # the one the API steers: untouched
        assert r.hget(keys.generator_status, "rate") == b"50.0"
        stop(other)
        assert not r.exists(own_status)
        assert r.hget(keys.generator_control, "rate") == b"50.0"
    finally:
        stop(other)
        stop(dashboard)
