"""The listening socket and the HTTP server's limits (used by backend.cli.serve.serve).

- A busy port is an error: eventlet.listen sets SO_REUSEPORT by default, with which a second
  server binds the same address and the kernel splits connections between two unrelated systems.
- Capacity: eventlet.wsgi.server runs every connection (an idle websocket too) in one green thread
  of a pool of `max_size`, 1,024 by default; past it the accept loop stops and even /api/health
  waits. We pass HTTP_MAX_CONNECTIONS, bounded by the open-file limit, whose soft value we raise
  to the hard one at startup.
- Slow clients: a connection gets HTTP_IDLE_TIMEOUT_S to start a request, and then
  HTTP_HEADER_TIMEOUT_S to finish its request line and headers, or it is closed (slowloris);
  HTTP_IDLE_TIMEOUT_S is also the per-read/-write socket timeout (websockets are pinged by
  Socket.IO every 25 s, so a live one is never idle that long).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import socket

from backend.config import SettingError

log = logging.getLogger(__name__)

FD_RESERVE = 512  # descriptors kept for Redis connections, files, logs, the generator pipe


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (every idle websocket holds a descriptor;
    the usual soft default of 1,024 would cap connections long before anything else). Returns
    the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def connection_capacity(configured: int, nofile: int) -> int:
    """HTTP_MAX_CONNECTIONS, lowered to what the open-file limit allows."""
    usable = max(64, nofile - FD_RESERVE)
    if configured > usable:
        log.warning(
            "HTTP_MAX_CONNECTIONS=%d exceeds the open-file limit (%d); serving at most %d connections",
            configured,
            nofile,
            usable,
        )
        return usable
    return configured


def _in_use(host: str, port: int) -> SettingError:
    return SettingError(
        f"port {port} on {host} is already in use (another server?): stop it, or choose another "
        "with --port or PORT"
    )


def ensure_port_free(host: str, port: int) -> None:
    """Fail fast, before anything starts, when another process listens on host:port. Binds a probe
    socket without SO_REUSEPORT, which the kernel refuses while any socket is bound there."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
        try:
            probe.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise _in_use(host, port) from None
            raise


def listen(host: str, port: int, backlog: int, *, green: str = "eventlet"):
    """A listening socket without SO_REUSEPORT (so a busy port fails here), with TCP_NODELAY:
    eventlet's (`green="eventlet"`), or the standard library's, which gevent has patched."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, addr = infos[0]
    try:
        if green == "eventlet":
            import eventlet

            sock = eventlet.listen(addr, family, backlog=backlog, reuse_addr=True, reuse_port=False)
        else:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(addr)
                sock.listen(backlog)
            except OSError:
                sock.close()
                raise
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise _in_use(host, port) from None
        raise
    # Accepted sockets inherit it (Linux). Without it Nagle holds a small frame back while the
    # one before it is unacknowledged, and a client that only reads delays its ACKs (up to 40 ms):
    # the p95/p99 of a lightly loaded node were that wait.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def protocol_class(idle_timeout_s: float, header_timeout_s: float, handoff=None):
    """eventlet.wsgi's HttpProtocol with an idle deadline before a request starts and a header
    deadline once it has (eventlet only has a per-read timeout, which a client sending one byte
    every few seconds never trips). With `handoff` (backend/web/handoff.py), a request that the
    other process serves has its connection handed there before it is parsed."""
    import eventlet
    from eventlet import wsgi

    from backend.web import handoff as _handoff

    class DeadlineProtocol(wsgi.HttpProtocol):
        _header_timer = None

        def setup(self):
            super().setup()
            _handoff.prefixed_input(self)

        def handle_one_request(self):
            if idle_timeout_s > 0 or handoff is not None:
                try:
                    head = self._next_head()  # an idle keep-alive connection waits here
                except eventlet.Timeout:
                    self.close_connection = 1
                    return
                except (OSError, ValueError):
                    self.close_connection = 1
                    return
                if head is None or (handoff is not None and head and handoff.route(self, head)):
                    self.close_connection = 1
                    return
            if header_timeout_s <= 0:
                return super().handle_one_request()
            timer = self._header_timer = eventlet.Timeout(header_timeout_s)
            try:
                return super().handle_one_request()
            except eventlet.Timeout as fired:
                if fired is not timer:
                    raise
                self.close_connection = 1
                with contextlib.suppress(OSError):
                    self.wfile.write(
                        b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                    )
            finally:
                timer.cancel()
                self._header_timer = None

        def _next_head(self) -> bytes | None:
            """The start of the next request, once it comes (raises eventlet.Timeout past the
            idle deadline). None: the connection sat idle and went back to the other process."""
            deadline = idle_timeout_s or None
            hold = handoff.idle_hold_s if handoff is not None else None
            if hold is not None and (deadline is None or hold < deadline):
                try:
                    with eventlet.Timeout(hold):
                        return self.rfile.peek(1)
                except eventlet.Timeout:
                    if handoff.hand_back_idle(self):
                        return None
                    deadline = deadline - hold if deadline else None
            with eventlet.Timeout(deadline):
                return self.rfile.peek(1)

        def parse_request(self):
            try:
                return super().parse_request()
            finally:
                # Headers are in: the application's own time (a long-poll, a websocket) is not
                # under the header deadline.
                if self._header_timer is not None:
                    self._header_timer.cancel()

        def finish(self):
            if not _handoff.finish_handed(self):
                super().finish()

    return DeadlineProtocol
