"""Alert webhooks: a bounded queue and one background sender, so the evaluator never waits.

notify() only appends to the queue (dropping the oldest notification when it is full, counted
and logged). The sender POSTs each notification as JSON ``{"event": "open"|"close", "alert":
{...}}`` with a timeout per attempt, retrying connection errors, timeouts, 429 and 5xx with
capped exponential backoff, a few attempts at most; other 4xx answers are not retried.
Notifications are sent one at a time, in order. urllib, not requests: it is the standard
library, and eventlet/gevent make it cooperative.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable

import orjson

from backend import telemetry
from backend.tasks.loop import Backoff, Task

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.1


class WebhookSender(Task):
    name = "alert webhook"

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 3.0,
        attempts: int = 4,
        backoff_s: float = 0.5,
        backoff_max_s: float = 5.0,
        queue_max: int = 100,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.url = url
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        super().__init__(sleep)
        self.queue: deque[dict] = deque()
        self.queue_max = queue_max
        self.sent = 0
        self.failed = 0  # notifications given up on after every attempt
        self.dropped = 0  # pushed out of a full queue

    def notify(self, event: str, alert: dict) -> None:
        """Queue a notification; never blocks."""
        if len(self.queue) >= self.queue_max:
            self.queue.popleft()
            self.dropped += 1
            telemetry.ALERT_WEBHOOK.labels("dropped").inc()
            log.warning("alert webhook queue full (%d): dropped the oldest notification", self.queue_max)
        self.queue.append({"event": event, "alert": alert})

    def loop(self) -> None:
        while not self.stopping:
            if not self.queue:
                self.sleep(IDLE_POLL_S)
                continue
            self.deliver(self.queue.popleft())

    def deliver(self, body: dict) -> bool:
        """POST one notification, retrying as documented. True when it was accepted (2xx)."""
        data = orjson.dumps(body)
        backoff = Backoff(self.backoff_s, self.backoff_max_s)
        for attempt in range(1, self.attempts + 1):
            retry, what = self._post(data)
            if retry is None:
                self.sent += 1
                telemetry.ALERT_WEBHOOK.labels("sent").inc()
                return True
            if not retry or attempt == self.attempts:
                self.failed += 1
                telemetry.ALERT_WEBHOOK.labels("failed").inc()
                log.warning("alert webhook gave up after %d attempt(s): %s", attempt, what)
                return False
            delay = backoff.next()
            log.info("alert webhook attempt %d failed (%s); retrying in %.2fs", attempt, what, delay)
            self.sleep(delay)
        return False  # pragma: no cover - the loop always returns

    def _post(self, data: bytes) -> tuple[bool | None, str]:
        """(None, "") on success, else (whether to retry, what went wrong)."""
        request = urllib.request.Request(
            self.url, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
                return None, ""
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code == 429 or exc.code >= 500, f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return True, f"{type(reason).__name__}: {reason}"
