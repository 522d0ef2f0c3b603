"""Heavy reads in a process of their own: the web node forwards them to a read process.

A web node's cooperative loop also writes every event to every client. A read of an hour of wide
data is hundreds of milliseconds of Python, and cut into parts (backend/web/offload.py) it still
takes that core from the deliveries: 8 such readers held deliveries for up to a second
(docs/benchmarks.md, "Readers over wide data"). So `serve` and `up` start a read process
(`pulseboard reader`, READ_MODE) beside the web process: the same app, serving on a Unix socket
that only this user can reach, at the same CPU priority. The web process forwards GET and HEAD
under /api/metrics/ to it and streams the answer back, which costs it a copy of the bytes, not
the merge. Nothing else moves: health, ingest, alerts, rules and the sockets stay here.

Under eventlet most reads skip this copy: the connection itself is handed to the read process
(backend/web/handoff.py). The proxy serves the rest: gevent and threading, the tick's fetches,
and reads while the read process is full or does not answer its probe.

While the read process is not there (starting, restarting after a crash), a read is answered
here as before, so a read never fails for want of it. A read process that does not answer in
time gets a 504 (no inline retry: that would double the load that made it slow).

The client's address travels in PEER_HEADER (set here, never taken from the client), so the
rate limit and the access log in the read process see the real client; a trusted proxy's
X-Forwarded-* headers are forwarded as they came and read there under the same TRUSTED_PROXIES.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
from urllib.parse import quote

import orjson

log = logging.getLogger(__name__)

PATH_PREFIXES = ("/api/metrics/",)
METHODS = ("GET", "HEAD")
PEER_HEADER = "X-Pulseboard-Peer"
_PEER_ENVIRON = "HTTP_X_PULSEBOARD_PEER"
PROXIED_ENVIRON = "pulseboard.proxied"  # set by the read process's server on its Unix socket
CHUNK_BYTES = 64 * 1024  # per read of the answer and write to the client
IDLE_CONNECTIONS = 32  # kept open to the read process between requests

# RFC 9110 7.6.1: a proxy does not forward these (and sets its own framing).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout_s: float):
        super().__init__("localhost", timeout=timeout_s)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _NotThere(Exception):
    """No read process listens (not started yet, or restarting)."""


def forwarded(environ: dict) -> bool:
    return environ.get("REQUEST_METHOD") in METHODS and environ.get("PATH_INFO", "").startswith(PATH_PREFIXES)


class ReadProxy:
    """WSGI middleware of the web node: reads go to the read process at `path`."""

    def __init__(self, app, path: str, *, timeout_s: float):
        self.app = app
        self.path = path
        self.timeout_s = timeout_s
        self._idle: list[_UnixConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        self.forwarded = 0
        self.inline = 0  # answered here while the read process was not there
        self.timeouts = 0
        self.fetched = 0  # this node's own reads (the tick's aggregates)

    def __call__(self, environ, start_response):
        if not forwarded(environ):
            return self.app(environ, start_response)
        try:
            conn, resp = self._exchange(environ)
        except _NotThere:
            self.inline += 1
            return self.app(environ, start_response)
        except TimeoutError:
            self.timeouts += 1
            return _error(start_response, 504, "the read process did not answer in time; try again")
        self.forwarded += 1
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
        start_response(f"{resp.status} {resp.reason}", headers)
        return self._body(conn, resp)

    def fetch(self, path: str, query: str = "") -> bytes | None:
        """GET `path?query` from the read process for this node's own use (the tick's
        aggregates): the body of a 200, or None when the read process is not there, too slow or
        answered otherwise, and the caller computes it itself."""
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_ADDR": "127.0.0.1",
        }
        try:
            conn, resp = self._exchange(environ)
        except (_NotThere, TimeoutError):
            return None
        try:
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self._release(conn, resp, whole=False)
            return None
        self._release(conn, resp, whole=True)
        self.fetched += 1
        return body if resp.status == 200 else None

    def close(self) -> None:
        """Close the kept connections, and from now on every connection once its read is done
        (the read process's server, stopping, waits for each open connection to end)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def status(self) -> dict:
        return {
            "forwarded": self.forwarded,
            "inline": self.inline,
            "timeouts": self.timeouts,
            "fetched": self.fetched,
        }

    def _exchange(self, environ):
        """Send the request and read the status line and headers, on a kept connection or a new
        one. A kept connection the read process has closed (it restarted) fails before any answer
        came, and the request (a GET) is sent again on a new one."""
        conn = self._take()
        if conn is not None:
            try:
                return conn, self._send(conn, environ)
            except (http.client.HTTPException, ConnectionError):
                conn.close()  # (BrokenPipeError is a ConnectionError)
            except BaseException:
                conn.close()
                raise
        conn = _UnixConnection(self.path, self.timeout_s)
        try:
            conn.connect()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            conn.close()
            raise _NotThere from exc
        try:
            return conn, self._send(conn, environ)
        except (http.client.HTTPException, ConnectionError) as exc:
            conn.close()
            raise _NotThere from exc  # it went away mid-request: answer here
        except BaseException:
            conn.close()
            raise

    def _send(self, conn: _UnixConnection, environ) -> http.client.HTTPResponse:
        uri = quote(environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=~")
        if environ.get("QUERY_STRING"):
            uri += "?" + environ["QUERY_STRING"]
        conn.putrequest(environ["REQUEST_METHOD"], uri, skip_host=True, skip_accept_encoding=True)
        for key, value in environ.items():
            if not key.startswith("HTTP_") or key == _PEER_ENVIRON:
                continue
            name = key[5:].replace("_", "-")
            if name.lower() not in _HOP_BY_HOP:
                conn.putheader(name, value)
        if "HTTP_HOST" not in environ:  # an HTTP/1.0 client's request: HTTP/1.1 needs one
            conn.putheader("Host", environ.get("SERVER_NAME") or "localhost")
        conn.putheader(PEER_HEADER, environ.get("REMOTE_ADDR") or "")
        conn.endheaders()
        return conn.getresponse()

    def _body(self, conn: _UnixConnection, resp: http.client.HTTPResponse):
        whole = False
        try:
            while chunk := resp.read(CHUNK_BYTES):
                yield chunk
            whole = True
        finally:
            self._release(conn, resp, whole=whole)

    def _release(self, conn: _UnixConnection, resp: http.client.HTTPResponse, *, whole: bool) -> None:
        """Keep the connection for the next read, or close it: an answer not read whole (the
        client went away) still has bytes on the way, so the connection cannot carry another."""
        if whole and not resp.will_close:
            self._give_back(conn)
        else:
            conn.close()

    def _take(self) -> _UnixConnection | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _give_back(self, conn: _UnixConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()


def _error(start_response, status: int, message: str):
    """The API's JSON error shape (backend/web/errors.py), outside Flask."""
    body = orjson.dumps({"error": message, "status": status})
    reason = http.client.responses.get(status, "")
    start_response(
        f"{status} {reason}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("X-Content-Type-Options", "nosniff"),
        ],
    )
    return [body]


class PeerFromProxy:
    """WSGI middleware of the read process: the client's address is the one the web node saw.
    Only the web node can reach the read process (a Unix socket in a directory of mode 0700).
    On a client's own connection, handed over (backend/web/handoff.py), the header is the
    client's and is ignored: the connection's peer is the client."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        peer = environ.pop(_PEER_ENVIRON, None)
        if peer is not None and environ.get(PROXIED_ENVIRON):
            environ["REMOTE_ADDR"] = peer
        return self.app(environ, start_response)
