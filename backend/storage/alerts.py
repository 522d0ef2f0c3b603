"""Rules and alerts in Redis, and the bucket reads analytics needs. Shared by every node.

Rules: one hash, rule id -> the rule's JSON (as_dict()).

Alerts: one hash per alert (``alert:<id>``, field -> JSON value, so an ack and a close touching
different fields can never overwrite each other), a sorted set of open ids (by opened_at), one of
closed ids (by closed_at, trimmed to ALERTS_KEEP_CLOSED, the trimmed hashes deleted), and
``alerts:by-key``: what an open alert is about -> its id, which makes opening idempotent: two
evaluators (a failover's overlap) opening the same condition get the same alert.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping

import orjson
import redis

from backend.analytics import defaults
from backend.analytics.rules import Rule, RuleError, rule_from_stored
from backend.core.layout import COUNT_MATCH, K_COUNT, parse_name
from backend.core.timefmt import iso_ms
from backend.core.window import TagStats, merge_raw_hashes, plan_window
from backend.storage.keys import Keys

log = logging.getLogger(__name__)

# KEYS: by-key hash, open zset. ARGV: dedup key, new id, alert key prefix, opened_at score,
# then field/JSON pairs. Returns {id, 1 if created else 0}.
_OPEN_LUA = """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing and redis.call('EXISTS', ARGV[3] .. existing) == 1 then
  return {existing, 0}
end
local id = ARGV[2]
local key = ARGV[3] .. id
for i = 5, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], ARGV[1], id)
redis.call('ZADD', KEYS[2], ARGV[4], id)
return {id, 1}
"""

# KEYS: the alert hash. ARGV: field/JSON pairs. Sets them only if the alert exists (and, with
# ARGV[1] == 'open', only while it is open). Returns the hash (HGETALL) or nil.
_UPDATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return nil
end
if ARGV[1] == 'open' then
  local state = redis.call('HGET', KEYS[1], 'state')
  if state ~= '"open"' and state ~= '"nodata"' then
    return nil
  end
end
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: alert hash, open zset, closed zset, by-key hash. ARGV: id, dedup key, closed_at score,
# keep, alert key prefix, then field/JSON pairs. Returns the closed alert's hash, or nil when it
# does not exist or was closed already.
_CLOSE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'state') == '"closed"' then
  return nil
end
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'state', '"closed"')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if redis.call('HGET', KEYS[4], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[4], ARGV[2])
end
local out = redis.call('HGETALL', KEYS[1])
local extra = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[4])
if extra > 0 then
  local old = redis.call('ZRANGE', KEYS[3], 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, extra - 1)
  for _, id in ipairs(old) do
    redis.call('DEL', ARGV[5] .. id)
  end
end
return out
"""

# KEYS: rules hash. ARGV: id, JSON, max. Returns 1 created, 0 replaced, -1 full.
_PUT_RULE_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 0
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class RulesFull(Exception):
    pass


def _pairs(fields: Mapping) -> list:
    out: list = []
    for k, v in fields.items():
        out += (k, orjson.dumps(v))
    return out


def _decode_alert(raw) -> dict | None:
    if not raw:
        return None
    if isinstance(raw, list):  # a Lua HGETALL: flat name/value list
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    out = {}
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else k
        try:
            out[key] = orjson.loads(v)
        except orjson.JSONDecodeError:
            out[key] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    return out if "id" in out else None


class AnalyticsStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        keep_closed: int = 500,
        rules_max: int = 200,
        default_rules: bool = False,
        parts: list[Keys] | None = None,
    ):
        self.default_rules = default_rules  # merge the built-in rules into rules()/parse_rules()
        self.redis = client
        self.keys = keys
        self.parts = parts or [keys]  # every partition's keys: bucket reads merge them
        self.keep_closed = keep_closed
        self.rules_max = rules_max
        self._alert_prefix = keys.alert("")
        self._open = client.register_script(_OPEN_LUA)
        self._update = client.register_script(_UPDATE_LUA)
        self._close = client.register_script(_CLOSE_LUA)
        self._put_rule = client.register_script(_PUT_RULE_LUA)

    # --- rules ---------------------------------------------------------------------------------
    def raw_rules(self) -> dict[bytes, bytes]:
        return self.redis.hgetall(self.keys.rules)

    def parse_rules(self, raw: Mapping) -> list[Rule]:
        """The stored rules, and the built-in ones not overridden (with default_rules)."""
        rules = []
        for rule_id, data in sorted(raw.items()):
            try:
                rules.append(rule_from_stored(orjson.loads(data)))
            except (orjson.JSONDecodeError, RuleError) as exc:
                log.warning("ignoring stored rule %r: %s", rule_id, exc)
        return defaults.merge(rules, enabled=self.default_rules)

    def stored_rule(self, rule_id: str) -> Rule | None:
        data = self.redis.hget(self.keys.rules, rule_id)
        if data is None:
            return None
        try:
            return rule_from_stored(orjson.loads(data))
        except (orjson.JSONDecodeError, RuleError):
            return None

    def rules(self) -> list[Rule]:
        return self.parse_rules(self.raw_rules())

    def put_rule(self, rule: Rule) -> bool:
        """Store a rule; True when it is new, False when it replaced one. RulesFull at the limit."""
        body = {**rule.as_dict(), "updated_at": iso_ms(time.time())}
        result = int(
            self._put_rule(keys=[self.keys.rules], args=[rule.id, orjson.dumps(body), self.rules_max])
        )
        if result < 0:
            raise RulesFull(f"there are {self.rules_max} rules already (RULES_MAX)")
        return result == 1

    def delete_rule(self, rule_id: str) -> bool:
        return bool(self.redis.hdel(self.keys.rules, rule_id))

    def replace_file_rules(self, rules: Iterable[Rule]) -> tuple[int, int]:
        """Make the stored file rules exactly `rules`; API rules stay. Returns (stored, removed)."""
        rules = list(rules)
        wanted = {r.id for r in rules}
        removed = 0
        for rule in self.rules():
            if rule.source == "file" and rule.id not in wanted:
                removed += self.delete_rule(rule.id)
        stamp = iso_ms(time.time())
        if rules:
            self.redis.hset(
                self.keys.rules,
                mapping={r.id: orjson.dumps({**r.as_dict(), "updated_at": stamp}) for r in rules},
            )
        return len(rules), removed

    # --- alerts --------------------------------------------------------------------------------
    def open_alert(self, key: str, alert: dict, opened_ts: float) -> tuple[str, bool]:
        """Open an alert about `key` unless one is open already: (its id, created)."""
        new_id = alert.get("id") or uuid.uuid4().hex[:16]
        fields = {**alert, "id": new_id, "key": key}
        alert_id, created = self._open(
            keys=[self.keys.alerts_by_key, self.keys.alerts_open],
            args=[key, new_id, self._alert_prefix, opened_ts, *_pairs(fields)],
        )
        return alert_id.decode() if isinstance(alert_id, bytes) else alert_id, bool(created)

    def update_alert(self, alert_id: str, fields: Mapping, *, only_open: bool = True) -> dict | None:
        raw = self._update(
            keys=[self.keys.alert(alert_id)], args=["open" if only_open else "any", *_pairs(fields)]
        )
        return _decode_alert(raw)

    def close_alert(self, alert_id: str, key: str, fields: Mapping, closed_ts: float) -> dict | None:
        raw = self._close(
            keys=[
                self.keys.alert(alert_id),
                self.keys.alerts_open,
                self.keys.alerts_closed,
                self.keys.alerts_by_key,
            ],
            args=[alert_id, key, closed_ts, self.keep_closed, self._alert_prefix, *_pairs(fields)],
        )
        return _decode_alert(raw)

    def ack(self, alert_id: str, when: float) -> dict | None:
        return self.update_alert(alert_id, {"acked": True, "acked_at": iso_ms(when)}, only_open=False)

    def get(self, alert_id: str) -> dict | None:
        return _decode_alert(self.redis.hgetall(self.keys.alert(alert_id)))

    def _many(self, ids: list) -> list[dict]:
        pipe = self.redis.pipeline(transaction=False)
        for alert_id in ids:
            pipe.hgetall(self.keys.alert(alert_id.decode() if isinstance(alert_id, bytes) else alert_id))
        return [a for a in (_decode_alert(raw) for raw in pipe.execute()) if a is not None]

    def list(self, state: str, limit: int) -> list[dict]:
        """Newest first; state "all" lists the open ones before the closed ones."""
        ids: list = []
        if state in ("open", "all"):
            ids += self.redis.zrevrange(self.keys.alerts_open, 0, limit - 1)
        if state in ("closed", "all") and len(ids) < limit:
            ids += self.redis.zrevrange(self.keys.alerts_closed, 0, limit - len(ids) - 1)
        return self._many(ids)

    def open_alerts(self) -> dict[str, dict]:
        """Every open alert, by dedup key."""
        by_key = self.redis.hgetall(self.keys.alerts_by_key)
        alerts = self._many(list(by_key.values()))
        return {a["key"]: a for a in alerts if a.get("state") == "open" and "key" in a}

    # --- bucket reads ----------------------------------------------------------------------------
    def second_hashes(self, seconds: Iterable[int], *, tags: bool = False) -> list[tuple[dict, dict]]:
        """(bucket hash, per-tag hash) of each per-second bucket, in one round trip; the per-tag
        hash is only read with `tags` ({} otherwise)."""
        parts = self.parts
        pipe = self.redis.pipeline(transaction=False)
        for s in seconds:
            for keys in parts:
                pipe.hgetall(keys.bucket(1, s))
                if tags:
                    pipe.hgetall(keys.tag_bucket(1, s))
        replies = pipe.execute()
        per = len(parts) * (2 if tags else 1)
        out = []
        for i in range(0, len(replies), per):
            group = replies[i : i + per]
            if tags:
                out.append((merge_raw_hashes(group[::2]), merge_raw_hashes(group[1::2])))
            else:
                out.append((merge_raw_hashes(group), {}))
        return out

    def tag_window(
        self, window_s: int, *, by: str, metric: str | None, field: str | None, now: float | None = None
    ) -> tuple[int, TagStats]:
        """Per-tag counters of `by` over the window ending with the current second: (to_s, stats)."""
        to_s = int(now if now is not None else time.time()) + 1
        plan = plan_window(to_s, window_s)
        pipe = self.redis.pipeline(transaction=False)
        for res, start in plan:
            for keys in self.parts:
                pipe.hgetall(keys.tag_bucket(res, start))
        stats = TagStats(by, metric=metric, field=field)
        for h in pipe.execute():
            if h:
                stats.merge_hash(h)
        return to_s, stats

    def count_series(self, starts: list[int], res: int) -> dict[str, list[int]]:
        """Events per metric in each bucket: metric -> one count per start (0 when absent).

        HSCAN with MATCH filters the counters out server-side, so the sketches are never sent."""
        pipe = self.redis.pipeline(transaction=False)
        buckets = [(i, keys.bucket(res, start)) for i, start in enumerate(starts) for keys in self.parts]
        for _, key in buckets:
            pipe.hscan(key, 0, match=COUNT_MATCH, count=1_000_000)
        out: dict[str, list[int]] = {}
        for (i, key), (cursor, found) in zip(buckets, pipe.execute(), strict=True):
            entries = dict(found)
            while int(cursor):  # a very large hash can take more than one call
                cursor, more = self.redis.hscan(key, cursor, match=COUNT_MATCH)
                entries.update(more)
            for raw, n in entries.items():
                parsed = parse_name(raw)
                if parsed is None:
                    continue
                metric, _, kind, _ = parsed
                if kind != K_COUNT:
                    continue
                try:
                    count = int(n)
                except (TypeError, ValueError):
                    continue
                series = out.get(metric)
                if series is None:
                    series = out[metric] = [0] * len(starts)
                series[i] += count
        return out
