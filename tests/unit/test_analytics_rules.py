"""The rule grammar, the JSON forms and their validation errors (pure)."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.analytics.rules import (
    EXPR_PATTERN,
    RULE_TEXT_PATTERN,
    Rule,
    RuleError,
    format_duration,
    parse_duration,
    parse_rule_text,
    rule_from_json,
    rule_from_stored,
    rules_from_document,
)


def parts(rule: Rule) -> tuple:
    return (rule.metric, rule.signal, rule.field, rule.op, rule.threshold, rule.for_s, rule.severity)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("error_rate > 0.05 for 30s", (None, "error_rate", None, ">", 0.05, 30.0, "warning")),
        ("p95(latency.ms) > 500 for 1m", ("latency", "p95", "ms", ">", 500.0, 60.0, "warning")),
        ("rate(orders) < 1 for 2m", ("orders", "rate", None, "<", 1.0, 120.0, "warning")),
        (
            "http_request: error_rate > 5% for 30s severity critical",
            ("http_request", "error_rate", None, ">", 0.05, 30.0, "critical"),
        ),
        ("p95(ms)>=250", (None, "p95", "ms", ">=", 250.0, 0.0, "warning")),
        (
            "  avg( orders.amount )  <=  -3.5e1  for 1m30s ",
            ("orders", "avg", "amount", "<=", -35.0, 90.0, "warning"),
        ),
        # a scope whose name has a colon, and a field with a dot (only expressible with a scope)
        ("app:web: max(temp.c) > 30 for 90", ("app:web", "max", "temp.c", ">", 30.0, 90.0, "warning")),
        # the scope may be repeated inside the expression
        ("latency: p99(latency.ms) > 1 for 2h", ("latency", "p99", "ms", ">", 1.0, 7200.0, "warning")),
        ("min(a.b.c) < 0", ("a.b", "min", "c", "<", 0.0, 0.0, "warning")),
        ("rate: rate > 1", ("rate", "rate", None, ">", 1.0, 0.0, "warning")),
    ],
)
def test_rule_texts_parse(text, expected):
    rule = rule_from_json({"rule": text})
    assert parts(rule) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected rate, error_rate"),
        ("latency > 5", "expected rate, error_rate"),
        ("http_request:error_rate > 0.05", "space after its colon"),
        ("rate >", "expected a number"),
        ("rate 5", "expected >, >=, < or <="),
        ("rate == 5", "expected >, >=, < or <= at '== 5'"),
        ("rate > 1 for 3x", "duration '3x'"),
        ("rate > 1 for 8d", "duration '8d'"),
        ("rate > 1 for 200h", "between 0 and 604800"),
        ("rate > 1 severity fatal", "severity must be one of warning, critical"),
        ("rate > 1 then page", "unexpected 'then page'"),
        ("error_rate > 5", "fraction in 0..1"),
        ("error_rate > 101%", "fraction in 0..1"),
        ("a: rate(b) > 1", "names another metric than the scope 'a'"),
        ("p95() > 1", "is not a field name"),
        ("p95(bad!) > 1", "is not a field name"),
        ("bad!: rate > 1", "is not a metric name"),
        ("rate > 1e999", "finite number"),
        ("x" * 600, "longer than 500"),
    ],
)
def test_bad_rule_texts_say_what_is_wrong(text, message):
    with pytest.raises(RuleError) as info:
        rule_from_json({"rule": text})
    assert message in info.value.message
    assert info.value.field == "rule"


def test_parse_rule_text_is_the_text_half():
    assert parse_rule_text("orders: rate < 1 for 2m") == {
        "metric": "orders",
        "signal": "rate",
        "field": None,
        "op": "<",
        "threshold": 1.0,
        "for_s": 120.0,
    }


def test_json_form_equals_text_form():
    by_json = rule_from_json(
        {
            "metric": "http_request",
            "expr": "p95(ms)",
            "op": ">",
            "threshold": 500,
            "for_s": 60,
            "severity": "critical",
        }
    )
    by_text = rule_from_json({"rule": "http_request: p95(ms) > 500 for 1m severity critical"})
    assert parts(by_json) == parts(by_text)
    assert by_json.text == by_text.text == "http_request: p95(ms) > 500 for 1m severity critical"
    assert by_json.id == by_text.id  # stable ids come from what the rule says


def test_json_form_takes_inline_metric_and_percent_free_fraction():
    rule = rule_from_json({"expr": "rate(orders)", "op": "<", "threshold": 1})
    assert (rule.metric, rule.signal) == ("orders", "rate")
    rule = rule_from_json({"expr": "error_rate", "op": ">", "threshold": 0.05, "metric": None})
    assert rule.metric is None and rule.threshold == 0.05


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ([], "body", "JSON object"),
        ({}, "expr", "expr is required"),
        ({"expr": "rate", "op": ">"}, "threshold", "threshold is required"),
        ({"expr": "rate", "threshold": 1}, "op", "op is required"),
        ({"expr": "rate", "op": "=", "threshold": 1}, "op", "op must be one of"),
        ({"expr": "rate", "op": ">", "threshold": "1"}, "threshold", "must be a number"),
        ({"expr": "rate", "op": ">", "threshold": True}, "threshold", "must be a number"),
        ({"expr": "rate", "op": ">", "threshold": math.nan}, "threshold", "finite"),
        ({"expr": "rate", "op": ">", "threshold": 10**400}, "threshold", "out of range"),
        ({"expr": "error_rate", "op": ">", "threshold": 5}, "threshold", "fraction in 0..1"),
        ({"expr": "rate > 5", "op": ">", "threshold": 1}, "expr", "op and threshold are fields of their own"),
        ({"expr": 5, "op": ">", "threshold": 1}, "expr", "expr must be a string"),
        ({"expr": "median(ms)", "op": ">", "threshold": 1}, "expr", "expected rate, error_rate"),
        ({"expr": "rate", "op": ">", "threshold": 1, "metric": 7}, "metric", "string or null"),
        ({"expr": "rate", "op": ">", "threshold": 1, "metric": "no spaces"}, "metric", "not a metric name"),
        ({"expr": "rate(a)", "op": ">", "threshold": 1, "metric": "b"}, "expr", "another metric"),
        ({"expr": "rate", "op": ">", "threshold": 1, "for_s": -1}, "for_s", "between 0 and"),
        ({"expr": "rate", "op": ">", "threshold": 1, "for_s": "30s"}, "for_s", "number of seconds"),
        ({"expr": "rate", "op": ">", "threshold": 1, "clear_s": 10**6}, "clear_s", "between 0 and 86400"),
        ({"expr": "rate", "op": ">", "threshold": 1, "severity": "page"}, "severity", "severity must be"),
        ({"expr": "rate", "op": ">", "threshold": 1, "id": "has space"}, "id", "id must be"),
        ({"expr": "rate", "op": ">", "threshold": 1, "name": "n" * 201}, "name", "at most 200"),
        ({"expr": "rate", "op": ">", "threshold": 1, "when": "now"}, "when", "unknown key 'when'"),
        ({"rule": "rate > 1", "threshold": 2}, "threshold", "goes inside the rule text"),
        ({"rule": 5}, "rule", "must be a string"),
    ],
)
def test_json_validation_names_the_field(body, field, message):
    with pytest.raises(RuleError) as info:
        rule_from_json(body)
    assert info.value.field == field
    assert message in info.value.message


def test_ids_names_and_severity_override():
    rule = rule_from_json(
        {"rule": "rate > 1 severity warning", "severity": "critical", "name": "  ", "id": "r1"}
    )
    assert rule.severity == "critical"
    assert rule.name == rule.text == "rate > 1 severity critical"  # a blank name falls back to the text
    assert rule.id == "r1"
    assert rule_from_json({"rule": "rate > 1"}, new_id=lambda: "fresh").id == "fresh"
    a = rule_from_json({"rule": "rate > 1", "name": "a"})
    b = rule_from_json({"rule": "rate > 1", "name": "b"})
    assert a.id != b.id and a.id.startswith("file-")


def test_stored_form_round_trips():
    rule = rule_from_json(
        {
            "rule": "checkout: p99(ms) >= 2500 for 1m30s severity critical",
            "name": "slow checkout",
            "clear_s": 45,
        },
        source="file",
        new_id=lambda: "r-1",
    )
    assert rule_from_stored(rule.as_dict()) == rule
    assert rule.as_dict()["expr"] == "p99(ms)"
    assert rule.as_dict()["rule"] == "checkout: p99(ms) >= 2500 for 1m30s severity critical"


def test_holds_per_operator_and_no_data_is_false():
    def rule(op):
        return rule_from_json({"expr": "rate", "op": op, "threshold": 5})

    assert [rule(">").holds(x) for x in (4, 5, 6)] == [False, False, True]
    assert [rule(">=").holds(x) for x in (4, 5, 6)] == [False, True, True]
    assert [rule("<").holds(x) for x in (4, 5, 6)] == [True, False, False]
    assert [rule("<=").holds(x) for x in (4, 5, 6)] == [True, True, False]
    assert not rule("<").holds(None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("1m", 60), ("1m30s", 90), ("2h", 7200), ("90", 90), ("1.5m", 90), ("0s", 0)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (30, "30s"), (60, "1m"), (90, "1m30s"), (7260, "2h1m"), (1.5, "1.5s")]
)
def test_duration_formatting(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_rules_document_forms_and_errors():
    rules = rules_from_document(
        {
            "rules": [
                "error_rate > 0.05 for 30s",
                {
                    "name": "slow",
                    "metric": "latency",
                    "expr": "p95(ms)",
                    "op": ">",
                    "threshold": 500,
                    "for_s": 60,
                },
                {"id": "orders-stopped", "rule": "rate(orders) < 1 for 2m", "severity": "critical"},
            ]
        }
    )
    assert [r.source for r in rules] == ["file"] * 3
    assert [r.name for r in rules][1:] == ["slow", "orders: rate < 1 for 2m severity critical"]
    assert rules[2].id == "orders-stopped"
    assert rules_from_document(None) == [] == rules_from_document({"rules": None})
    with pytest.raises(RuleError) as info:
        rules_from_document(["rate > 1", {"rule": "rate >"}])
    assert info.value.field == "rules[1].rule"
    assert info.value.message.startswith("rules[1]: expected a number")
    with pytest.raises(RuleError) as info:
        rules_from_document([{"id": "x", "rule": "rate > 1"}, {"id": "x", "rule": "rate > 2"}])
    assert "duplicate id 'x'" in info.value.message
    with pytest.raises(RuleError):
        rules_from_document({"rules": "rate > 1"})


# The OpenAPI document describes valid rules with these patterns; schemathesis sends whatever
# they match, so every such string must be accepted.
@given(st.from_regex(RULE_TEXT_PATTERN))
@settings(max_examples=300, suppress_health_check=list(HealthCheck), database=None, deadline=None)
def test_every_string_the_documented_pattern_allows_is_a_valid_rule(text):
    rule = rule_from_json({"rule": text})
    assert rule.text  # and it has a canonical form
    assert rule_from_json({"rule": rule.text}).definition() == rule.definition()


@given(st.from_regex(EXPR_PATTERN), st.floats(-1e12, 1e12, allow_nan=False))
@settings(max_examples=200, suppress_health_check=list(HealthCheck), database=None, deadline=None)
def test_every_documented_expr_is_valid(expr, threshold):
    rule = rule_from_json({"expr": expr, "op": "<", "threshold": threshold})
    assert rule.expr == re.sub(r"\s", "", expr)
