"""Delivery of stored batches to this process's Socket.IO clients, encoded once per batch.

The worker hands over each batch as its events' JSON text (encoded once, in the store). Here a
batch becomes one `metrics` packet for batch clients and one `metric` packet per event for
per-event clients (the original design's contract): both from the same batch, so neither kind
of client can miss what the other got.

Per-client cost is what limits fan-out on one core. Under eventlet, a websocket client's frames
are packed once per batch (a server's frames are unmasked, so every client gets the same
bytes) and written to its socket at once when nothing is queued or being written for it;
otherwise (its kernel buffer is full) they are queued as one item, which its writer sends with
one `sendall`: a batch of N events costs a per-event client one system call instead of N. Clients on
other transports (long-polling, the threading and gevent servers' websockets) get ordinary
Engine.IO packets.

Slow clients are judged Redis-style (`client-output-buffer-limit`): bytes queued for a client
over a hard limit, or over a soft limit for longer than a grace time, drop it. Time counts only
while the client makes no progress (its queue has not moved and its socket takes nothing), i.e.
while the client, not this server, is behind: a server that fell behind its own queues (a CPU
hiccup) drops nobody. A client stalled at a low rate, whose kernel buffers are still filling, is
found by the Engine.IO heartbeat instead (PING_INTERVAL_S + PING_TIMEOUT_S).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import time

from engineio import packet as eio_packet

from backend import telemetry

log = logging.getLogger(__name__)

LEGACY_ROOM = "legacy"
BATCH_ROOM = "batch"
NAMESPACE = "/"


class FrameBlob(bytes):
    """Ready-to-send websocket frames: the patched websocket writes them as they are."""

    __slots__ = ()


class FramesPacket:
    """A queue item carrying several pre-packed Engine.IO messages for one websocket client.

    It stands in for an engineio Packet in the client's send queue (its writer calls encode()
    and hands the result to the websocket), so it carries the attributes engineio reads."""

    __slots__ = ("blob",)
    packet_type = eio_packet.MESSAGE
    binary = False
    data = "<frames>"

    def __init__(self, blob: FrameBlob):
        self.blob = blob

    def encode(self, b64=False):
        return self.blob


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked websocket text frame (RFC 6455 5.2) holding `payload`."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


def batch_text(encoded: list[bytes]) -> bytes:
    """The Socket.IO EVENT packet text of `metrics` (a list of events)."""
    return b'2["metrics",[' + b",".join(encoded) + b"]]"


def event_texts(encoded: list[bytes]) -> list[bytes]:
    """The Socket.IO EVENT packet texts of one `metric` per event."""
    return [b'2["metric",' + e + b"]" for e in encoded]


class Fanout:
    """This process's delivery of batches, and its view of which clients read what it sends."""

    def __init__(self, socketio, *, soft_bytes: int, soft_s: float, hard_bytes: int):
        self.socketio = socketio
        self.soft_bytes = soft_bytes
        self.soft_s = soft_s
        self.hard_bytes = hard_bytes
        self.framed: dict[str, object] = {}  # eio sid -> eventlet websocket taking FrameBlobs
        self._over_since: dict[str, float] = {}
        self._heads: dict[str, object] = {}  # eio sid -> its queue's first item at the last look
        self.dropped_slow_clients = 0
        # Frame items handed to a client's queue and not written yet, per client and in all:
        # reads yield to deliveries while some wait (backend/web/offload.py).
        self._unwritten: dict[str, int] = {}
        self._waiting = 0

    def deliveries_pending(self) -> bool:
        return self._waiting > 0

    # --- the websocket hook ----------------------------------------------------------------
    def install(self) -> None:
        """Under eventlet, wrap Engine.IO's websocket class so that our frames go out as they are."""
        eio = self.socketio.server.eio
        if eio.async_mode != "eventlet":
            return
        base = eio._async["websocket"]
        fanout = self

        class FramingWebSocketWSGI(base):
            def __init__(self, handler, server):
                super().__init__(fanout._wrap_handler(handler), server)

        eio._async = {**eio._async, "websocket": FramingWebSocketWSGI}

    def _wrap_handler(self, handler):
        sid = getattr(getattr(handler, "__self__", None), "sid", None)

        def framing_handler(ws):
            if sid is None or ws._get_permessage_deflate_enc() is not None:
                return handler(ws)  # compressed frames are per connection: no shared bytes
            plain_send = ws.send

            def send(message, **kwargs):
                if type(message) is FrameBlob:
                    try:
                        ws._send(message)
                    finally:
                        self._unwritten[sid] -= 1
                        self._waiting -= 1
                else:
                    plain_send(message, **kwargs)

            ws.send = send
            self.framed[sid] = ws
            try:
                return handler(ws)
            finally:
                self.framed.pop(sid, None)
                self._over_since.pop(sid, None)
                self._waiting -= self._unwritten.pop(sid, 0)  # never written: no longer waiting

        return framing_handler

    # --- delivery --------------------------------------------------------------------------
    def deliver(self, encoded: list[bytes]) -> None:
        """Send one stored batch (events' JSON, oldest first) to this process's clients."""
        if not encoded:
            return
        server = self.socketio.server
        rooms = server.manager.rooms.get(NAMESPACE, {})
        if rooms.get(BATCH_ROOM):
            self._send_room(server, BATCH_ROOM, [batch_text(encoded)])
        if rooms.get(LEGACY_ROOM):
            self._send_room(server, LEGACY_ROOM, event_texts(encoded))

    def _send_room(self, server, room: str, texts: list[bytes]) -> None:
        eio = server.eio
        frames = None
        packets = None
        for _sid, eio_sid in server.manager.get_participants(NAMESPACE, room):
            sock = eio.sockets.get(eio_sid)
            if sock is None or sock.closed:
                continue
            ws = self.framed.get(eio_sid)
            if ws is not None and sock.upgraded:
                if frames is None:
                    frames = FramesPacket(FrameBlob(b"".join(text_frame(b"4" + t) for t in texts)))
                item = frames
                if not sock.queue.qsize() and not ws._sendlock.locked() and not self._unwritten.get(eio_sid):
                    # Nothing queued or being written for it: write now, without waking its writer.
                    sent = _write_now(ws, frames.blob)
                    if sent == len(frames.blob):
                        continue
                    item = FramesPacket(FrameBlob(frames.blob[sent:]))  # the rest, in order
                    telemetry.FANOUT_DEFERRED_WRITES.inc()
                self._unwritten[eio_sid] = self._unwritten.get(eio_sid, 0) + 1  # before its writer
                self._waiting += 1  # can take it (a disconnect pops what is left)
                sock.send(item)
            else:
                if packets is None:
                    packets = [eio_packet.Packet(eio_packet.MESSAGE, t.decode()) for t in texts]
                for pkt in packets:
                    sock.send(pkt)

    # --- slow clients ----------------------------------------------------------------------
    def drop_slow_clients(self, now: float | None = None) -> int:
        """Disconnect clients that stopped reading; returns how many were dropped.

        Called about once a second. A client is stalled while more than the soft limit waits for
        it, its send queue has not moved since the last look (its writer could not hand the
        kernel anything) and its socket takes nothing now; stalled for SLOW_CLIENT_SOFT_S, it is
        dropped. A client that reads, however slowly, moves its queue; one that the node itself
        is behind on has a writable socket. Past the hard limit, anyone is dropped."""
        telemetry.FANOUT_FRAMES_WAITING.set(self._waiting)
        now = time.monotonic() if now is None else now
        dropped = 0
        seen = set()
        for eio_sid, sock in list(self.socketio.server.eio.sockets.items()):
            if sock.closed:
                continue
            seen.add(eio_sid)
            pending = pending_bytes(sock)
            head = _head(sock)
            moved = self._heads.get(eio_sid, _NOTHING) is not head
            self._heads[eio_sid] = head
            if pending <= self.soft_bytes:
                self._over_since.pop(eio_sid, None)
                continue
            if pending <= self.hard_bytes:
                ws = self.framed.get(eio_sid)
                if moved or (ws is not None and _writable(ws)):
                    self._over_since.pop(eio_sid, None)
                    continue
                since = self._over_since.setdefault(eio_sid, now)
                if now - since < self.soft_s:
                    continue
            self._over_since.pop(eio_sid, None)
            dropped += 1
            self.dropped_slow_clients += 1
            log.warning("dropping slow client %s: %d bytes waiting to be sent", eio_sid, pending)
            try:
                sock.close(wait=False, abort=True)
            except Exception:
                log.debug("error closing slow client %s", eio_sid, exc_info=True)
            _shut_down(self.framed.get(eio_sid))
        for gone in [sid for sid in self._heads if sid not in seen]:
            del self._heads[gone]
        return dropped


_NOTHING = object()


def _shut_down(ws) -> None:
    """End a dropped client's TCP connection now: its writer is blocked in a send the client will
    never take (until HTTP_IDLE_TIMEOUT_S), holding its queued frames and its connection."""
    if ws is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ws.socket.fd.shutdown(socket.SHUT_RDWR)


def _write_now(ws, blob: bytes) -> int:
    """Hand `blob` to the kernel without waiting: the bytes it took (0 when its buffer is full
    or the socket failed; the writer then sends the rest, or meets the error and closes).

    Most deliveries go this way: a client that keeps up has nothing queued, and waking its
    writer (a queue put, a switch, a timer) cost about as much as the write itself."""
    try:
        return ws.socket.fd.send(blob)
    except (OSError, AttributeError):  # BlockingIOError (buffer full) is an OSError too
        return 0


def _head(sock):
    """The first item of a client's send queue (None when empty): if it is the same object a
    second later, the client's writer has sent nothing in between."""
    items = getattr(sock.queue, "queue", None)
    try:
        return items[0] if items else None
    except IndexError:
        return None


def pending_bytes(sock) -> int:
    """Bytes waiting in an Engine.IO socket's send queue (a snapshot; the writer drains it)."""
    items = getattr(sock.queue, "queue", None)
    if items is None:
        return 0
    total = 0
    for item in list(items):
        if item is None:
            continue
        if type(item) is FramesPacket:
            total += len(item.blob)
        else:
            data = getattr(item, "data", None)
            total += len(data) if isinstance(data, (str, bytes)) else 16
    return total


def _writable(ws) -> bool:
    """Whether the kernel would take more bytes for this client now (its send buffer has room)."""
    sock = getattr(ws, "socket", None)
    if sock is None:
        return False
    try:
        fd = sock.fileno()
        if fd < 0:
            return False
        # poll, not select: a node with thousands of clients has descriptors past FD_SETSIZE.
        # The original (unpatched) module: a zero-timeout poll needs no green hub.
        poller = _poll_module().poll()
        poller.register(fd, select.POLLOUT)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False


def _poll_module():
    try:
        from eventlet.patcher import original

        return original("select")
    except ImportError:  # pragma: no cover - eventlet is a dependency
        return select
