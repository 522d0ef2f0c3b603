"""The Lua scripts of the write path and the worker lease, and the encoding of a batch's aggregate
updates for the write script. A script runs to its end once Redis has it: a batch is applied all
or nothing, whatever happens to the worker that sent it."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain

from backend.core.aggregate import BucketDelta

# The whole batch in one script: one round trip, applied all or nothing (a script runs to the end
# once Redis has it, whatever happens to the worker that sent it), sequence numbers included.
#
# KEYS: 1 recent list, 2 dead-letter list, 3 stats hash, 4 seq counter, 5 lease, 6 stream,
#       7 known-metrics set, 8 history stream, then the per-metric recent lists, then the buckets.
# ARGV: a header of counts, then sections in this order (see _BatchArgs):
#   [1] fence token ('' = no fence)  [2] events in the batch  [3] seq seed  [4] recent max
#   [5] dead-letter max  [6] received  [7] stream group  [8] retention-ish TTL of metric lists
#   [9] #pieces  [10] #metric lists  [11] #dead letters  [12] #reasons  [13] #acks  [14] #buckets
#   [15] #new metrics  [16] per-metric recent max  [17] fan-out channel ('' = none)
#   [18] the batch's events' JSON without seq, newline-separated, published on [17] after the
#        first seq and a newline: web nodes number the events themselves (first + offset); the
#        lists' pieces are cut from it too
#   [19] '1': also append [18] to the history stream as entry <first seq>-0 (resync after gaps)
#   [20] seq stride P and [21] partition k (INGEST_PARTITIONS): the counter counts this
#        partition's events; event n of it has seq n * P + k, unique over all partitions, and the
#        fan-out header is `<first>,<P>` when P > 1
#   [22] '1': the batch writes into a second that ended more than LATE_WRITE_S ago (core/layout):
#        the stats hash's `late` counter goes up, so readers stop trusting settled seconds
#   pieces: ONE msgpack array of the offsets (in the batch, ascending) of the events the lists
#     need; piece p is line want[p] of [18], numbered
#   metric lists: ONE msgpack array of (#pieces of this list, piece index ...) per list, KEYS order
#   dead letters (JSON) ... ; reasons: (reason, count) ... ; ack ids ... ; new metric names ...
#   buckets: TTLs (one per bucket), then ONE argument: a msgpack array holding, per bucket in
#     KEYS order, the counts ni, nf, nn, nx and then field, value pairs: ni to HINCRBY, nf to
#     HINCRBYFLOAT, nn to keep the minimum of, nx to keep the maximum of. One msgpack blob
#     instead of arguments per op: a batch of late events has ~60 ops an event, and packing them
#     as separate arguments cost more than the script; grouped per bucket and kind, the script
#     looks up neither the key nor the kind per op (a third less Lua time than one
#     (bucket, op, field, value) group per op).
# Returns the batch's first seq, or -1 when the fence token no longer holds the lease.
WRITE_BATCH_LUA = """
local token = ARGV[1]
if token ~= '' and redis.call('GET', KEYS[5]) ~= token then
  return -1
end
local nevents = tonumber(ARGV[2])
local first = 0
if nevents > 0 then
  -- A new counter starts at the clock (microseconds), so seqs keep increasing even when Redis
  -- loses its data: clients deduplicating by seq would otherwise drop new events as seen.
  redis.call('SET', KEYS[4], ARGV[3], 'NX')
  first = redis.call('INCRBY', KEYS[4], nevents) - nevents + 1
end
local stride = tonumber(ARGV[20])
first = first * stride + tonumber(ARGV[21])
local npieces, nlists, ndead = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local nreasons, nacks, nbuckets = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local nnew = tonumber(ARGV[15])
local i = 23
local pieces = {}
if npieces > 0 then
  -- The wanted events (offsets, ascending) are lines of the batch's JSON: an event's JSON never
  -- holds a raw newline (JSON escapes it inside strings).
  local blob, want = ARGV[18], cmsgpack.unpack(ARGV[i])
  local pos, line = 1, 0
  for p = 1, npieces do
    local target = want[p]
    while line < target do
      pos = string.find(blob, '\\n', pos, true) + 1
      line = line + 1
    end
    local stop = string.find(blob, '\\n', pos, true) or (#blob + 1)
    pieces[p] = '{"seq":' .. string.format('%d', first + target * stride) .. ',' .. string.sub(blob, pos + 1, stop - 1)
    pos, line = stop + 1, line + 1
  end
end
local listed = nlists > 0 and cmsgpack.unpack(ARGV[i + 1]) or {}
i = i + 2
local function push(key, items, limit)
  for c = 1, #items, 1000 do
    redis.call('LPUSH', key, unpack(items, c, math.min(c + 999, #items)))
  end
  redis.call('LTRIM', key, 0, limit - 1)
end
if npieces > 0 then
  local recent_max = tonumber(ARGV[4])
  local from = math.max(1, npieces - recent_max + 1)
  local newest = {}
  for p = from, npieces do newest[#newest + 1] = pieces[p] end
  push(KEYS[1], newest, recent_max)
end
local per_metric = tonumber(ARGV[16])
local q = 1
for l = 1, nlists do
  local n = listed[q]
  local items = {}
  for p = 1, n do items[p] = pieces[listed[q + p]] end
  q = q + n + 1
  local key = KEYS[8 + l]
  push(key, items, per_metric)
  redis.call('EXPIRE', key, ARGV[8])
end
if ndead > 0 then
  local items = {}
  for d = 1, ndead do items[d] = ARGV[i + d - 1] end
  i = i + ndead
  push(KEYS[2], items, tonumber(ARGV[5]))
end
local rejected = 0
for r = 1, nreasons do
  local n = tonumber(ARGV[i + 1])
  redis.call('HINCRBY', KEYS[3], 'rejected:' .. ARGV[i], n)
  rejected = rejected + n
  i = i + 2
end
if rejected > 0 then redis.call('HINCRBY', KEYS[3], 'rejected', rejected) end
redis.call('HINCRBY', KEYS[3], 'received', ARGV[6])
redis.call('HINCRBY', KEYS[3], 'accepted', nevents)
if ARGV[22] == '1' then redis.call('HINCRBY', KEYS[3], 'late', 1) end
for c = 0, nacks - 1, 1000 do
  redis.call('XACK', KEYS[6], ARGV[7], unpack(ARGV, i + c, i + math.min(c + 999, nacks - 1)))
end
i = i + nacks
for c = 0, nnew - 1, 1000 do
  redis.call('SADD', KEYS[7], unpack(ARGV, i + c, i + math.min(c + 999, nnew - 1)))
end
i = i + nnew
local base = 8 + nlists
local ttl_at = i
i = i + nbuckets
local ops = cmsgpack.unpack(ARGV[i])
local p = 1
for b = 1, nbuckets do
  local k = KEYS[base + b]
  local ni, nf, nn, nx = ops[p], ops[p + 1], ops[p + 2], ops[p + 3]
  p = p + 4
  for q = p, p + 2 * ni - 1, 2 do
    redis.call('HINCRBY', k, ops[q], ops[q + 1])
  end
  p = p + 2 * ni
  for q = p, p + 2 * nf - 1, 2 do
    -- A sum that overflows a double is flagged (field <sum field>o) instead of aborting the
    -- batch halfway (a script does not roll back); readers report it as an overflow.
    local r = redis.pcall('HINCRBYFLOAT', k, ops[q], ops[q + 1])
    if type(r) == 'table' and r.err then
      redis.call('HSET', k, ops[q] .. 'o', '1')
    end
  end
  p = p + 2 * nf
  for q = p, p + 2 * (nn + nx) - 1, 2 do
    local f, v = ops[q], ops[q + 1]
    local cur = redis.call('HGET', k, f)
    if not cur or (q < p + 2 * nn and tonumber(v) < tonumber(cur)) or (q >= p + 2 * nn and tonumber(v) > tonumber(cur)) then
      redis.call('HSET', k, f, v)
    end
  end
  p = p + 2 * (nn + nx)
  redis.call('EXPIRE', k, ARGV[ttl_at + b - 1])
end
if ARGV[19] == '1' and nevents > 0 then
  -- pcall: an id not above the last one (two workers racing through a failover) skips the
  -- entry instead of failing the batch after its other writes.
  redis.pcall('XADD', KEYS[8], string.format('%d', first) .. '-0', 'e', ARGV[18])
end
if ARGV[17] ~= '' and nevents > 0 then
  local head = string.format('%d', first)
  if stride > 1 then
    head = head .. ',' .. ARGV[20]
  end
  redis.call('PUBLISH', ARGV[17], head .. '\\n' .. ARGV[18])
end
return first
"""

# Compare-and-extend / compare-and-delete, so a worker can never renew or drop another's lease.
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
  return 1
end
return 0
"""

# Take the lease over from a holder known to be dead (compare-and-set on its token).
TAKEOVER_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def encode_deltas(deltas: Mapping[tuple[int, int], BucketDelta], key_of, retention_s: int, now: float):
    """Bucket key names, their TTLs (from `now`, unix seconds) and the write script's ops for
    `deltas` (the layout above); `key_of(resolution, start)` names each hash."""
    key_names: list[str] = []
    ttls: list[int] = []
    ops: list = []
    for (res, start), delta in deltas.items():
        key_names.append(key_of(res, start))
        # A bucket lives for the retention after its interval ends.
        ttls.append(max(1, int(start + res + retention_s - now)))
        ops += (len(delta.incr), len(delta.incr_float), len(delta.mins), len(delta.maxs))
        ops += chain.from_iterable(delta.incr.items())  # field, value, ...: flattened in C
        for floats in (delta.incr_float, delta.mins, delta.maxs):
            for field, value in floats.items():
                ops += (field, repr(float(value)))
    return key_names, ttls, ops
