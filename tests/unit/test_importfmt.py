"""Import file parsing: format detection, the CSV column mapping, line numbers for resuming."""

from __future__ import annotations

import io
import time

import orjson
import pytest

from backend.cli.importer.reading import ImportFailed, Position, _csv_text, read_csv, read_ndjson
from backend.core.events import Rejection
from backend.core.importfmt import CsvMapping, detect_format, number

NOW = time.time()
KW = dict(now=lambda: NOW, retention_s=3600, future_s=300, max_bytes=1024)


def test_detect_format_by_name_then_by_first_line():
    assert detect_format("x.CSV", b'{"metric": 1}') == "csv"
    assert detect_format("x.jsonl", b"metric,value") == "ndjson"
    assert detect_format("-", b'  {"metric": "a"}') == "ndjson"
    assert detect_format("-", b"\xef\xbb\xbf{") == "ndjson"
    assert detect_format(None, b"metric,value,ts") == "csv"


def test_number_keeps_integers_and_leaves_text_alone():
    assert number("12") == 12 and type(number("12")) is int
    assert number(" -3 ") == -3
    assert number("0.5") == 0.5 and number("1e3") == 1000.0
    assert number("nan") != number("nan")  # a float NaN: validate rejects it as non_finite
    assert number("high") is None and number("") is None


def test_csv_mapping_of_every_kind_of_column():
    m = CsvMapping(["\ufeffmetric", " ts ", "status", "value.ms", "value.route", "tags.region", "host"])
    assert m.event(["api", "1700000000.5", "error", "12", "/x", "eu", "h1"]) == {
        "metric": "api",
        "ts": 1700000000.5,
        "status": "error",
        "value": {"ms": 12, "route": "/x"},
        "tags": {"region": "eu", "host": "h1"},
    }
    # Empty cells are absent keys; an ISO ts stays text.
    assert m.event(["api", "2026-01-01T00:00:00Z", "", "", "", "", ""]) == {
        "metric": "api",
        "ts": "2026-01-01T00:00:00Z",
    }
    plain = CsvMapping(["metric", "value"])
    assert plain.event(["a", ""]) == {"metric": "a"}
    assert plain.event(["a", "lots"]) == {"metric": "a", "value": "lots"}  # validate says why not
    with pytest.raises(Rejection) as exc:
        plain.event(["a"])
    assert exc.value.reason == "invalid_csv"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (["name", "value"], "no 'metric' column"),
        (["metric", "metric"], "twice"),
        (["metric", ""], "empty column name"),
        (["metric", "value", "value.ms"], "both 'value' and 'value.NAME'"),
    ],
)
def test_csv_headers_that_cannot_describe_events(header, message):
    with pytest.raises(ValueError, match=message):
        CsvMapping(header)


def ndjson(*lines: bytes, first: int = 1):
    pos = Position()
    items = list(read_ndjson(io.BytesIO(b"".join(lines)), pos, first, **KW))
    return items, pos


def test_ndjson_items_carry_their_physical_line_numbers():
    items, pos = ndjson(
        orjson.dumps({"metric": "a", "value": 1}) + b"\n",
        b"\n",
        b"not json\n",
        orjson.dumps({"metric": "a", "ts": NOW - 7200}) + b"\r\n",
        orjson.dumps({"metric": "b"}),  # no final newline
    )
    assert [(i.line, i.rejection.reason if i.rejection else None) for i in items] == [
        (1, None),
        (3, "invalid_json"),
        (4, "stale_ts"),
        (5, None),
    ]
    assert items[0].event["metric"] == "a" and items[0].event["id"]
    assert pos.line == 5


def test_ndjson_resume_skips_the_lines_before():
    lines = [orjson.dumps({"metric": "a", "value": i}) + b"\n" for i in range(10)]
    items, _ = ndjson(*lines, first=7)
    assert [i.line for i in items] == [7, 8, 9, 10]
    assert [i.event["value"] for i in items] == [6, 7, 8, 9]


def csv_items(text: bytes, first: int = 1):
    return list(read_csv(io.BytesIO(text), Position(), first, **KW))


def test_csv_records_spanning_lines_start_where_they_begin():
    text = b'metric,value,note\na,1,x\nb,2,"two\nlines"\nc,3,y\n\nd,oops,z\n'
    items = csv_items(text)
    assert [(i.line, i.rejection.reason if i.rejection else None) for i in items] == [
        (2, None),
        (3, None),
        (5, None),
        (7, "invalid_value"),
    ]
    assert items[1].event["tags"] == {"note": "two\nlines"}
    # Resuming at the line after the multi-line record imports exactly the rest.
    assert [i.line for i in csv_items(text, first=5)] == [5, 7]


def test_csv_bad_bytes_and_bad_quotes_are_rejected_per_row():
    text = b'metric,value\na,1\nb\xff,2\n"c,3\nd,4\n'
    items = csv_items(text)
    got = [(i.line, i.rejection.reason if i.rejection else None) for i in items]
    # An unclosed quote swallows the rest of the file into one record: reported where it starts.
    assert got == [(2, None), (3, "invalid_csv"), (4, "invalid_csv")]
    assert "not valid UTF-8" in items[1].rejection.detail
    assert "unexpected end of data" in items[2].rejection.detail
    with pytest.raises(ImportFailed, match="no 'metric' column"):
        csv_items(b"name,value\nx,1\n")


def test_rejected_csv_records_are_kept_as_csv():
    assert _csv_text(["a", "b,c", 'say "hi"', "two\nlines"]) == 'a,"b,c","say ""hi""","two\nlines"'
