"""The evaluator: once a second, in the process holding the worker lease, judge the last second.

Exactly one evaluator acts at a time: each process that runs the ingest worker runs one, and it
works only while its worker's role is "active" (holds the lease). It reads what it judges from
Redis (the per-second buckets, ANALYTICS_SETTLE_MS after each second ends, so late events are
in), never from the in-memory stream, which makes it restart-safe: on becoming active it
replays the last ANALYTICS_HISTORY_S seconds of buckets to rebuild baselines and rule states,
adopts the alerts it finds open in Redis, opens what is open now but not stored, and closes what
is stored open but no longer is.

Each alert change is written to Redis, pushed to every Socket.IO client as an `alert` event and,
on open and close, queued for the webhook.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import orjson
import redis

from backend import telemetry
from backend.analytics.breakdown import tag_series
from backend.analytics.engine import Engine, Transition
from backend.analytics.rules import MAX_WINDOW_S, rules_from_document
from backend.analytics.settings import AnalyticsSettings
from backend.analytics.signals import CountHistory, Frame
from backend.core.timefmt import iso_ms, parse_iso
from backend.core.window import WindowStats
from backend.storage.alerts import AnalyticsStore
from backend.storage.keys import Partitioning
from backend.tasks.loop import Task
from backend.tasks.webhook import WebhookSender

log = logging.getLogger(__name__)

REPLAY_CHUNK_S = 60  # buckets read per round trip while replaying history
PUBLIC_HIDDEN = ("key",)  # stored with an alert, not part of its public shape


def public(alert: dict) -> dict:
    return {k: v for k, v in alert.items() if k not in PUBLIC_HIDDEN}


def load_rules_file(path: str) -> list:
    """The rules of a YAML or JSON file (by extension; YAML parses JSON too)."""
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        doc = orjson.loads(text)
    else:
        import yaml  # only needed for YAML rules files

        doc = yaml.safe_load(text)
    return rules_from_document(doc)


class Evaluator(Task):
    name = "analytics"

    def __init__(
        self,
        config,
        client: redis.Redis,
        keys,
        socketio=None,
        *,
        worker=None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
    ):
        self.settings = s = AnalyticsSettings.from_config(config)
        self.analytics = AnalyticsStore(
            client,
            keys,
            keep_closed=s.keep_closed,
            rules_max=s.rules_max,
            default_rules=s.default_rules,
            parts=Partitioning.from_config(config).all_keys(keys),
        )
        self.socketio = socketio
        self.worker = worker
        self.clock = clock
        super().__init__(sleep or (socketio.sleep if socketio is not None else time.sleep))
        self.webhook = (
            WebhookSender(
                s.webhook_url,
                timeout_s=s.webhook_timeout_s,
                attempts=s.webhook_attempts,
                backoff_s=s.webhook_backoff_s,
                backoff_max_s=s.webhook_backoff_max_s,
                queue_max=s.webhook_queue,
                sleep=self.sleep,
            )
            if s.webhook_url
            else None
        )
        # tags whose values get anomaly watches of their own (needs the top-N counters)
        self.tags = s.anomaly_tags if s.anomalies and s.top_max_tag_values > 0 else ()
        self.engine: Engine | None = None
        self.next_second: int | None = None
        self.recent: deque[dict] = deque(maxlen=s.window_s)
        # counts of the plain metrics for rules with a longer window_s; twice the longest, for the
        # "was it flowing before" guard of rules on a drop in rate
        self.counts = CountHistory(2 * MAX_WINDOW_S)
        self.ids: dict[str, str] = {}  # dedup key -> id of its open alert
        self.open_state: dict[str, tuple[str, str]] = {}  # dedup key -> (severity, state), for /metrics
        self._rules_raw: dict | None = None
        self.evaluated = 0  # seconds judged live
        self.published = 0  # alert changes pushed

    # --- lifecycle ---------------------------------------------------------------------------
    def leader(self) -> bool:
        """The process holding partition 0 evaluates (with one partition: the active worker)."""
        if self.worker is None:
            return True
        leader = getattr(self.worker, "leader", None)
        return leader if leader is not None else getattr(self.worker, "role", None) == "active"

    def stop(self) -> None:
        super().stop()
        if self.webhook is not None:
            self.webhook.stop()

    def loop(self) -> None:
        phase = self.settings.settle_s % 1.0 + 0.02  # tick just after a second becomes due
        while not self.stopping:
            self.tick()
            now = self.clock()
            next_at = math.floor(now - phase) + 1 + phase
            self.sleep(max(0.05, next_at - now))

    def tick(self) -> None:
        """One round: (re)activate if needed, then judge every second that became due."""
        try:
            if not self.leader():
                if self.engine is not None:
                    log.info("analytics: worker no longer active; evaluator standing by")
                    self.engine = None
                    self.open_state.clear()
                    self._export_open()
                    telemetry.ALERT_EVALUATOR_ACTIVE.set(0)
                return
            if self.engine is None:
                self.activate()
            else:
                self.catch_up()
            self.redis_ok()
        except redis.RedisError as exc:
            self.redis_failed(exc)  # and replay history when it is back:
            self.engine = None  # state may have missed seconds: rebuild it from Redis
        except Exception:
            log.exception("analytics: evaluator error")
            self.engine = None

    def due(self) -> int:
        """The newest second that ended at least settle_s ago."""
        return math.floor(self.clock() - self.settings.settle_s) - 1

    # --- activation: replay and reconcile ------------------------------------------------------
    def activate(self) -> None:
        s = self.settings
        if s.rules_file:
            try:
                stored, removed = self.analytics.replace_file_rules(load_rules_file(s.rules_file))
                log.info("analytics: %d rule(s) from %s (%d stale removed)", stored, s.rules_file, removed)
            except Exception as exc:  # unreadable, not YAML/JSON, or invalid rules: keep what is stored
                log.error("analytics: RULES_FILE %s not loaded: %s", s.rules_file, exc)
        due = self.due()
        engine = Engine(s.anomaly, clear_s=s.clear_s, anomalies=s.anomalies)
        self._rules_raw = self.analytics.raw_rules()
        engine.set_rules(self.analytics.parse_rules(self._rules_raw), float(due + 1))
        stored = self.analytics.open_alerts()
        to_adopt = sorted(
            ((_ts(a.get("opened_at")), key, a) for key, a in stored.items()), key=lambda item: item[0]
        )
        pending: dict[str, dict] = {}  # alerts open at the end of the replay, as the engine sees them
        resolved: dict[str, dict] = {}  # stored alerts whose condition cleared during the replay
        self.recent.clear()
        self.counts = CountHistory(2 * MAX_WINDOW_S)
        first = due - s.history_s + 1
        for chunk_start in range(first, due + 1, REPLAY_CHUNK_S):
            chunk = range(chunk_start, min(chunk_start + REPLAY_CHUNK_S, due + 1))
            for sec, h, th in self._seconds(chunk):
                t = float(sec + 1)
                while to_adopt and to_adopt[0][0] <= t:
                    opened, key, alert = to_adopt.pop(0)
                    if engine.adopt(key, opened, alert.get("severity") or "warning", alert.get("state")):
                        pending[key] = alert
                for tr in self._judge(engine, sec, h, th):
                    _track(pending, tr)
                    if tr.action == "close" and tr.key in stored:
                        resolved[tr.key] = tr.alert
            self.sleep(0)  # let the worker and the clients breathe between chunks
        for opened, key, alert in to_adopt:  # opened after the replayed history (clock skew)
            if engine.adopt(key, opened, alert.get("severity") or "warning", alert.get("state")):
                pending[key] = alert
        self.engine = engine
        self.next_second = due + 1
        self.ids = {}
        now_t = float(due + 1)
        open_now = engine.open_keys()
        self.open_state = {}
        for key, alert in stored.items():
            if key in open_now:
                self.ids[key] = alert["id"]
                self.open_state[alert["id"]] = (
                    alert.get("severity") or "warning",
                    alert.get("state") or "open",
                )
            else:
                fields = resolved.get(key) or {"closed_at": now_t, "message": _closed_meanwhile(alert)}
                self._close(key, alert["id"], fields)
        for key in sorted(open_now - stored.keys()):
            if key in pending:
                self._open(Transition("open", key, pending[key]))
        self._export_open()
        telemetry.ALERT_EVALUATOR_ACTIVE.set(1)
        log.info(
            "analytics: evaluator active; replayed %ds, %d rule(s), %d open alert(s)",
            s.history_s,
            len(engine.rules),
            len(self.ids),
        )

    # --- live ----------------------------------------------------------------------------------
    def catch_up(self) -> None:
        due = self.due()
        if due < self.next_second:
            return
        if due - self.next_second >= self.settings.history_s:
            self.engine = None  # fell too far behind (a long stall): rebuild from history
            self.activate()
            return
        self.sync_rules(float(self.next_second))
        seconds = range(self.next_second, due + 1)
        for sec, h, th in self._seconds(seconds):
            self.apply(self._judge(self.engine, sec, h, th))
            self.evaluated += 1
            telemetry.ALERT_EVALUATIONS.inc()

    def sync_rules(self, t: float) -> None:
        raw = self.analytics.raw_rules()
        if raw == self._rules_raw:
            return
        self._rules_raw = raw
        self.apply(self.engine.set_rules(self.analytics.parse_rules(raw), t))

    def _seconds(self, seconds: range):
        """(second, bucket hash, per-tag hash or {}) for each second, in one round trip."""
        pairs = self.analytics.second_hashes(seconds, tags=bool(self.tags))
        return ((sec, h, th) for sec, (h, th) in zip(seconds, pairs, strict=True))

    def _judge(self, engine: Engine, sec: int, h: dict, th: dict) -> list[Transition]:
        stats = WindowStats.from_hashes([h]).metrics if h else {}
        self.counts.push(stats)
        if th:
            stats = {**stats, **tag_series(th, self.tags)}
        self.recent.append(stats)
        self.next_second = sec + 1
        return engine.step(float(sec + 1), Frame(self.recent, self.settings.window_s), self.counts)

    # --- alert changes ---------------------------------------------------------------------------
    def apply(self, transitions: list[Transition]) -> None:
        for tr in transitions:
            if tr.action == "open":
                self._open(tr)
            elif tr.action == "update":
                alert_id = self.ids.get(tr.key)
                if alert_id is not None:
                    stored = self.analytics.update_alert(alert_id, {**tr.alert, "updated_at": _now_iso()})
                    if stored is not None:
                        self.publish("update", stored)
            else:
                alert_id = self.ids.pop(tr.key, None)
                if alert_id is not None:
                    self._close(tr.key, alert_id, tr.alert)

    def _open(self, tr: Transition) -> None:
        fields = dict(tr.alert)
        opened = _ts(fields.get("opened_at"))
        fields.update(
            state=fields.get("state") or "open",
            opened_at=iso_ms(opened),
            closed_at=None,
            updated_at=_now_iso(),
            acked=False,
            acked_at=None,
        )
        fields.pop("id", None)
        alert_id, created = self.analytics.open_alert(tr.key, fields, opened)
        self.ids[tr.key] = alert_id
        if created:
            self.publish("open", {**fields, "id": alert_id})

    def _close(self, key: str, alert_id: str, fields: dict) -> None:
        closed = _ts(fields.get("closed_at"))
        update = {**fields, "closed_at": iso_ms(closed), "updated_at": _now_iso()}
        stored = self.analytics.close_alert(alert_id, key, update, closed)
        if stored is not None:
            self.publish("close", stored)

    def publish(self, event: str, alert: dict) -> None:
        alert = public(alert)
        self.published += 1
        telemetry.ALERT_CHANGES.labels(event).inc()
        self._count_open(event, alert)
        log.info("alert %s: %s", event, alert.get("message"))
        if self.socketio is not None:
            self.socketio.emit("alert", alert)
        if self.webhook is not None and event in ("open", "close"):
            self.webhook.notify(event, alert)

    def _count_open(self, event: str, alert: dict) -> None:
        """Keep pulseboard_alerts_open{severity,state} in step with what this evaluator published."""
        alert_id = alert.get("id")
        if alert_id is None:
            return
        if event == "close" or alert.get("state") == "closed":
            self.open_state.pop(alert_id, None)
        else:
            self.open_state[alert_id] = (alert.get("severity") or "warning", alert.get("state") or "open")
        self._export_open()

    def _export_open(self) -> None:
        counts = {(sev, st): 0 for sev in ("warning", "critical") for st in ("open", "nodata")}
        for pair in self.open_state.values():
            if pair in counts:
                counts[pair] += 1
        for (sev, st), n in counts.items():
            telemetry.ALERTS_OPEN.labels(sev, st).set(n)

    def status(self) -> dict:
        return {
            "active": self.engine is not None,
            "next_second": self.next_second,
            "evaluated": self.evaluated,
            "published": self.published,
            "open_alerts": len(self.ids),
        }


def _track(pending: dict[str, dict], tr: Transition) -> None:
    if tr.action == "open":
        pending[tr.key] = dict(tr.alert)
    elif tr.action == "update" and tr.key in pending:
        pending[tr.key].update(tr.alert)
    elif tr.action == "close":
        pending.pop(tr.key, None)


def _ts(value) -> float:
    """An alert time (unix seconds, or our ISO text) as unix seconds."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            pass
    return time.time()


def _now_iso() -> str:
    return iso_ms(time.time())


def _closed_meanwhile(alert: dict) -> str:
    what = alert.get("rule") or f"{alert.get('metric')} {alert.get('signal')}"
    return f"{what}: no longer holds (judged again when the evaluator started)"
