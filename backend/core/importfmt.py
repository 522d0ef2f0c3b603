"""Import files: which format a file is, and how a CSV row becomes an event (docs/api.md, "Importing").

`pulseboard import` reads NDJSON (one event per line, exactly the ingest contract) or CSV with a
header row. A CSV row is turned into the same JSON object a producer would send, and then goes
through the same `validate` as every other event, so a CSV import cannot accept anything the
channel would refuse. Column mapping (header names are case-sensitive, surrounding spaces dropped):

- ``metric`` (required column), ``ts``, ``status``, ``source``, ``id``: the top-level keys.
- ``value``: a number (``12``, ``0.5``, ``1e3``); an empty cell is a pure count (``null``).
- ``value.NAME``: one field of an object value: a number is a measured field, any other text
  a label. Cannot be combined with a ``value`` column.
- ``tags.NAME``, and every other column: the tag NAME (string). CSV columns beyond the contract's
  keys are nearly always dimensions (endpoint, region, host), which is what tags are for.

An empty cell means "absent" for every column. ``ts`` is unix seconds when it reads as a number,
otherwise ISO-8601 text. A row with more or fewer cells than the header is rejected
(``invalid_csv``), as is a line that is not UTF-8.
"""

from __future__ import annotations

import re

from backend.core.events import Rejection

FORMATS = ("ndjson", "csv")
TOP_LEVEL = ("metric", "ts", "status", "source", "id")
_NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".json")
_INT_RE = re.compile(r"[+-]?\d+")


def detect_format(name: str | None, first_line: bytes) -> str:
    """ "csv" or "ndjson": by the file name's suffix, else by whether the first line is a JSON object."""
    lower = (name or "").lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith(_NDJSON_SUFFIXES):
        return "ndjson"
    return "ndjson" if first_line.lstrip(b"\xef\xbb\xbf \t").startswith(b"{") else "csv"


def number(text: str) -> int | float | None:
    """The number a cell holds, or None when it is not one. Integers stay integers (as JSON would
    have them); "nan" and "inf" come back as floats for validate to reject as non_finite."""
    text = text.strip()
    if _INT_RE.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return None


class CsvMapping:
    """How the columns of one CSV header map onto an event. Raises ValueError for a header that
    cannot describe events (no metric column, a name twice, both value and value.NAME)."""

    __slots__ = ("columns", "width")

    def __init__(self, header: list[str]):
        names = [h.strip() for h in header]
        if names:
            names[0] = names[0].lstrip("\ufeff")  # a byte-order mark some spreadsheets write
        if "metric" not in names:
            raise ValueError(f"CSV header has no 'metric' column (got: {', '.join(names) or 'nothing'})")
        seen: set[str] = set()
        for n in names:
            if not n:
                raise ValueError("CSV header has an empty column name")
            if n in seen:
                raise ValueError(f"CSV header names column {n!r} twice")
            seen.add(n)
        if "value" in seen and any(n.startswith("value.") for n in names):
            raise ValueError("CSV header has both 'value' and 'value.NAME' columns; use one or the other")
        # (kind, name) per column; kind: "top", "value", "field", "tag"
        self.columns: list[tuple[str, str]] = []
        for n in names:
            if n in TOP_LEVEL:
                self.columns.append(("top", n))
            elif n == "value":
                self.columns.append(("value", n))
            elif n.startswith("value.") and len(n) > 6:
                self.columns.append(("field", n[6:]))
            elif n.startswith("tags.") and len(n) > 5:
                self.columns.append(("tag", n[5:]))
            else:
                self.columns.append(("tag", n))
        self.width = len(names)

    def event(self, row: list[str]) -> dict:
        """The event object of one data row (not yet validated)."""
        if len(row) != self.width:
            raise Rejection("invalid_csv", f"row has {len(row)} cells; the header has {self.width}")
        obj: dict = {}
        fields: dict | None = None
        tags: dict | None = None
        for (kind, name), cell in zip(self.columns, row, strict=True):
            if cell == "":
                continue
            if kind == "top":
                if name == "ts":
                    n = number(cell)
                    obj["ts"] = cell.strip() if n is None else n
                else:
                    obj[name] = cell
            elif kind == "value":
                n = number(cell)
                obj["value"] = cell if n is None else n  # text: validate says why it is no value
            elif kind == "field":
                if fields is None:
                    fields = obj["value"] = {}
                n = number(cell)
                fields[name] = cell if n is None else n
            else:
                if tags is None:
                    tags = obj["tags"] = {}
                tags[name] = cell
        return obj


__all__ = ["FORMATS", "TOP_LEVEL", "CsvMapping", "detect_format", "number"]
