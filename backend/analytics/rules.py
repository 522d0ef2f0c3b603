"""Threshold rules: the grammar, JSON validation and the canonical stored form.

Text form (docs/analytics.md has the full description)::

    rule      = [ scope ":" ] expr op threshold [ "for" duration ] [ "severity" level ]
    scope     = metric name, followed by ":" and whitespace
    expr      = "rate" [ "(" metric ")" ]
              | "error_rate" [ "(" metric ")" ]
              | agg "(" [ metric "." ] field ")"          agg = avg | min | max | p50 | p95 | p99
    op        = ">" | ">=" | "<" | "<="
    threshold = number [ "%" ]                            5% = 0.05
    duration  = number [ "s" | "m" | "h" ] ...            30s, 1m, 1m30s, 2h; a bare number is seconds
    level     = "warning" | "critical"

    error_rate > 0.05 for 30s
    http_request: error_rate > 5% for 30s severity critical
    p95(latency.ms) > 500 for 1m
    rate(orders) < 1 for 2m

A rule without a metric (no scope, no metric in the expression) applies to every metric, each
on its own. ``metric.field`` splits at the last dot; a field name with a dot in it needs the
scope form (``sensor: avg(temp.c) > 30``). Every expression is evaluated once a second over the
trailing ANALYTICS_WINDOW_S seconds; no data (no events, no values) counts as false.

JSON form: ``{"name", "metric", "expr", "op", "threshold", "for_s", "severity", "clear_s", "id"}``
with ``expr`` the expression alone (``"p95(ms)"``, ``"error_rate"``), or ``{"rule": "<text>",
...}``. Every problem raises RuleError naming the offending field.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass

from backend.analytics.anomaly import SEVERITIES, WARNING
from backend.analytics.signals import signal_label
from backend.core.events import METRIC_RE, NAME_RE

OPS = (">", ">=", "<", "<=")
MAX_FOR_S = 7 * 86400
MAX_CLEAR_S = 86400
MAX_NAME = 200
MAX_TEXT = 500
MAX_ABS_THRESHOLD = 1e15
ID_RE = NAME_RE  # rule ids are spelled like field and tag names

_SCOPE = re.compile(r"\s*(\S+?):\s+")
_EXPR = re.compile(
    r"\s*(?:(?P<count>rate|error_rate)(?:\s*\(\s*(?P<cmetric>[^()\s]*)\s*\))?"
    r"|(?P<agg>avg|min|max|p50|p95|p99)\s*\(\s*(?P<arg>[^()\s]*)\s*\))"
)
_OP = re.compile(r"\s*(>=|<=|>|<)")
_NUMBER = re.compile(r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(%?)")
_FOR = re.compile(r"\s+for\s+(\S+)")
_SEVERITY = re.compile(r"\s+severity\s+(\S+)")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


# Regular expressions for the OpenAPI document: a subset of the grammar (single spaces, no
# inline metric names, bounded numbers) such that every string they match is a valid rule.
_P_NAME = r"[A-Za-z0-9_.-]{1,40}"
_P_FIELD = r"[A-Za-z0-9_-]{1,30}"
_P_AGG = rf"(avg|min|max|p50|p95|p99)\({_P_FIELD}\)"
_P_OP = r"(>|>=|<|<=)"
_P_ANY_NUMBER = r"-?[0-9]{1,9}(\.[0-9]{1,6})?%?"
_P_FRACTION = r"(0(\.[0-9]{1,6})?|1(\.0{1,6})?|[0-9]{1,2}(\.[0-9]{1,4})?%|100%)"
_P_TAIL = r"( for ([0-9]{1,5}s|[0-9]{1,4}m|[0-9]{1,2}h))?( severity (warning|critical))?"
RULE_TEXT_PATTERN = (
    rf"^({_P_NAME}: )?((rate|{_P_AGG}) {_P_OP} {_P_ANY_NUMBER}|error_rate {_P_OP} {_P_FRACTION}){_P_TAIL}$"
)
EXPR_PATTERN = rf"^(rate|{_P_AGG})$"


class RuleError(ValueError):
    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    metric: str | None  # None: every metric
    signal: str  # one of signals.SIGNALS
    field: str | None  # for avg/min/max/p50/p95/p99
    op: str
    threshold: float
    for_s: float
    clear_s: float | None  # None: the ALERT_CLEAR_S default
    severity: str
    source: str = "api"  # "api" | "file" | "builtin"
    # Optional refinements (all used by the built-in rules, docs/analytics.md "Built-in rules"):
    window_s: float | None = None  # rate/error_rate over this many seconds instead of the window
    min_rate: float | None = None  # volume guard, events/s (see Engine._armed)
    clear_threshold: float | None = None  # a firing alert clears only beyond this level
    critical: float | None = None  # escalates to critical beyond this level
    critical_clear: float | None = None  # ... and back to the rule's severity beyond this one
    baseline_factor: float | None = None  # also needs value > factor x its recent baseline
    has_field: str | None = None  # only metrics whose events carry this field
    enabled: bool = True
    silenced_until: float | None = None  # unix s; until then the rule opens no alert

    @property
    def expr(self) -> str:
        return signal_label(self.signal, self.field)

    @property
    def text(self) -> str:
        scope = f"{self.metric}: " if self.metric is not None else ""
        text = f"{scope}{self.expr} {self.op} {format_number(self.threshold)}"
        if self.for_s:
            text += f" for {format_duration(self.for_s)}"
        return f"{text} severity {self.severity}"

    @property
    def builtin(self) -> bool:
        return self.source == "builtin"

    @property
    def named(self) -> bool:
        """False when the name is only the rule text (nothing to say twice in messages)."""
        return bool(self.name) and self.name != self.text

    @property
    def upward(self) -> bool:
        return self.op in (">", ">=")

    def holds(self, value: float | None, threshold: float | None = None) -> bool:
        if value is None:
            return False
        limit = self.threshold if threshold is None else threshold
        if self.op == ">":
            return value > limit
        if self.op == ">=":
            return value >= limit
        if self.op == "<":
            return value < limit
        return value <= limit

    def beyond(self, value: float | None, level: float) -> bool:
        """`value` is on the alerting side of `level` (inclusive: a clear level is "still bad")."""
        if value is None:
            return False
        return value >= level if self.upward else value <= level

    def definition(self) -> tuple:
        """What the rule evaluates; a change of it restarts the rule's state."""
        return (
            self.metric,
            self.signal,
            self.field,
            self.op,
            self.threshold,
            self.for_s,
            self.clear_s,
            self.window_s,
            self.min_rate,
            self.clear_threshold,
            self.baseline_factor,
            self.has_field,
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "expr": self.expr, "rule": self.text, "builtin": self.builtin}


def format_number(x: float) -> str:
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def format_duration(seconds: float) -> str:
    if not float(seconds).is_integer():
        return f"{format_number(float(seconds))}s"
    s = int(seconds)
    out = ""
    for unit, size in (("h", 3600), ("m", 60)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    if s or not out:
        out += f"{s}s"
    return out


def parse_duration(text: str, field: str = "for") -> float:
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pos = 0
        seconds = 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNIT_S[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise RuleError(
                f"duration {text!r} must look like 30s, 1m, 1m30s, 2h or a number of seconds", field
            ) from None
    return _check_seconds(seconds, field, MAX_FOR_S)


def _check_seconds(seconds, field: str, maximum: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise RuleError(f"{field} must be a number of seconds", field)
    seconds = float(seconds)
    if not math.isfinite(seconds) or not 0 <= seconds <= maximum:
        raise RuleError(f"{field} must be between 0 and {maximum:g} seconds", field)
    return seconds


def _metric(name: str, field: str) -> str:
    if not METRIC_RE.fullmatch(name):
        raise RuleError(f"{name[:120]!r} is not a metric name ([A-Za-z0-9_.:-], 1-100 characters)", field)
    return name


def _field_name(name: str, field: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise RuleError(f"{name[:120]!r} is not a field name ([A-Za-z0-9_.:-], 1-64 characters)", field)
    return name


def parse_expr(text: str, scope: str | None, field: str = "expr") -> tuple[str | None, str, str | None, int]:
    """(metric, signal, field, end position) of the expression at the start of `text`."""
    m = _EXPR.match(text)
    if m is None:
        hint = ""
        if scope is None and ":" in text.split(None, 1)[0] if text.strip() else False:
            hint = " (a metric scope needs a space after its colon: 'http_request: error_rate > 0.05')"
        raise RuleError(
            f"expected rate, error_rate or avg/min/max/p50/p95/p99(field) at {text.strip()[:40]!r}{hint}",
            field,
        )
    metric = scope
    if m.group("count"):
        signal, fname = m.group("count"), None
        inner = m.group("cmetric")
        if inner is not None:
            inner = _metric(inner, field)
            if scope is not None and inner != scope:
                raise RuleError(f"{signal}({inner}) names another metric than the scope {scope!r}", field)
            metric = inner
    else:
        signal, inner = m.group("agg"), m.group("arg")
        if scope is not None:
            fname = inner[len(scope) + 1 :] if inner.startswith(scope + ".") else inner
        elif "." in inner:
            metric_part, _, fname = inner.rpartition(".")
            metric = _metric(metric_part, field)
        else:
            fname = inner
        fname = _field_name(fname, field)
    return metric, signal, fname, m.end()


def parse_rule_text(text: str) -> dict:
    """The parts of a rule written in the text grammar (see the module docstring)."""
    if not isinstance(text, str):
        raise RuleError("rule must be a string", "rule")
    if len(text) > MAX_TEXT:
        raise RuleError(f"rule is longer than {MAX_TEXT} characters", "rule")
    pos = 0
    scope = None
    m = _SCOPE.match(text)
    if m is not None:
        scope = _metric(m.group(1), "rule")
        pos = m.end()
    metric, signal, fname, end = parse_expr(text[pos:], scope, "rule")
    pos += end
    m = _OP.match(text, pos)
    if m is None:
        raise RuleError(f"expected >, >=, < or <= at {text[pos:].strip()[:40]!r}", "rule")
    op = m.group(1)
    pos = m.end()
    m = _NUMBER.match(text, pos)
    if m is None:
        raise RuleError(f"expected a number after {op!r}, got {text[pos:].strip()[:40]!r}", "rule")
    threshold = _threshold(float(m.group(1)) / (100.0 if m.group(2) else 1.0), signal, "rule")
    pos = m.end()
    out = {"metric": metric, "signal": signal, "field": fname, "op": op, "threshold": threshold}
    m = _FOR.match(text, pos)
    if m is not None:
        out["for_s"] = parse_duration(m.group(1), "rule")
        pos = m.end()
    m = _SEVERITY.match(text, pos)
    if m is not None:
        out["severity"] = _severity(m.group(1), "rule")
        pos = m.end()
    if text[pos:].strip():
        raise RuleError(f"unexpected {text[pos:].strip()[:40]!r} at the end of the rule", "rule")
    return out


def _threshold(value, signal: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError("threshold must be a number", field)
    try:
        value = float(value)
    except OverflowError:
        raise RuleError("threshold is out of range", field) from None
    if not math.isfinite(value) or abs(value) > MAX_ABS_THRESHOLD:
        raise RuleError(f"threshold must be a finite number within +-{MAX_ABS_THRESHOLD:g}", field)
    if signal == "error_rate" and not 0.0 <= value <= 1.0:
        raise RuleError(f"an error_rate threshold is a fraction in 0..1 (5% or 0.05), got {value:g}", field)
    return value


def _severity(value, field: str = "severity") -> str:
    if value not in SEVERITIES:
        raise RuleError(f"severity must be one of {', '.join(SEVERITIES)}", field)
    return value


_JSON_KEYS = {"id", "name", "metric", "expr", "op", "threshold", "for_s", "clear_s", "severity", "rule"}
EXTRA_KEYS = (
    "window_s",
    "min_rate",
    "clear_threshold",
    "critical",
    "critical_clear",
    "baseline_factor",
    "has_field",
    "enabled",
    "silenced_until",
)
_JSON_KEYS |= set(EXTRA_KEYS)
MAX_WINDOW_S = 600  # rate/error_rate windows of rules; the evaluator keeps twice this many seconds of counts


def _number(value, field: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(f"{field} must be a number", field)
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise RuleError(f"{field} must be a number between {lo:g} and {hi:g}", field)
    return value


def _extras(body: dict, parts: dict) -> dict:
    """The optional refinements, checked against the rule they refine."""
    out: dict = {}
    signal, upward = parts["signal"], parts["op"] in (">", ">=")
    threshold = parts["threshold"]
    if body.get("window_s") is not None:
        if signal not in ("rate", "error_rate"):
            raise RuleError("window_s applies to rate and error_rate rules only", "window_s")
        out["window_s"] = _number(body["window_s"], "window_s", 1, MAX_WINDOW_S)
    if body.get("min_rate") is not None:
        out["min_rate"] = _number(body["min_rate"], "min_rate", 0, MAX_ABS_THRESHOLD)

    def level(key: str, ref: float, ref_name: str) -> float:
        value = _threshold(body[key], signal, key)
        if (upward and value > ref) or (not upward and value < ref):
            side = "at most" if upward else "at least"
            raise RuleError(f"{key} must be {side} {ref_name} ({format_number(ref)})", key)
        return value

    if body.get("clear_threshold") is not None:
        out["clear_threshold"] = level("clear_threshold", threshold, "the threshold")
    if body.get("critical") is not None:
        critical = _threshold(body["critical"], signal, "critical")
        if (upward and critical < threshold) or (not upward and critical > threshold):
            raise RuleError(f"critical must be beyond the threshold ({format_number(threshold)})", "critical")
        out["critical"] = critical
    if body.get("critical_clear") is not None:
        if "critical" not in out:
            raise RuleError("critical_clear needs critical", "critical_clear")
        out["critical_clear"] = level("critical_clear", out["critical"], "critical")
    if body.get("baseline_factor") is not None:
        if signal in ("rate", "error_rate") or not upward:
            raise RuleError(
                "baseline_factor applies to > / >= rules on a field (p95(ms) > 500)", "baseline_factor"
            )
        out["baseline_factor"] = _number(body["baseline_factor"], "baseline_factor", 1, 1000)
    if body.get("has_field") is not None:
        if not isinstance(body["has_field"], str):
            raise RuleError("has_field must be a field name", "has_field")
        out["has_field"] = _field_name(body["has_field"], "has_field")
    if body.get("enabled") is not None:
        if not isinstance(body["enabled"], bool):
            raise RuleError("enabled must be true or false", "enabled")
        out["enabled"] = body["enabled"]
    if body.get("silenced_until") is not None:
        out["silenced_until"] = _number(body["silenced_until"], "silenced_until", 0, 4e9)
    return out


def rule_from_json(body, *, source: str = "api", new_id=None) -> Rule:
    """Validate a rule in either JSON form. `new_id()` names a rule that has no id."""
    if not isinstance(body, dict):
        raise RuleError("a rule must be a JSON object", "body")
    unknown = sorted(set(body) - _JSON_KEYS)
    if unknown:
        raise RuleError(f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_JSON_KEYS))}", unknown[0])
    if "rule" in body:
        extra = sorted(set(body) & {"metric", "expr", "op", "threshold", "for_s"})
        if extra:
            raise RuleError(f"{extra[0]!r} goes inside the rule text when 'rule' is given", extra[0])
        parts = parse_rule_text(body["rule"])
    else:
        for key in ("expr", "op", "threshold"):
            if key not in body:
                raise RuleError(f"{key} is required (or give the whole rule as text in 'rule')", key)
        scope = body.get("metric")
        if scope is not None:
            if not isinstance(scope, str):
                raise RuleError("metric must be a string or null", "metric")
            scope = _metric(scope, "metric")
        expr = body["expr"]
        if not isinstance(expr, str) or len(expr) > MAX_TEXT:
            raise RuleError("expr must be a string like error_rate or p95(ms)", "expr")
        metric, signal, fname, end = parse_expr(expr, scope)
        if expr[end:].strip():
            raise RuleError(
                f"unexpected {expr[end:].strip()[:40]!r} after the expression; "
                "op and threshold are fields of their own",
                "expr",
            )
        if body["op"] not in OPS:
            raise RuleError(f"op must be one of {', '.join(OPS)}", "op")
        parts = {
            "metric": metric,
            "signal": signal,
            "field": fname,
            "op": body["op"],
            "threshold": _threshold(body["threshold"], signal, "threshold"),
        }
        if body.get("for_s") is not None:
            parts["for_s"] = _check_seconds(body["for_s"], "for_s", MAX_FOR_S)
    if body.get("severity") is not None:
        parts["severity"] = _severity(body["severity"])
    clear_s = body.get("clear_s")
    if clear_s is not None:
        clear_s = _check_seconds(clear_s, "clear_s", MAX_CLEAR_S)
    rule_id = body.get("id")
    if rule_id is not None and (not isinstance(rule_id, str) or not ID_RE.fullmatch(rule_id)):
        raise RuleError("id must be 1-64 characters of [A-Za-z0-9_.:-]", "id")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME):
        raise RuleError(f"name must be a string of at most {MAX_NAME} characters", "name")
    rule = Rule(
        id="",
        name="",
        metric=parts["metric"],
        signal=parts["signal"],
        field=parts["field"],
        op=parts["op"],
        threshold=parts["threshold"],
        for_s=parts.get("for_s", 0.0),
        clear_s=clear_s,
        severity=parts.get("severity", WARNING),
        source=source,
        **_extras(body, parts),
    )
    name = name.strip() if name and name.strip() else rule.text
    if rule_id is None:
        rule_id = new_id() if new_id is not None else stable_id(rule, name)
    return Rule(**{**asdict(rule), "id": rule_id, "name": name})


def stable_id(rule: Rule, name: str) -> str:
    """An id derived from what the rule says, for rules files without ids: the same file gives
    the same ids on every node and every start."""
    digest = hashlib.sha1(f"{name}\n{rule.text}\n{rule.clear_s}".encode()).hexdigest()
    return f"file-{digest[:12]}"


def rule_from_stored(data: dict) -> Rule:
    """A rule as stored by Store (already validated); raises RuleError if it is not one."""
    if not isinstance(data, dict):
        raise RuleError("stored rule is not an object", "body")
    keep = ("id", "name", "severity", "clear_s", "rule", *EXTRA_KEYS)
    body = {k: data[k] for k in keep if data.get(k) is not None}
    return rule_from_json(body, source=data.get("source", "api"))


def rules_from_document(doc) -> list[Rule]:
    """The rules of a RULES_FILE document: a list, or ``{"rules": [...]}``; each item a JSON-form
    rule or a rule text string. Raises RuleError naming the item at fault."""
    if isinstance(doc, dict) and "rules" in doc:
        doc = doc["rules"]
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise RuleError("a rules file holds a list of rules (or {rules: [...]})", "rules")
    out = []
    seen: set[str] = set()
    for i, item in enumerate(doc):
        body = {"rule": item} if isinstance(item, str) else item
        try:
            rule = rule_from_json(body, source="file")
        except RuleError as exc:
            raise RuleError(f"rules[{i}]: {exc.message}", f"rules[{i}].{exc.field}") from None
        if rule.id in seen:
            raise RuleError(f"rules[{i}]: duplicate id {rule.id!r}", f"rules[{i}].id")
        seen.add(rule.id)
        out.append(rule)
    return out


__all__ = [
    "EXPR_PATTERN",
    "OPS",
    "RULE_TEXT_PATTERN",
    "Rule",
    "RuleError",
    "format_duration",
    "parse_duration",
    "parse_rule_text",
    "rule_from_json",
    "rule_from_stored",
    "rules_from_document",
]
