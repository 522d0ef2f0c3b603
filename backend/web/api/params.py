"""Query-string parsing that answers a clear 400 instead of guessing."""

from __future__ import annotations

import hmac
from functools import wraps

from flask import current_app, request

from backend.core.events import METRIC_RE
from backend.web.errors import ApiError


def int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer in {lo}..{hi}, got {raw!r}", param=name) from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be an integer in {lo}..{hi}, got {value}", param=name)
    return value


def optional_int_arg(name: str, lo: int, hi: int) -> int | None:
    if request.args.get(name) in (None, ""):
        return None
    return int_arg(name, 0, lo, hi)


def name_arg(name: str) -> str | None:
    """A metric or field name filter; must look like one."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if not METRIC_RE.fullmatch(raw):
        raise ApiError(400, f"{name} must match [A-Za-z0-9_.:-]{{1,100}}, got {raw[:120]!r}", param=name)
    return raw


def require_api_key(view):
    """When INGEST_API_KEY is set, writes need it in the X-API-Key header."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        expected = current_app.config["INGEST_API_KEY"]
        if expected:
            given = request.headers.get("X-API-Key", "")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise ApiError(401, "missing or wrong X-API-Key header")
        return view(*args, **kwargs)

    return wrapper
