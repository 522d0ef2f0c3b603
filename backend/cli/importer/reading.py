"""Reading an import: NDJSON or CSV lines in, validated events (or rejections) out, each with the
line it starts on. Validation is the worker's own (core.events); nothing here talks to Redis."""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson

from backend.core.events import Rejection, parse_event, validate
from backend.core.importfmt import CsvMapping, detect_format


class ImportFailed(Exception):
    """A problem that ends the import with a one-line message (exit 1)."""


@dataclass
class Position:
    line: int = 0  # physical lines read so far
    bytes: int = 0  # bytes read so far
    bad_utf8: set[int] = field(default_factory=set)  # CSV lines that were not UTF-8


@dataclass
class Item:
    """One record of the input: where it starts, and either the event or why not."""

    line: int
    raw: bytes | str | list[str]  # a CSV record as its cells
    event: dict | None = None
    rejection: Rejection | None = None

    def raw_text(self) -> str:
        """The record as text, for the rejects file."""
        raw = self.raw
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        elif isinstance(raw, list):
            raw = _csv_text(raw)
        return raw.rstrip("\r\n")


@dataclass(frozen=True)
class Rules:
    """What a valid event is: the worker's settings, and the clock to judge timestamps by."""

    retention_s: int
    future_s: int
    max_bytes: int
    now: Callable[[], float] = field(default_factory=lambda: _Clock())


def open_input(path: str) -> tuple[BinaryIO, int | None]:
    """The file (or stdin for "-") and its size when known."""
    if path == "-":
        return sys.stdin.buffer, None
    p = Path(path)
    try:
        f = p.open("rb")
    except OSError as exc:
        raise ImportFailed(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        size = p.stat().st_size if p.is_file() else None
    except OSError:
        size = None
    return f, size


def read(f, path: str, fmt: str, pos: Position, first: int, rules: Rules) -> Iterator[Item]:
    """The items of `f` from line `first` on; `fmt` "auto" looks at the name, then the first line."""
    if fmt == "auto":
        head = f.peek(1 << 16)[:4096] if hasattr(f, "peek") else b""
        fmt = detect_format(path, head.split(b"\n", 1)[0])
    reader = read_csv if fmt == "csv" else read_ndjson
    kw = dict(
        now=rules.now, retention_s=rules.retention_s, future_s=rules.future_s, max_bytes=rules.max_bytes
    )
    return reader(f, pos, first, **kw)


def _binary_lines(f, pos: Position) -> Iterator[bytes]:
    for raw in f:
        pos.line += 1
        pos.bytes += len(raw)
        yield raw


def _text_lines(f, pos: Position) -> Iterator[str]:
    for raw in _binary_lines(f, pos):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            pos.bad_utf8.add(pos.line)
            yield raw.decode("utf-8", "replace")


def _item(line: int, raw, check: Callable[[], object]) -> Item:
    """`check()` returns the validated event (core.events.Event) or raises a Rejection."""
    try:
        return Item(line, raw, event=check().data)
    except Rejection as rej:
        return Item(line, raw, rejection=rej)


def read_ndjson(f, pos: Position, first: int, *, now, retention_s, future_s, max_bytes) -> Iterator[Item]:
    for raw in _binary_lines(f, pos):
        if pos.line < first or not raw.strip():
            continue
        yield _item(
            pos.line,
            raw,
            lambda raw=raw: parse_event(
                raw, now=now(), retention_s=retention_s, future_tolerance_s=future_s, max_bytes=max_bytes
            ),
        )


def read_csv(f, pos: Position, first: int, *, now, retention_s, future_s, max_bytes) -> Iterator[Item]:
    reader = csv.reader(_text_lines(f, pos), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise ImportFailed(f"line 1: not a CSV header: {exc}") from None
    if 1 in pos.bad_utf8:
        raise ImportFailed("line 1: the CSV header is not UTF-8")
    try:
        mapping = CsvMapping(header)
    except ValueError as exc:
        raise ImportFailed(f"line 1: {exc}") from None

    def check(row: list[str]):
        obj = mapping.event(row)
        if len(orjson.dumps(obj)) > max_bytes:
            raise Rejection("too_large", f"event is larger than {max_bytes} bytes")
        return validate(obj, now=now(), retention_s=retention_s, future_tolerance_s=future_s)

    started = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # strict=True: a malformed quote. The reader has consumed the line; go on after it.
            line, started = started, reader.line_num + 1
            if line >= first:
                yield Item(line, "", rejection=Rejection("invalid_csv", str(exc)))
            continue
        line, ended = started, reader.line_num
        started = ended + 1
        if line < first or not row or row == [""]:
            continue
        if any(n in pos.bad_utf8 for n in range(line, ended + 1)):
            yield Item(line, row, rejection=Rejection("invalid_csv", "the line is not valid UTF-8"))
            continue
        yield _item(line, row, lambda row=row: check(row))


def _csv_text(row: list[str]) -> str:
    """A CSV record written back as CSV (quoted where needed), for the rejects file."""
    out = io.StringIO()
    csv.writer(out).writerow(row)  # the default \r\n terminator: cells with newlines get quoted
    return out.getvalue()[:-2]


class _Clock:
    """time.time() for validation, re-read every 1000 calls: validating a line takes microseconds."""

    __slots__ = ("n", "now")

    def __init__(self):
        self.n = 0
        self.now = time.time()

    def __call__(self) -> float:
        self.n += 1
        if self.n >= 1000:
            self.n = 0
            self.now = time.time()
        return self.now
