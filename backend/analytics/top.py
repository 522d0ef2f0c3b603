"""Top-N: tag values ranked by events, errors or p95 of a field over a window.

Input is TagStats.values (``value -> [events, errors, {bin key: n}]``) merged from the per-tag
buckets. Counts are exact; p95 comes from the per-tag sketch (about TAG_ALPHA, 5%, relative
error). Values past the per-bucket limit were counted under ``__other__``: reported apart, never
ranked, so a flood of one-off values cannot push real ones off the list.
"""

from __future__ import annotations

from backend.core.layout import OTHER
from backend.core.sketch import Sketch

ORDERS = ("count", "errors", "p95")


def _row(value: str, count: int, errors: int, bins: dict, window_s: int, with_p95: bool) -> dict:
    row = {
        "value": value,
        "count": count,
        "errors": errors,
        "error_rate": float(f"{errors / count:.6g}") if count else 0.0,
        "rate_per_sec": float(f"{count / window_s:.6g}") if window_s > 0 else 0.0,
    }
    if with_p95:
        row["p95"] = Sketch({k: n for k, n in bins.items() if n > 0}).quantile(0.95) if bins else None
    return row


def rank(values: dict[str, list], *, order: str, n: int, window_s: int, with_p95: bool) -> dict:
    """``{"top": [rows], "other": row | None, "distinct": k}``: rows best first (ties by value;
    order=errors lists only values with errors, order=p95 only values with samples), `distinct`
    the number of tag values seen apart from ``__other__``."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}")
    rows = []
    other = None
    for value, (count, errors, bins) in values.items():
        if count <= 0 and not bins:
            continue
        row = _row(value, count, errors, bins, window_s, with_p95 or order == "p95")
        if value == OTHER:
            other = row
        else:
            rows.append(row)
    distinct = len(rows)
    if order == "count":
        rows.sort(key=lambda r: (-r["count"], r["value"]))
    elif order == "errors":
        rows = [r for r in rows if r["errors"] > 0]
        rows.sort(key=lambda r: (-r["errors"], -r["error_rate"], r["value"]))
    else:
        rows = [r for r in rows if r["p95"] is not None]
        rows.sort(key=lambda r: (-r["p95"], r["value"]))
    return {"top": rows[:n], "other": other, "distinct": distinct}
