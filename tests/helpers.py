"""Small test utilities: waiting on conditions with a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
    max_interval: float = 0.1,
) -> T:
    """Poll `condition` until it returns something truthy; fail with `message` at the deadline.

    The pause grows from `interval` to `max_interval`: a quick condition is seen at once, and a
    long wait does not poll a server 50 times a second (the suite's many waits on HTTP answers
    cost the servers' CPU that the tests running beside them need)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
        interval = min(max_interval, interval * 1.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last value: {last!r})")


def wait_settled(
    value: Callable[[], T],
    done: Callable[[T], bool] = lambda _: False,
    quiet_s: float = 1.0,
    timeout: float = 15.0,
    message: str = "a settled value",
) -> T:
    """Poll `value` until `done(value)` or it stayed unchanged for `quiet_s`: for a count that
    stops growing once nothing more is coming (e.g. Pub/Sub after its producer stopped)."""
    last, since = value(), time.monotonic()

    def check():
        nonlocal last, since
        current = value()
        if current != last:
            last, since = current, time.monotonic()
        return done(current) or time.monotonic() - since >= quiet_s

    wait_for(check, timeout=timeout, message=message)
    return value()


def paced_producer(send: Callable[[int, int], None], total: int, chunk: int, every_s: float):
    """A started daemon thread calling send(start, stop) for index chunks [0, total), one chunk
    every `every_s` seconds on a fixed schedule (a late chunk does not delay the next ones).
    `thread.produced` counts the indexes sent."""
    import threading

    def run() -> None:
        next_at = time.monotonic()
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            send(start, stop)
            thread.produced += stop - start
            next_at += every_s
            time.sleep(max(0.0, next_at - time.monotonic()))

    thread = threading.Thread(target=run, daemon=True)
    thread.produced = 0
    thread.start()
    return thread
