"""Choosing the async mode. This must run before Flask, redis-py or socketio are imported."""

from __future__ import annotations

import warnings

MODES = ("eventlet", "gevent", "threading")
ACTIVE = "threading"  # what patch() set up in this process (tests and tools patch nothing)


def patch(mode: str) -> None:
    """Monkey-patch the standard library for `mode`; the only place eventlet/gevent are imported."""
    global ACTIVE
    if mode not in MODES:
        raise SystemExit(f"ASYNC_MODE must be one of {', '.join(MODES)}, got {mode!r}")
    ACTIVE = mode
    if mode == "eventlet":
        with warnings.catch_warnings():
            # eventlet announces its own deprecation on import (a plain Warning subclass), which
            # would fail any run under -W error. We keep it as the default until the benchmark
            # says otherwise, and gevent/threading remain a configuration switch away.
            warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
            import eventlet

        eventlet.monkey_patch()
    elif mode == "gevent":
        from gevent import monkey

        monkey.patch_all()
