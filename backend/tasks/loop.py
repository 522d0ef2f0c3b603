"""One lifecycle for every background loop, and one backoff.

The worker, the fan-out listener, the tick, the status monitor, the alert evaluator and the
webhook sender are all loops started with `socketio.start_background_task` (a green thread under
eventlet/gevent, a native thread in the worker process) and stopped by a flag. They share:
- `running` while inside `run()`, `stop()` to end at the next turn;
- one log line when Redis goes away and one when it is back, however many turns fail between;
- capped exponential backoff between attempts (redis-py's ExponentialBackoff, the same formula
  the Redis client itself retries with).
Concurrency stays behind the `sleep` each task is given (socketio.sleep), so ASYNC_MODE keeps
choosing how they run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from redis.backoff import ExponentialBackoff

log = logging.getLogger(__name__)

_MAX_EXPONENT = 60  # 2**60 times any base is past every cap; keeps the float finite


def start_thread(target, name: str = "task"):
    """A daemon thread running `target`: the default start_task outside Flask-SocketIO."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


class Backoff:
    """Delays base, 2·base, 4·base ... up to cap; reset() after a success starts over."""

    def __init__(self, base_s: float, cap_s: float):
        self.base_s = base_s
        self._formula = ExponentialBackoff(cap=cap_s, base=base_s)
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        self.failures += 1
        return self._formula.compute(min(self.failures - 1, _MAX_EXPONENT))

    def reset(self) -> None:
        self.failures = 0


class Task:
    """A background loop: `run()` until `stop()`. Subclasses write `loop()`."""

    name = "task"

    def __init__(self, sleep: Callable[[float], None] = time.sleep):
        self.sleep = sleep  # socketio.sleep: cooperative under eventlet/gevent
        self.running = False
        self._stopping = False
        self._redis_down = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        self._stopping = True

    def run(self) -> None:
        self.running = True
        try:
            self.loop()
        finally:
            self.running = False
            self.finished()

    def loop(self) -> None:  # pragma: no cover - every task has its own
        raise NotImplementedError

    def finished(self) -> None:
        """Called once `run()` ends, however it ends."""

    # --- one log line per outage -------------------------------------------------------------
    def redis_failed(self, exc: BaseException) -> None:
        if not self._redis_down:
            log.warning("%s: Redis unavailable (%s)", self.name, exc)
        self._redis_down = True

    def redis_ok(self) -> None:
        if self._redis_down:
            log.info("%s: Redis is back", self.name)
        self._redis_down = False

    @property
    def redis_down(self) -> bool:
        return self._redis_down


class PeriodicTask(Task):
    """`step()` every `interval_s`, on a fixed schedule that skips what it fell behind on (a slow
    step, e.g. a Redis timeout, is not followed by a burst of catch-up steps). An exception in one
    step is logged and the next step runs as planned: no single failure ends the loop."""

    interval_s = 1.0

    def step(self) -> None:  # pragma: no cover - every task has its own
        raise NotImplementedError

    def next_delay(self, next_at: float) -> float:
        return max(0.0, next_at - time.monotonic())

    def loop(self) -> None:
        next_at = time.monotonic()
        while not self._stopping:
            next_at += self.interval_s
            self.guarded_step()
            self.sleep(self.next_delay(next_at))
            if time.monotonic() - next_at > self.interval_s:
                next_at = time.monotonic()

    def guarded_step(self) -> None:
        try:
            self.step()
            self.redis_ok()
        except redis.RedisError as exc:
            self.redis_failed(exc)
        except Exception:
            log.exception("%s: step failed", self.name)
