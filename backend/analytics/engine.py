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
from backend.analytics.hysteresis import Hysteresis
from backend.analytics.rules import Rule, format_duration
from backend.analytics.signals import Frame, signal_label

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


def anomaly_key(metric: str, signal: str, fname: str | None) -> str:
    return f"anomaly|{metric}|{signal}|{fname or ''}"


def rule_key(rule_id: str, metric: str) -> str:
    return f"rule|{rule_id}|{metric}"


class _RuleState:
    __slots__ = ("definition", "hysteresis", "opened_at", "rule")

    def __init__(self, rule: Rule, clear_s: float):
        self.rule = rule
        self.definition = rule.definition()
        self.hysteresis = Hysteresis(rule.for_s, clear_s)
        self.opened_at: float | None = None


class Engine:
    def __init__(self, settings: AnomalySettings, *, clear_s: float, anomalies: bool = True):
        self.settings = settings
        self.clear_s = clear_s  # rules without their own clear_s
        self.anomalies = anomalies
        self.watches: dict[str, Watch] = {}
        self.rules: dict[str, Rule] = {}
        self.rule_states: dict[str, _RuleState] = {}
        self.last_seen: dict[str, float] = {}  # metric -> last step it had events

    # --- rules ---------------------------------------------------------------------------------
    def set_rules(self, rules: list[Rule], t: float) -> list[Transition]:
        """Replace the rule set. Firing states of rules that are gone or changed close now."""
        self.rules = {r.id: r for r in rules}
        out = []
        for key, state in list(self.rule_states.items()):
            current = self.rules.get(state.rule.id)
            if current is not None and current.definition() == state.definition:
                state.rule = current  # name or severity edits apply in place
                continue
            del self.rule_states[key]
            if state.hysteresis.firing:
                why = "rule deleted" if current is None else "rule changed"
                out.append(Transition("close", key, {"closed_at": t, "message": f"{state.rule.text}: {why}"}))
        return out

    # --- one step ------------------------------------------------------------------------------
    def step(self, t: float, frame: Frame) -> list[Transition]:
        """Evaluate every watch and rule on `frame`, the window ending at time `t`."""
        for metric in frame.metrics:
            if frame.count(metric):
                self.last_seen[metric] = t
        self._forget(t)
        out: list[Transition] = []
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
            metrics = [rule.metric] if rule.metric is not None else plain
            for metric in metrics:
                self._rule(t, frame, rule, metric, out)
        return out

    def _forget(self, t: float) -> None:
        for metric, seen in list(self.last_seen.items()):
            if t - seen < FORGET_S:
                continue
            prefix = f"anomaly|{metric}|"
            if any(w.open for k, w in self.watches.items() if k.startswith(prefix)):
                continue
            del self.last_seen[metric]
            for k in [k for k in self.watches if k.startswith(prefix)]:
                del self.watches[k]

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

    def _rule(self, t, frame: Frame, rule: Rule, metric: str, out: list) -> None:
        key = rule_key(rule.id, metric)
        value = frame.value(metric, rule.signal, rule.field)
        holds = rule.holds(value)
        state = self.rule_states.get(key)
        if state is None:
            if not holds:
                return  # states exist only for conditions that held at some point
            clear_s = rule.clear_s if rule.clear_s is not None else self.clear_s
            state = self.rule_states[key] = _RuleState(rule, clear_s)
        event = state.hysteresis.step(t, holds)
        if state.hysteresis.state == "ok" and event is None:
            del self.rule_states[key]
            return
        scoped = rule.metric is not None
        text = rule.text if scoped else f"{metric}: {rule.text}"
        if event == "open":
            state.opened_at = t
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
                        "direction": "above" if rule.op in (">", ">=") else "below",
                        "severity": rule.severity,
                        "value": value,
                        "threshold": rule.threshold,
                        "zscore": None,
                        "baseline": None,
                        "rule_id": rule.id,
                        "rule": rule.text,
                        "opened_at": t,
                        "message": f"{rule.name}: {text} (now {_fmt(value)})",
                    },
                )
            )
        elif event == "close":
            del self.rule_states[key]
            out.append(
                Transition(
                    "close",
                    key,
                    {"closed_at": t, "value": value, "message": f"{rule.name}: resolved (now {_fmt(value)})"},
                )
            )

    # --- state -----------------------------------------------------------------------------------
    def open_keys(self) -> set[str]:
        keys = {k for k, w in self.watches.items() if w.open}
        keys |= {k for k, s in self.rule_states.items() if s.hysteresis.firing}
        return keys

    def adopt(self, key: str, opened_at: float, severity: str) -> bool:
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
            if rule is None or (rule.metric is not None and rule.metric != metric):
                return False
            clear_s = rule.clear_s if rule.clear_s is not None else self.clear_s
            state = self.rule_states.get(key)
            if state is None:
                state = self.rule_states[key] = _RuleState(rule, clear_s)
            state.hysteresis.force_firing()
            state.opened_at = opened_at
            return True
        return False
