"""The alert webhook against a tiny real HTTP server on 127.0.0.1 started by the test."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backend.cli.embedded_redis import free_port
from backend.tasks.webhook import WebhookSender


class Hook:
    """Answers each POST with the next scripted status (then 200), optionally after a delay."""

    def __init__(self, statuses=(), delay_s: float = 0.0):
        self.statuses = list(statuses)
        self.delay_s = delay_s
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.lock:
                    hook.bodies.append(body)
                    status = hook.statuses.pop(0) if hook.statuses else 200
                if hook.delay_s:
                    time.sleep(hook.delay_s)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except ConnectionError:
                    pass  # the sender gave up waiting (the timeout tests): not worth a traceback

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Hook:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def sender(url: str, **kw) -> tuple[WebhookSender, list[float]]:
    slept: list[float] = []
    kw.setdefault("backoff_s", 0.5)
    kw.setdefault("backoff_max_s", 0.8)
    return WebhookSender(url, sleep=slept.append, **kw), slept


ALERT = {"id": "a1", "state": "open", "message": "http_request p95(ms) is high"}


def test_delivers_the_notification_as_json():
    with Hook() as hook:
        s, slept = sender(hook.url)
        assert s.deliver({"event": "open", "alert": ALERT})
    assert hook.bodies == [{"event": "open", "alert": ALERT}]
    assert (s.sent, s.failed, slept) == (1, 0, [])


def test_retries_server_errors_with_capped_backoff():
    with Hook(statuses=[500, 503, 429]) as hook:
        s, slept = sender(hook.url, attempts=4)
        assert s.deliver({"event": "close", "alert": ALERT})
    assert len(hook.bodies) == 4
    assert slept == [0.5, 0.8, 0.8]  # doubling, capped at backoff_max_s


def test_gives_up_after_the_last_attempt():
    with Hook(statuses=[502] * 10) as hook:
        s, slept = sender(hook.url, attempts=3)
        assert not s.deliver({"event": "open", "alert": ALERT})
    assert len(hook.bodies) == 3
    assert (s.sent, s.failed, len(slept)) == (0, 1, 2)


def test_client_errors_are_not_retried():
    with Hook(statuses=[400]) as hook:
        s, slept = sender(hook.url, attempts=4)
        assert not s.deliver({"event": "open", "alert": ALERT})
    assert len(hook.bodies) == 1 and slept == []


def test_a_slow_hook_times_out_and_is_retried():
    with Hook(delay_s=1.0) as hook:
        s, slept = sender(hook.url, attempts=2, timeout_s=0.2)
        started = time.monotonic()
        assert not s.deliver({"event": "open", "alert": ALERT})
        took = time.monotonic() - started
    assert len(hook.bodies) == 2
    assert took < 0.9  # two 0.2 s timeouts, never the hook's full second
    assert slept == [0.5]


def test_nobody_listening_is_retried_too():
    s, slept = sender(f"http://127.0.0.1:{free_port()}/hook", attempts=3, timeout_s=0.5)
    assert not s.deliver({"event": "open", "alert": ALERT})
    assert len(slept) == 2 and s.failed == 1


def test_notify_never_blocks_and_drops_the_oldest_when_full():
    s = WebhookSender("http://127.0.0.1:9/never", queue_max=3)
    started = time.monotonic()
    for i in range(10):
        s.notify("open", {"id": str(i)})
    assert time.monotonic() - started < 0.05
    assert [n["alert"]["id"] for n in s.queue] == ["7", "8", "9"]
    assert s.dropped == 7


def test_background_sender_delivers_in_order():
    with Hook(statuses=[500]) as hook:
        s = WebhookSender(hook.url, backoff_s=0.01)
        thread = threading.Thread(target=s.run, daemon=True)
        thread.start()
        try:
            for i in range(5):
                s.notify("open" if i % 2 == 0 else "close", {"id": str(i)})
            deadline = time.monotonic() + 10
            while s.sent < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            s.stop()
            thread.join(timeout=5)
    assert not thread.is_alive()
    # the first POST failed (500) and was retried: one extra body, order kept
    assert [b["alert"]["id"] for b in hook.bodies] == ["0", "0", "1", "2", "3", "4"]
    assert [b["event"] for b in hook.bodies[1:]] == ["open", "close", "open", "close", "open"]


@pytest.mark.parametrize("attempts", [0, -3])
def test_at_least_one_attempt(attempts):
    assert WebhookSender("http://127.0.0.1:9/", attempts=attempts).attempts == 1
