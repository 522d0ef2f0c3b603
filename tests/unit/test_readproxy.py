"""The read proxy (backend/web/readproxy.py) against a real HTTP/1.1 server on a Unix socket.

The upstream stands in for the read process: a keep-alive HTTP/1.1 server on a Unix socket that
echoes what it was asked. The proxy is driven through werkzeug's test client, as the web node's
server drives it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from werkzeug.test import Client

from backend.web.readproxy import PEER_HEADER, PROXIED_ENVIRON, PeerFromProxy, ReadProxy


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as eventlet's server in the read process

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.connections.append(self.connection)

    def do_GET(self):
        self.answer(with_body=True)

    def do_HEAD(self):
        self.answer(with_body=False)

    def answer(self, *, with_body: bool):
        url = urlsplit(self.path)
        args = parse_qs(url.query)
        if url.path == "/api/metrics/slow":
            time.sleep(float(args["s"][0]))
        if url.path == "/api/metrics/big":  # chunked, as a streamed wide aggregate
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(args["n"][0])):
                self.wfile.write(b"8\r\n%08d\r\n" % i)
            self.wfile.write(b"0\r\n\r\n")
            return
        body = orjson.dumps(
            {
                "path": url.path,
                "query": url.query,
                "method": self.command,
                "headers": {k.lower(): self.headers.get_all(k) for k in self.headers},
            }
        )
        self.send_response(400 if "fail" in args else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Upstream", "read")
        self.send_header("Vary", "Origin")
        self.end_headers()
        if with_body:
            self.wfile.write(body)


class Upstream(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str):
        super().__init__(path, Echo)
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def handle_error(self, request, client_address):
        """A client that went away (the proxy's timeout test) is expected here, not a failure."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def __exit__(self, *exc):
        # As a read process that exits: every connection it had goes too.
        self.shutdown()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()
        os.unlink(self.server_address)


def local_app(environ, start_response):
    """The web node's own app: answers what the proxy does not forward, or could not."""
    body = orjson.dumps({"served": "inline", "path": environ["PATH_INFO"]})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "read.sock")


@pytest.fixture
def make_proxy(sock_path):
    made: list[ReadProxy] = []

    def make(timeout_s: float = 5) -> ReadProxy:
        made.append(ReadProxy(local_app, sock_path, timeout_s=timeout_s))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


class WholeClient(Client):
    """werkzeug's test client reading each answer whole, as a server writing it out does."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def test_reads_are_forwarded_with_query_headers_and_the_clients_address(make_proxy, sock_path):
    proxy = make_proxy(5)
    with Upstream(sock_path):
        resp = WholeClient(proxy).get(
            "/api/metrics/aggregate?window=60&metric=a%20b",
            headers={"Origin": "http://example.test", PEER_HEADER: "6.6.6.6", "Connection": "x"},
            environ_base={"REMOTE_ADDR": "203.0.113.9"},
        )
    assert resp.status_code == 200
    body = orjson.loads(resp.data)
    assert body["path"] == "/api/metrics/aggregate"
    assert body["query"] == "window=60&metric=a%20b"
    assert body["method"] == "GET"
    # The address the web node saw, not one the client claimed in the header.
    assert body["headers"][PEER_HEADER.lower()] == ["203.0.113.9"]
    assert body["headers"]["origin"] == ["http://example.test"]
    assert body["headers"]["host"] == ["localhost"]  # the client's Host, passed on
    assert "connection" not in body["headers"]  # hop-by-hop: not forwarded
    assert resp.headers["X-Upstream"] == "read"
    assert resp.headers["Vary"] == "Origin"
    assert proxy.status() == {"forwarded": 1, "inline": 0, "timeouts": 0, "fetched": 0}


def test_other_paths_and_writes_stay_in_the_web_process(make_proxy, sock_path):
    proxy = make_proxy(5)
    with Upstream(sock_path):
        c = WholeClient(proxy)
        assert orjson.loads(c.get("/api/health").data)["served"] == "inline"
        assert orjson.loads(c.post("/api/metrics/aggregate").data)["served"] == "inline"
    assert proxy.status()["forwarded"] == 0


def test_errors_and_head_pass_through(make_proxy, sock_path):
    proxy = make_proxy(5)
    with Upstream(sock_path):
        c = WholeClient(proxy)
        bad = c.get("/api/metrics/aggregate?fail=1")
        head = c.head("/api/metrics/aggregate")
    assert bad.status_code == 400
    assert bad.headers["X-Upstream"] == "read"
    assert orjson.loads(bad.data)["query"] == "fail=1"
    assert head.status_code == 200
    assert head.data == b""
    assert int(head.headers["Content-Length"]) > 0


def test_a_long_answer_streams_through_whole_and_the_connection_is_kept(make_proxy, sock_path):
    proxy = make_proxy(5)
    n = 30_000  # 240 kB: several of the proxy's 64 kB reads
    with Upstream(sock_path):
        c = WholeClient(proxy)
        first = c.get(f"/api/metrics/big?n={n}")
        second = c.get("/api/metrics/recent")
    assert first.data == b"".join(b"%08d" % i for i in range(n))
    assert second.status_code == 200
    assert len(proxy._idle) == 1  # both went over one connection, now idle again


def test_without_a_read_process_the_web_process_answers(make_proxy, sock_path):
    proxy = make_proxy(5)
    resp = WholeClient(proxy).get("/api/metrics/aggregate?window=60")
    assert resp.status_code == 200
    assert orjson.loads(resp.data) == {"served": "inline", "path": "/api/metrics/aggregate"}
    assert proxy.status() == {"forwarded": 0, "inline": 1, "timeouts": 0, "fetched": 0}


def test_a_restarted_read_process_is_reached_on_a_new_connection(make_proxy, sock_path):
    proxy = make_proxy(5)
    c = WholeClient(proxy)
    with Upstream(sock_path):
        assert c.get("/api/metrics/recent").status_code == 200
    assert len(proxy._idle) == 1  # kept, but its server is gone
    with Upstream(sock_path):
        resp = c.get("/api/metrics/recent?again=1")
    assert orjson.loads(resp.data)["query"] == "again=1"
    assert proxy.status() == {"forwarded": 2, "inline": 0, "timeouts": 0, "fetched": 0}


def test_a_read_process_that_does_not_answer_in_time_gets_a_json_504(make_proxy, sock_path):
    proxy = make_proxy(0.3)
    with Upstream(sock_path):
        resp = WholeClient(proxy).get("/api/metrics/slow?s=2")
    assert resp.status_code == 504
    assert resp.headers["Content-Type"] == "application/json"
    body = orjson.loads(resp.data)
    assert body["status"] == 504
    assert "did not answer" in body["error"]
    assert proxy.status()["timeouts"] == 1


def _seen_through_peer_from_proxy(environ_base: dict) -> dict:
    """REMOTE_ADDR and the peer header as the read process's app sees them, for a request that
    carries the header, on a connection described by `environ_base`."""
    seen = {}

    def app(environ, start_response):
        seen["addr"] = environ.get("REMOTE_ADDR")
        seen["header"] = environ.get("HTTP_X_PULSEBOARD_PEER")
        start_response("204 No Content", [])
        return []

    Client(PeerFromProxy(app)).get("/", headers={PEER_HEADER: "198.51.100.7"}, environ_base=environ_base)
    return seen


def test_the_read_process_takes_the_address_from_the_proxy_header():
    seen = _seen_through_peer_from_proxy({PROXIED_ENVIRON: True, "REMOTE_ADDR": "192.0.2.1"})
    assert seen == {"addr": "198.51.100.7", "header": None}


def test_on_a_handed_connection_the_header_is_the_clients_and_is_ignored():
    # No proxy marker: a client's connection that the web node handed over (backend/web/handoff.py).
    seen = _seen_through_peer_from_proxy({"REMOTE_ADDR": "192.0.2.1"})
    assert seen == {"addr": "192.0.2.1", "header": None}


def test_fetch_gives_a_200s_body_and_none_otherwise(make_proxy, sock_path):
    proxy = make_proxy(5)
    assert proxy.fetch("/api/metrics/aggregate", "window=60") is None  # no read process yet
    with Upstream(sock_path):
        body = orjson.loads(proxy.fetch("/api/metrics/aggregate", "window=60"))
        assert body["path"] == "/api/metrics/aggregate" and body["query"] == "window=60"
        assert body["headers"]["host"] == ["localhost"]
        assert proxy.fetch("/api/metrics/aggregate", "fail=1") is None
        assert len(proxy._idle) == 1  # kept for the next one
    assert proxy.status()["fetched"] == 2


def test_a_request_without_a_host_header_is_given_one(make_proxy, sock_path):
    """An HTTP/1.0 client need not send Host; the forwarded HTTP/1.1 request must have one."""
    proxy = make_proxy(5)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/metrics/recent",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "192.0.2.1",
        "SERVER_NAME": "example.test",
    }
    started = []
    with Upstream(sock_path):
        body = b"".join(proxy(environ, lambda status, headers: started.append(status)))
    assert started == ["200 OK"]
    assert orjson.loads(body)["headers"]["host"] == ["example.test"]
