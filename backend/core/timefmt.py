"""Timestamps in the one text format Pulseboard emits: ISO-8601 UTC, milliseconds, ``Z``.

Formatting runs once per event on the ingest hot path, and ``time.strftime`` costs about a
microsecond, so the ``YYYY-MM-DDTHH:MM:SS.`` prefix is cached per whole second: a batch's events
almost all share a handful of seconds, which turns the common case into one cache hit.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import lru_cache

# Bounded so a producer sending timestamps spread over the whole retention window cannot make
# the cache grow without limit. lru_cache's C wrapper is cheaper than the dict it replaced,
# cleared when full, behind a Python function (scripts/cache_bench.py: 55 vs 69 ns a hit).
_PREFIX_CACHE_MAX = 4096

# "000Z".."999Z": indexing a table is several times cheaper than a :03d format spec.
_MS_SUFFIX = tuple(f"{ms:03d}Z" for ms in range(1000))

ISO_MAX_LEN = 64  # longer than any ISO-8601 timestamp fromisoformat accepts with an offset


@lru_cache(maxsize=_PREFIX_CACHE_MAX)
def _prefix(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))


def iso_ms(ts: float) -> str:
    """``1773835531.123456`` -> ``"2026-03-18T12:05:31.123Z"`` (milliseconds truncated, not rounded).

    Truncation matches how the input is read: ``...31.123456`` stays in second 31, millisecond
    123, which is also the second its aggregate bucket uses.
    """
    # Round to whole microseconds first: a float like 1773835531.123 is really ...31.12299990654,
    # and truncating that directly would print .122.
    us = round(ts * 1_000_000)
    sec, frac_us = divmod(us, 1_000_000)
    return _prefix(sec) + _MS_SUFFIX[frac_us // 1000]


def parse_iso(text: str) -> float:
    """ISO-8601 text -> unix seconds. No zone means UTC. Raises ValueError when unparseable."""
    if len(text) > ISO_MAX_LEN:
        raise ValueError("too long to be an ISO-8601 timestamp")
    # Naive subtraction is ~3x cheaper than an aware datetime's timestamp(), and our own output
    # ends in "Z", so both common spellings take the naive path. total_seconds() divides exact
    # integer microseconds, so no precision is lost on the way.
    if text[-1:] == "Z":
        dt = datetime.fromisoformat(text[:-1])
        if dt.tzinfo is not None:  # "...+01:00Z" is not a timestamp
            raise ValueError("both an offset and Z")
        return (dt - _EPOCH_NAIVE).total_seconds()
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        return (dt - _EPOCH_NAIVE).total_seconds()
    return (dt - _EPOCH_UTC).total_seconds()


_EPOCH_NAIVE = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


__all__ = ["iso_ms", "parse_iso"]
