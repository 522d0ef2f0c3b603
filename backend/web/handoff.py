"""A read's connection handed to the read process, instead of its bytes copied through this one.

Through the proxy (backend/web/readproxy.py) every GET /api/metrics/* woke the web process twice
more (the request in and out, the answer in and out), in a process that is also writing every
event to every client: with 50 clients getting 1,000 events/s, a live aggregate took p50 8.7-9.9
ms forwarded and 5.3-6.2 ms handed over (docs/benchmarks.md, session 10). Under eventlet the web process now hands the client's
connection itself to the read process (SCM_RIGHTS over a Unix socket), with the bytes of the
request it has read so far, as soon as a request on it starts with `GET /api/metrics/` or `HEAD
/api/metrics/`. The read process serves that request and the next ones on the connection, until
one asks for something else; that one it hands back the same way. Each side looks at a request
before parsing it, so nothing is parsed twice and the answers stay in order.

The channel is one SOCK_SEQPACKET connection from the web process to the read process's
`handoff.sock`, beside its HTTP socket (in the same mode-0700 directory). Messages start with
one byte of kind:
- `H` + an 8-byte number + the bytes read of the request, with the connection's descriptor:
  serve this connection (either way);
- `A` / `N` + the number: taken / not taken (the read process serves READ_MAX_CONNECTIONS at
  most). The sender keeps its own descriptor and what it read until the answer comes, and
  serves the request itself on `N` or when the channel ends first: a read process that dies
  (or restarts) loses no request it had not taken yet;
- `P` / `O`: a liveness probe every PROBE_S, and its answer.

The web process hands a connection over only while the read process answered its last probe
within STALL_S. A read process that stops answering (stuck, stopped) gets no more connections;
reads then go through the proxy again, where one not answered in READ_TIMEOUT_S gets a 504.
Connections it has taken wait for it, as with any server, and a read process that dies ends
them (the proxy answered those elsewhere; a client retries on a new connection). So it holds a
connection only while it is in use: one idle for IDLE_HOLD_S goes back to the web process,
which holds idle keep-alive connections (a dashboard that reads every second or two keeps its
connection here). Past
READ_MAX_CONNECTIONS it takes no more, and the web process keeps the connection and proxies its
reads; connections handed back to the web process count against HTTP_MAX_CONNECTIONS there.
"""

from __future__ import annotations

import array
import contextlib
import errno
import io
import logging
import os
import socket
import struct
import time

log = logging.getLogger(__name__)

SOCKET_NAME = "handoff.sock"  # beside the read process's HTTP socket
PROBE_S = 0.5  # how often the web process checks that the read process answers
STALL_S = 2.0  # no answer for this long: no more connections are handed to it
IDLE_HOLD_S = 5.0  # a connection idle this long in the read process goes back to the web process
MESSAGE_MAX_BYTES = 64 * 1024  # one message: a kind byte and what was read of the request

_READ_HEADS = (b"GET /api/metrics/", b"HEAD /api/metrics/")
_SERVE, _TAKEN, _NOT_TAKEN, _PROBE, _ANSWER = b"H", b"A", b"N", b"P", b"O"
_ID = struct.Struct("!Q")


def is_read(head: bytes) -> bool:
    """Whether the request starting `head` is one the read process serves."""
    return head.startswith(_READ_HEADS)


class _Prefixed(io.RawIOBase):
    """A handed connection's input: the bytes the other process had read, then the socket."""

    def __init__(self, head: bytes, rest):
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._rest.readinto1(buffer)  # what one read gives: readinto waits to fill it

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._rest.close()
        super().close()


class _Gone:
    """Stands in for a connection handed away: eventlet's end-of-connection shutdown() would end
    it for the process that holds it now."""

    def shutdown(self, *args) -> None:
        pass

    def close(self) -> None:
        pass


class _Channel:
    """One connection of the channel, and the connections handed over it not answered yet."""

    __slots__ = ("sock", "waiting")

    def __init__(self, sock):
        self.sock = sock
        self.waiting: dict[int, object] = {}  # number -> eventlet Event


class Handoff:
    """One side of the channel: hands connections to the other process and serves the ones
    it receives with `server` (an eventlet.wsgi.Server) in a pool of `max_connections`.

    A connection is served by exactly one side: the receiver serves it only once its `A` went
    out, the sender gives it up only once that `A` came in. So a channel is never closed with
    answers unread: a side that cannot send any more stops writing (shutdown SHUT_WR) and reads
    what is left to the end; the other side then does the same."""

    def __init__(self, *, side: str, max_connections: int):
        self.side = side  # "web" or "read"
        self.max_connections = max_connections
        self._server = None
        self._pool = None
        self._channel: _Channel | None = None  # where connections go now
        self._answered = -float("inf")  # monotonic time of the last probe answer (web side)
        self._next_id = 0
        self.handed = 0  # connections handed to the other process (and taken)
        self.received = 0  # connections received from it (and taken)
        self.refused = 0  # web side: not taken (the read process was full); read side: not taken

    # --- set-up ----------------------------------------------------------------------------
    def bind(self, server) -> None:
        import eventlet

        self._server = server
        self._pool = eventlet.GreenPool(self.max_connections)

    def listen(self, path: str) -> None:
        """Read side: accept the web process's channel on `path` and serve it (the newest one
        takes the connections; an older one is read to its end)."""
        import eventlet

        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a dead predecessor's
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(path)
        listener.listen(4)

        def accept_loop():
            while True:
                conn, _ = listener.accept()
                if self._channel is not None:
                    self._retire(self._channel)
                self._channel = _Channel(conn)
                eventlet.spawn(self._receive, self._channel)

        eventlet.spawn(accept_loop)

    def connect(self, path: str) -> None:
        """Web side: keep a channel to the read process at `path` and probe it every PROBE_S."""
        import eventlet

        def probe_loop():
            while True:
                if self._channel is None:
                    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                    try:
                        conn.connect(path)
                    except OSError:
                        conn.close()
                    else:
                        self._channel = _Channel(conn)
                        eventlet.spawn(self._receive, self._channel)
                if self._channel is not None:
                    self._send(self._channel, _PROBE)  # unanswered while the read process is stuck
                eventlet.sleep(PROBE_S)

        eventlet.spawn(probe_loop)

    # --- state -----------------------------------------------------------------------------
    def usable(self) -> bool:
        """Web side: whether connections go to the read process now."""
        return self._channel is not None and time.monotonic() - self._answered < STALL_S

    def status(self) -> dict:
        return {
            "handoff": self.usable() if self.side == "web" else self._channel is not None,
            "handed": self.handed,
            "received": self.received,
            "refused": self.refused,
        }

    # --- routing (called by the HTTP protocol before it parses a request) -------------------
    def route(self, protocol, head: bytes) -> bool:
        """Hand `protocol`'s connection over when its next request belongs to the other process;
        True when it was taken (the protocol then ends without touching the connection). False:
        the request is served here, from what was read of it."""
        if self.side == "web":
            if getattr(protocol, "pulseboard_keep", False) or not is_read(head) or not self.usable():
                return False
        elif is_read(head):
            return False
        return self._hand(protocol, head)

    @property
    def idle_hold_s(self) -> float | None:
        """How long a connection may sit idle here before it goes back to the other process
        (read side only: the web process holds idle connections)."""
        return IDLE_HOLD_S if self.side == "read" else None

    def hand_back_idle(self, protocol) -> bool:
        """Read side: hand an idle connection back (nothing of a next request has been read)."""
        return self.side == "read" and self._hand(protocol, b"")

    def _hand(self, protocol, head: bytes) -> bool:
        from eventlet.event import Event

        channel = self._channel
        try:
            fd = protocol.connection.fileno()
        except OSError:
            return False
        if channel is None or fd < 0:
            return False
        self._next_id += 1
        number = self._next_id
        answer = channel.waiting[number] = Event()
        try:
            if not self._send(channel, _SERVE + _ID.pack(number) + head, fd):
                return False
            taken = answer.wait()
        finally:
            channel.waiting.pop(number, None)
        if taken is None:  # the other process is full: this connection stays here
            self.refused += 1
            protocol.pulseboard_keep = True
            return False
        if not taken:  # the channel ended before it was taken
            return False
        self.handed += 1
        protocol.conn_state[1] = _Gone()  # eventlet's clean-up shuts conn_state[1] down
        protocol.pulseboard_handed = True
        return True

    # --- the channel -----------------------------------------------------------------------
    def _send(self, channel: _Channel, message: bytes, fd: int | None = None) -> bool:
        """Without waiting: a channel whose buffer is full belongs to a process that does not
        read it, and the connection is better served here. A channel that fails is retired."""
        fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))] if fd is not None else []
        try:
            channel.sock.fd.sendmsg([message], fds, socket.MSG_DONTWAIT)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                self._retire(channel)
            return False
        return True

    def _retire(self, channel: _Channel) -> None:
        """No more connections or answers over `channel`; its reader reads it to the end (the
        other side sees the end of what we sent and does the same), then it is closed."""
        if self._channel is channel:
            self._channel = None
        with contextlib.suppress(OSError):
            channel.sock.shutdown(socket.SHUT_WR)

    def _receive(self, channel: _Channel) -> None:
        from eventlet.hubs import trampoline

        raw = channel.sock.fd
        space = socket.CMSG_SPACE(array.array("i").itemsize * 4)
        try:
            while True:
                try:
                    message, ancdata, _flags, _addr = raw.recvmsg(
                        MESSAGE_MAX_BYTES, space, socket.MSG_DONTWAIT
                    )
                except BlockingIOError:
                    trampoline(raw, read=True)
                    continue
                if not message:
                    return  # the other side stopped writing: everything it sent was read
                fds = _descriptors(ancdata)
                kind = message[:1]
                if kind == _PROBE:
                    self._send(channel, _ANSWER)
                elif kind == _ANSWER:
                    self._answered = time.monotonic()
                elif kind in (_TAKEN, _NOT_TAKEN) and len(message) >= 1 + _ID.size:
                    answer = channel.waiting.get(_ID.unpack_from(message, 1)[0])
                    if answer is not None and not answer.ready():
                        answer.send(True if kind == _TAKEN else None)
                elif kind == _SERVE and fds and len(message) >= 1 + _ID.size:
                    self._serve(channel, fds.pop(0), message[1 : 1 + _ID.size], message[1 + _ID.size :])
                for extra in fds:
                    _close_fd(extra)
        except OSError as exc:
            log.debug("handoff channel failed: %s", exc)
        finally:
            self._retire(channel)
            for answer in list(channel.waiting.values()):  # never taken: served where they are
                if not answer.ready():
                    answer.send(False)
            with contextlib.suppress(OSError):
                channel.sock.close()

    def _serve(self, channel: _Channel, fd: int, number: bytes, head: bytes) -> None:
        """A connection the other process hands over: taken (and served from `head` on) or not."""
        from eventlet.greenio import GreenSocket
        from eventlet.patcher import original
        from eventlet.wsgi import STATE_IDLE

        try:
            sock = GreenSocket(original("socket").socket(fileno=fd))
        except OSError:
            _close_fd(fd)
            self._answer(channel, _NOT_TAKEN, number)
            return
        try:
            addr = sock.getpeername()
        except OSError:
            addr = None
        if addr is None or self._pool is None or self._pool.free() == 0:
            self.refused += 1
            sock.close()  # (not shut down: the other process still serves it)
            self._answer(channel, _NOT_TAKEN, number)
            return
        if not self._answer(channel, _TAKEN, number):
            sock.close()  # unheard: the other process serves it, once it reads the channel's end
            return
        self.received += 1
        sock.settimeout(self._server.socket_timeout)
        conn_state = [addr, sock, STATE_IDLE, head]
        self._pool.spawn(self._server.process_request, conn_state).link(_clean_up, conn_state)

    def _answer(self, channel: _Channel, kind: bytes, number: bytes) -> bool:
        """An answer the other side waits for: if it cannot go now, the channel is retired, and
        the other side reads its end instead (meaning: not taken)."""
        if self._send(channel, kind + number):
            return True
        self._retire(channel)
        return False


def _clean_up(_thread, conn_state) -> None:
    from eventlet.greenio import shutdown_safe

    shutdown_safe(conn_state[1])
    conn_state[1].close()


def _descriptors(ancdata) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def prefixed_input(protocol) -> None:
    """In a protocol's setup: a received connection's input starts with the bytes the other
    process had read of it."""
    state = protocol.conn_state
    if len(state) > 3:
        protocol.rfile = io.BufferedReader(_Prefixed(state[3], protocol.rfile))


def finish_handed(protocol) -> bool:
    """In a protocol's finish: a connection handed away is closed here, not shut down (that
    would end it for the other process). True when it was."""
    if not getattr(protocol, "pulseboard_handed", False):
        return False
    for f in (protocol.wfile, protocol.rfile):
        with contextlib.suppress(OSError, ValueError):
            f.close()
    with contextlib.suppress(OSError):
        protocol.connection.close()
    return True
