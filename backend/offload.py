"""CPU-heavy work of a request, off the cooperative loop.

Under eventlet or gevent every request, emit and fan-out delivery of a web node shares one loop:
a query that merges a wide window in Python for 200 ms would hold every client's events for
200 ms. Run such work in a native thread of the loop's pool instead: the loop keeps running
while it computes (the interpreter switches threads every few milliseconds), and the request
waits for the result like for any I/O. Under threading it is a plain call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from backend import asyncmode

T = TypeVar("T")


def cpu(fn: Callable[..., T], *args, **kwargs) -> T:
    mode = asyncmode.ACTIVE
    if mode == "eventlet":
        from eventlet import tpool

        return tpool.execute(fn, *args, **kwargs)
    if mode == "gevent":
        import gevent

        return gevent.get_hub().threadpool.apply(fn, args, kwargs)
    return fn(*args, **kwargs)


def pause() -> None:
    """Let the loop run other tasks (deliveries) between the parts of a long read."""
    mode = asyncmode.ACTIVE
    if mode == "eventlet":
        import eventlet

        eventlet.sleep(0)
    elif mode == "gevent":
        import gevent

        gevent.sleep(0)
