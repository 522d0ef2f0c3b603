"""The listening socket (backend/web/httpserver.py), on real sockets."""

from __future__ import annotations

import socket

import pytest

from backend.config import SettingError
from backend.web import httpserver


def test_accepted_connections_have_nodelay_and_a_busy_port_is_an_error():
    # The gevent server's socket (the standard library's here; eventlet's is the same call).
    listener = httpserver.listen("127.0.0.1", 0, 16, green="gevent")
    try:
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            with accepted:
                # Without it Nagle holds a small frame while the previous one is unacknowledged.
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
                client.sendall(b"x")
                assert accepted.recv(1) == b"x"
        with pytest.raises(SettingError, match="already in use"):
            httpserver.listen("127.0.0.1", port, 16, green="gevent")
    finally:
        listener.close()
