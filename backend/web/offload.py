"""Long work of a request, cut into parts that let the cooperative loop run in between.

Under eventlet or gevent every request, emit and fan-out delivery of a web node shares one loop:
a query that reads and merges a wide window for seconds would hold every client's events that
long. Reads pause() between their parts, so deliveries go out in between. (Native threads were
tried: with several wide queries at once, threads holding the GIL made every socket write of the
loop wait for it, and deliveries crawled.) Under threading, pause() does nothing.
"""

from __future__ import annotations

from backend import asyncmode


def pause() -> None:
    """Let the loop run other tasks (deliveries) between the parts of a long read."""
    mode = asyncmode.ACTIVE
    if mode == "eventlet":
        import eventlet

        eventlet.sleep(0)
    elif mode == "gevent":
        import gevent

        gevent.sleep(0)
