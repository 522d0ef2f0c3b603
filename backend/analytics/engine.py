"""One evaluation step: a Frame of signals in, alert transitions out. Pure, on an explicit clock.

The engine owns every anomaly Watch and every rule's Hysteresis, keyed by what an alert is
about (its dedup key): ``anomaly|<metric>|<signal>|<field>`` or ``rule|<rule id>|<metric>``.
A "metric" here may also be a breakdown series (``http_request[endpoint=/a]``, see breakdown.py):
those get error-rate and p95 watches, no rate watch and no rules.
It says what changed; the evaluator gives alerts ids, stores them and pushes them out.

Cost per step: O(metrics x (watched signals + rules)); the frame computes each signal once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.analytics.anomaly import ERROR_RATE, P95, RATE, AnomalySettings, Watch, WatchSpec
from backend.analytics.breakdown import is_series, split_series
from backend.analytics.defaults import is_no_data_rule
from backend.analytics.hysteresis import OK, Hysteresis
from backend.analytics.rules import Rule, format_duration, format_number
from backend.analytics.signals import CountHistory, Frame, signal_label
from backend.core.timefmt import iso_ms

FORGET_S = 900.0  # a metric unseen this long (and with no open alert) loses its baselines


@dataclass
class Transition:
    action: str  # "open" | "update" | "close"
    key: str
    alert: dict = field(default_factory=dict)  # open: the whole alert; otherwise the changed fields


def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.4g}"


def iso_s(t: float) -> str:
    return iso_ms(t)[:19] + "Z"


def _first(*values):
    return next((v for v in values if v is not None), None)


def _what(rule: Rule, metric: str) -> str:
    """``http_request error_rate over 1m``: what a rule measures on one metric."""
    out = f"{metric} {rule.expr}"
    if rule.window_s is not None:
        out += f" over {format_duration(rule.window_s)}"
    return out


def _fmt_value(rule: Rule, x: float | None) -> str:
    if x is None:
        return "n/a"
    if rule.signal == "error_rate":
        return f"{x * 100:.3g}%"
    if rule.signal == "rate":
        return f"{x:.4g}/s"
    return f"{x:.4g}"


def anomaly_key(metric: str, signal: str, fname: str | None) -> str:
    return f"anomaly|{metric}|{signal}|{fname or ''}"


def rule_key(rule_id: str, metric: str) -> str:
    return f"rule|{rule_id}|{metric}"


class _RuleState:
    __slots__ = ("definition", "hysteresis", "nodata", "opened_at", "rule", "severity")

    def __init__(self, rule: Rule, clear_s: float):
        self.rule = rule
        self.definition = rule.definition()
        self.hysteresis = Hysteresis(rule.for_s, clear_s)
        self.opened_at: float | None = None
        self.severity = rule.severity
        self.nodata = False  # firing, but its metric stopped reporting: the alert is in state nodata


BASELINE_SPAN_S = 300.0  # EWMA span of a rule's baseline (baseline_factor), one value a second
BASELINE_MIN_S = 30  # values learned before a baseline counts


class Engine:
    def __init__(self, settings: AnomalySettings, *, clear_s: float, anomalies: bool = True):
        self.settings = settings
        self.clear_s = clear_s  # rules without their own clear_s
        self.anomalies = anomalies
        self.watches: dict[str, Watch] = {}
        self.rules: dict[str, Rule] = {}
        self.rule_states: dict[str, _RuleState] = {}
        self.last_seen: dict[str, float] = {}  # metric -> last step it had events
        self.fields_seen: dict[str, set[str]] = {}  # metric -> fields its events carried
        self.baselines: dict[str, list[float]] = {}  # rule key -> [EWMA, values learned]

    # --- rules ---------------------------------------------------------------------------------
    def set_rules(self, rules: list[Rule], t: float) -> list[Transition]:
        """Replace the rule set. Firing states of rules that are gone or changed close now."""
        self.rules = {r.id: r for r in rules}
        out = []
        for key, state in list(self.rule_states.items()):
            current = self.rules.get(state.rule.id)
            if current is not None and current.enabled and current.definition() == state.definition:
                state.rule = current  # name or severity edits apply in place
                continue
            if current is not None and not current.enabled and state.definition == current.definition():
                why = "rule turned off"
            else:
                why = "rule deleted" if current is None else "rule changed"
            del self.rule_states[key]
            self.baselines.pop(key, None)
            if state.hysteresis.firing:
                label = state.rule.name if state.rule.named else state.rule.text
                out.append(Transition("close", key, {"closed_at": t, "message": f"{label}: {why}"}))
        return out

    # --- one step ------------------------------------------------------------------------------
    def step(self, t: float, frame: Frame, history: CountHistory | None = None) -> list[Transition]:
        """Evaluate every watch and rule on `frame`, the window ending at time `t`; `history`
        (per-second counts ending at `t`) serves rules with a window_s of their own."""
        for metric, m in frame.metrics.items():
            if m.count:
                self.last_seen[metric] = t
                seen = self.fields_seen.get(metric)
                if seen is None:
                    seen = self.fields_seen[metric] = set()
                seen.update(m.fields)
        out: list[Transition] = []
        self._forget(t, out)
        if self.anomalies:
            for metric in sorted(self.last_seen):
                if not is_series(metric):  # a tag value's rate is its share of traffic: not watched
                    self._watch(t, frame, metric, RATE, None, out)
                self._watch(t, frame, metric, ERROR_RATE, None, out)
                for fname in frame.latency_fields(metric):
                    self._watch(t, frame, metric, P95, fname, out)
            # latency fields that had no values this time still need their alerts to clear
            for key, watch in list(self.watches.items()):
                if watch.open and watch.spec is P95:
                    _, metric, _, fname = key.split("|", 3)
                    if fname not in frame.latency_fields(metric):
                        self._watch(t, frame, metric, P95, fname, out)
        plain = [m for m in sorted(self.last_seen) if not is_series(m)]
        for rule in self.rules.values():
            if not rule.enabled:
                continue
            metrics = [rule.metric] if rule.metric is not None else plain
            for metric in metrics:
                self._rule(t, frame, history, rule, metric, out)
        return out

    def _forget(self, t: float, out: list) -> None:
        for metric, seen in list(self.last_seen.items()):
            if t - seen < FORGET_S:
                continue
            prefix = f"anomaly|{metric}|"
            if any(w.open for k, w in self.watches.items() if k.startswith(prefix)):
                continue
            del self.last_seen[metric]
            self.fields_seen.pop(metric, None)
            for k in [k for k in self.watches if k.startswith(prefix)]:
                del self.watches[k]
            # unscoped rules stop looking at a forgotten metric: close what they hold open for it
            for key, state in list(self.rule_states.items()):
                if (
                    state.rule.metric is None
                    and key.endswith(f"|{metric}")
                    and key == rule_key(state.rule.id, metric)
                ):
                    del self.rule_states[key]
                    self.baselines.pop(key, None)
                    if state.hysteresis.firing:
                        message = f"{metric}: no events for {format_duration(FORGET_S)}, no longer watched"
                        out.append(
                            Transition("close", key, {"closed_at": t, "value": None, "message": message})
                        )

    def _watch(self, t, frame: Frame, metric: str, spec: WatchSpec, fname, out: list) -> None:
        key = anomaly_key(metric, spec.signal, fname)
        watch = self.watches.get(key)
        if watch is None:
            watch = self.watches[key] = Watch(spec, self.settings)
        value = frame.value(metric, spec.signal, fname)
        volume = frame.field_count(metric, fname) if fname is not None else frame.count(metric)
        event = watch.observe(t, value, volume)
        if event is None:
            return
        label = f"{metric} {signal_label(spec.signal, fname)}"
        unit = "/s" if spec.signal == "rate" else ""
        base, tags = split_series(metric)
        if event == "open" or event == "escalate":
            z = watch.z
            where = "above" if z >= 0 else "below"
            message = (
                f"{label} = {_fmt(value)}{unit} is {abs(z):.1f} sd {where} its baseline "
                f"{_fmt(watch.baseline_value())}{unit}"
            )
            fields = {
                "severity": watch.severity,
                "value": value,
                "zscore": round(z, 3),
                "baseline": watch.baseline_value(),
                "message": message,
            }
            if event == "open":
                out.append(
                    Transition(
                        "open",
                        key,
                        {
                            "kind": "anomaly",
                            "metric": base,
                            "tags": tags,
                            "field": fname,
                            "signal": spec.signal,
                            "direction": where,
                            "threshold": None,
                            "rule_id": None,
                            "rule": None,
                            "opened_at": t,
                            **fields,
                        },
                    )
                )
            else:
                out.append(Transition("update", key, fields))
            return
        if event == "close":
            message = (
                f"{label} back to normal ({_fmt(value)}{unit}, baseline {_fmt(watch.baseline_value())}{unit})"
            )
        else:  # rebaseline
            message = (
                f"{label} has been unusual for {format_duration(self.settings.max_open_s)}: "
                "taken as the new normal, baseline restarted"
            )
        out.append(Transition("close", key, {"closed_at": t, "value": value, "message": message}))

    def _rule(
        self, t, frame: Frame, history: CountHistory | None, rule: Rule, metric: str, out: list
    ) -> None:
        key = rule_key(rule.id, metric)
        state = self.rule_states.get(key)
        if rule.has_field is not None and rule.has_field not in self.fields_seen.get(metric, ()):
            return  # not a metric this rule is about (its alerts, if any, close when it is forgotten)
        prefix = f"{rule.name}: " if rule.named else ""
        if rule.silenced_until is not None and t < rule.silenced_until:
            # Silenced: what it holds open closes now (saying why), and nothing opens until then.
            if state is not None:
                del self.rule_states[key]
                if state.hysteresis.firing:
                    until = iso_s(rule.silenced_until)
                    message = f"{prefix}{_what(rule, metric)}: silenced until {until}"
                    out.append(Transition("close", key, {"closed_at": t, "message": message}))
            return
        value = self._value(frame, history, rule, metric)
        firing = state is not None and state.hysteresis.firing
        what = _what(rule, metric)
        # A firing alert whose metric stopped reporting is neither bad nor resolved: "no data".
        # (A rate is known without events, 0, so rate rules judge silence themselves.)
        silent = rule.signal != "rate" and (value is None or frame.count(metric) == 0)
        if firing and silent:
            if not state.nodata:
                state.nodata = True
                message = (
                    f"{prefix}{metric} stopped reporting: {what} unknown (no events for {frame.seconds}s)"
                )
                out.append(Transition("update", key, {"state": "nodata", "value": None, "message": message}))
            return
        if firing and state.nodata:
            state.nodata = False
            message = f"{prefix}{what} = {_fmt_value(rule, value)}: {metric} is reporting again"
            out.append(Transition("update", key, {"state": "open", "value": value, "message": message}))
        baseline = self._baseline(key, rule, value, state) if rule.baseline_factor is not None else None
        if firing and rule.clear_threshold is not None:
            holds = rule.beyond(value, rule.clear_threshold)
        else:
            holds = rule.holds(value)
        if holds and rule.baseline_factor is not None:
            holds = baseline is not None and value > rule.baseline_factor * baseline
        if holds and not self._armed(rule, metric, frame, history, state):
            holds = False
        if rule.baseline_factor is not None and state is None and not holds and value is not None:
            self._learn(key, value)
        if state is None:
            if not holds:
                return  # states exist only for conditions that held at some point
            clear_s = rule.clear_s if rule.clear_s is not None else self.clear_s
            state = self.rule_states[key] = _RuleState(rule, clear_s)
        event = state.hysteresis.step(t, holds)
        if state.hysteresis.state == OK and event is None:
            del self.rule_states[key]
            return
        no_data_rule = is_no_data_rule(rule)
        if event == "open":
            state.opened_at = t
            state.severity = rule.severity
            if rule.critical is not None and rule.holds(value, rule.critical):
                state.severity = "critical"
            if no_data_rule:
                seconds = (rule.window_s or frame.seconds) + rule.for_s
                message = f"{prefix}{metric} has sent no events for {format_duration(seconds)}"
            else:
                message = f"{prefix}{what} = {_fmt_value(rule, value)}, {rule.op} {_fmt_value(rule, rule.threshold)}"
                if rule.baseline_factor is not None:
                    message += (
                        f" and above {format_number(rule.baseline_factor)}x its baseline {_fmt(baseline)}"
                    )
            out.append(
                Transition(
                    "open",
                    key,
                    {
                        "kind": "rule",
                        "metric": metric,
                        "tags": None,
                        "field": rule.field,
                        "signal": rule.signal,
                        "direction": "above" if rule.upward else "below",
                        "severity": state.severity,
                        "value": value,
                        "threshold": rule.threshold,
                        "zscore": None,
                        "baseline": baseline,
                        "rule_id": rule.id,
                        "rule": rule.text,
                        "opened_at": t,
                        "message": message,
                        **({"state": "nodata"} if no_data_rule else {}),
                    },
                )
            )
        elif event == "close":
            del self.rule_states[key]
            if no_data_rule:
                message = f"{prefix}{metric} is sending events again ({_fmt_value(rule, value)})"
            else:
                message = f"{prefix}{what} resolved (now {_fmt_value(rule, value)})"
            out.append(Transition("close", key, {"closed_at": t, "value": value, "message": message}))
        elif state.hysteresis.firing and rule.critical is not None and not no_data_rule:
            self._escalation(key, rule, state, value, prefix, what, out)

    def _escalation(
        self, key, rule: Rule, state: _RuleState, value, prefix: str, what: str, out: list
    ) -> None:
        if state.severity != "critical" and rule.holds(value, rule.critical):
            state.severity = "critical"
            message = (
                f"{prefix}{what} = {_fmt_value(rule, value)}, {rule.op} {_fmt_value(rule, rule.critical)}"
            )
        elif state.severity == "critical" and not rule.beyond(
            value, _first(rule.critical_clear, rule.critical)
        ):
            state.severity = rule.severity
            message = f"{prefix}{what} = {_fmt_value(rule, value)}, back to {rule.severity}"
        else:
            return
        out.append(
            Transition("update", key, {"severity": state.severity, "value": value, "message": message})
        )

    @staticmethod
    def _value(frame: Frame, history: CountHistory | None, rule: Rule, metric: str) -> float | None:
        if rule.window_s is not None and history is not None:
            return history.value(metric, rule.signal, int(rule.window_s))
        return frame.value(metric, rule.signal, rule.field)

    @staticmethod
    def _armed(rule: Rule, metric: str, frame: Frame, history: CountHistory | None, state) -> bool:
        """The volume guard: a rule with min_rate judges only metrics with enough traffic. For a
        rule on a drop in rate the traffic must have been there in the window before this one
        (and the guard holds while the drop lasts); for any other over the rule's own window."""
        if rule.min_rate is None:
            return True
        seconds = int(rule.window_s) if rule.window_s is not None else frame.seconds
        if rule.signal == "rate" and not rule.upward:
            if state is not None:
                return True
            before = history.totals(metric, seconds, seconds)[0] if history is not None else 0
            return before >= rule.min_rate * seconds
        if rule.window_s is not None and history is not None:
            count = history.totals(metric, seconds)[0]
        else:
            count = frame.count(metric)
        return count >= rule.min_rate * seconds

    def _baseline(self, key: str, rule: Rule, value, state) -> float | None:
        """The rule's recent normal for this metric (EWMA), learned only from values that did not
        hold while nothing was pending or firing, so an incident never becomes its own baseline."""
        b = self.baselines.get(key)
        return b[0] if b is not None and b[1] >= BASELINE_MIN_S else None

    def _learn(self, key: str, value: float) -> None:
        b = self.baselines.get(key)
        if b is None:
            b = self.baselines[key] = [0.0, 0]
        alpha = max(2.0 / (BASELINE_SPAN_S + 1), 1.0 / (b[1] + 1))
        b[0] += alpha * (value - b[0])
        b[1] += 1

    # --- state -----------------------------------------------------------------------------------
    def open_keys(self) -> set[str]:
        keys = {k for k, w in self.watches.items() if w.open}
        keys |= {k for k, s in self.rule_states.items() if s.hysteresis.firing}
        return keys

    def adopt(self, key: str, opened_at: float, severity: str, state: str = "open") -> bool:
        """Treat an alert found open in the store as open here too. False when the key means
        nothing to this engine (e.g. its rule is gone); the caller then closes it."""
        kind, _, rest = key.partition("|")
        if kind == "anomaly":
            metric, signal, _field = rest.split("|", 2)
            spec = {"rate": RATE, "error_rate": ERROR_RATE, "p95": P95}.get(signal)
            if spec is None or not self.anomalies:
                return False
            watch = self.watches.get(key)
            if watch is None:
                watch = self.watches[key] = Watch(spec, self.settings)
            watch.adopt_open(opened_at, severity)
            self.last_seen.setdefault(metric, opened_at)
            return True
        if kind == "rule":
            rule_id, _, metric = rest.partition("|")
            rule = self.rules.get(rule_id)
            if rule is None or not rule.enabled or (rule.metric is not None and rule.metric != metric):
                return False
            clear_s = rule.clear_s if rule.clear_s is not None else self.clear_s
            rule_state = self.rule_states.get(key)
            if rule_state is None:
                rule_state = self.rule_states[key] = _RuleState(rule, clear_s)
            rule_state.hysteresis.force_firing()
            rule_state.opened_at = opened_at
            rule_state.severity = severity
            rule_state.nodata = state == "nodata" and not is_no_data_rule(rule)
            return True
        return False
