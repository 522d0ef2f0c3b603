"""Logging: human-readable text by default, one JSON object per line with LOG_FORMAT=json."""

from __future__ import annotations

import logging
import sys
import time

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(body).decode()


def _only_library_frames(exc: BaseException) -> bool:
    """True when no frame of the traceback is our code (but our JSON decoder, which Socket.IO
    calls to decode packets): the error is Socket.IO's reaction to what the client sent."""
    tb = exc.__traceback__
    saw_socketio = False
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if "/socketio/" in path or "/engineio/" in path:
            saw_socketio = True
        elif "/backend/" in path and not path.endswith("/backend/core/jsonutil.py"):
            return False
        tb = tb.tb_next
    return saw_socketio


class MalformedPacketFilter(logging.Filter):
    """Engine.IO logs a client's malformed Socket.IO packet as an ERROR with a traceback ("message
    handler error"): a hostile or buggy client could fill the log with them. An error raised
    inside Socket.IO itself (decoding the packet, or reading an event whose data is not a list) is
    the client's fault: one WARNING line, no traceback. An error with a frame of our own handlers
    in it stays an ERROR with its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and record.levelno >= logging.ERROR and _only_library_frames(exc):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "malformed Socket.IO packet dropped (%s: %s)"
            record.args = (type(exc).__name__, str(exc)[:200])
            record.exc_info = record.exc_text = None
        return True


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("engineio.server", "socketio.server", "werkzeug", "geventwebsocket.handler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("engineio.server", "socketio.server"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, MalformedPacketFilter) for f in logger.filters):
            logger.addFilter(MalformedPacketFilter())
