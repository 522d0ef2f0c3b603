"""Long work of a request, cut into parts that let the cooperative loop run in between.

Under eventlet or gevent every request, emit and fan-out delivery of a web node shares one loop:
a query that reads and merges a wide window for seconds would hold every client's events that
long. Reads pause() between their parts, so deliveries go out in between. (Native threads were
tried: with several wide queries at once, threads holding the GIL made every socket write of the
loop wait for it, and deliveries crawled.) Under threading, pause() does nothing.

Turns alone are not enough: the loop gives every ready task one turn, so eight readers taking
5 ms parts left the clients' writers one turn in nine, and a backlog of deliveries took seconds
to drain. So while deliveries wait (`yield_to`), a pause lets them go first, up to
MAX_YIELD_S per pause, so that reads still move when deliveries never stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from backend import asyncmode

MAX_YIELD_S = 0.05  # longest a read waits at one pause for deliveries to drain
_YIELD_STEP_S = 0.001

_pending: Callable[[], bool] = lambda: False  # noqa: E731


def yield_to(pending: Callable[[], bool]) -> None:
    """Reads pausing in this process let deliveries go first while `pending()` is true."""
    global _pending
    _pending = pending


def pause() -> None:
    """Let the loop run other tasks (deliveries) between the parts of a long read."""
    mode = asyncmode.ACTIVE
    if mode == "eventlet":
        import eventlet

        sleep = eventlet.sleep
    elif mode == "gevent":
        import gevent

        sleep = gevent.sleep
    else:
        return
    sleep(0)
    if _pending():
        deadline = time.monotonic() + MAX_YIELD_S
        while _pending() and time.monotonic() < deadline:
            sleep(_YIELD_STEP_S)
