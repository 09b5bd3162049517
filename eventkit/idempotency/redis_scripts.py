"""The Lua scripts of ``RedisIdempotencyStore``: every R4 state transition, atomic in Redis.

Key layout: one hash per idempotency key, at ``storage_key(key)``, with the fields of the
in-memory store's entry::

    tok   lease token (absent when no lease was taken or it was completed or released)
    ld    lease deadline, ms on the Redis server's clock
    ll    the length the lease was claimed for, ms (a handler start renews it to that)
    att   handler starts counted (attempts), a prepaid one included
    pp    token of the lease whose claim prepaid the first start, until a start, DONE or
          release settles it (left by an expired lease: that start is uncertain)
    rid   replay id of the lease (absent for an original delivery)
    rt    until when a free key keeps its attempts, ms (lease end + attempts TTL)
    out   outcome once done: ``handled`` or ``dead_lettered``
    ph    payload hash recorded with the outcome
    dd    done deadline, ms
    r:ID  one field per completed replay id ``ID``

Completed replays live in the same hash, not in a second key: one key per event needs no
hash tag (``storage_key`` has none), cannot half-expire, and goes with one ``PEXPIREAT``.

Time is ``redis.call('TIME')``, never a client's clock (Redis 7 replicates script effects, so
TIME is allowed before writes). A key's state is derived from the deadlines exactly as
``memory._Entry`` does; each script then sets ``PEXPIREAT`` to the moment the in-memory store
would drop the entry (or deletes it), so Redis forgets keys when the in-memory store would.
"""

from __future__ import annotations

# Shared by every script: the clock, reading an entry, its state and its expiry.
_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- integers as digits: Lua numbers are doubles and must never be sent in exponent form
local function int(n)
  return string.format('%.0f', n)
end

local function load(key)
  local v = redis.call('HMGET', key, 'tok', 'ld', 'att', 'rid', 'rt', 'out', 'ph', 'dd', 'pp')
  return {
    found = (v[1] or v[2] or v[3] or v[4] or v[5] or v[6] or v[7] or v[8] or v[9]) and true
      or false,
    tok = v[1], ld = tonumber(v[2]) or 0, att = tonumber(v[3]) or 0, rid = v[4],
    rt = tonumber(v[5]) or 0, out = v[6], ph = v[7], dd = tonumber(v[8]) or 0, pp = v[9],
  }
end

local function fresh()
  return {found = false, tok = false, ld = 0, att = 0, rid = false, rt = 0, out = false,
          ph = false, dd = 0, pp = false}
end

-- the starts known to have happened: an unconfirmed prepaid start is not one
local function known(e)
  if e.pp then return e.att - 1 end
  return e.att
end

local function leased(e, now)
  return e.tok and now < e.ld
end

local function is_done(e, now)
  return e.out and now < e.dd
end

local function alive(e, now)
  if leased(e, now) then return true end
  -- a done record past its TTL takes the whole key with it, attempts and replays too
  if e.out then return now < e.dd end
  return e.att > 0 and now < e.rt
end

local function held(e, token, now)
  return e.tok == token and now < e.ld
end

-- the key lives exactly as long as alive() holds: until the latest deadline that keeps it
local function expire(key, e, now)
  local at = 0
  if e.tok then at = e.ld end
  if e.out then
    at = math.max(at, e.dd)
  elseif e.att > 0 then
    at = math.max(at, e.rt)
  end
  if at > now then
    redis.call('PEXPIREAT', key, int(at))
  else
    redis.call('DEL', key)
  end
end

-- the DONE mark of a live lease held by token (returns 0 if it holds none)
local function mark_done(key, token, out, ph, ttl, now)
  local e = load(key)
  if not held(e, token, now) then return 0, e end
  if e.rid then
    -- this replay id may never claim the key again
    redis.call('HSET', key, 'r:' .. e.rid, 1)
  end
  e.tok = false
  e.pp = false
  e.out = out
  e.dd = now + ttl
  redis.call('HDEL', key, 'tok', 'pp')
  redis.call('HSET', key, 'out', e.out, 'ph', ph, 'dd', int(e.dd))
  expire(key, e, now)
  return 1, e
end

-- one key of a claim: {1, attempts, prepaid} CLAIMED with token tok; {2, attempts, ms left}
-- BUSY; {3, attempts, outcome, payload hash} DUPLICATE
local function claim_key(key, replay, tok, lease, attempts_ttl, now)
  local e = load(key)
  if e.found and not alive(e, now) then
    redis.call('DEL', key)
    e = fresh()
  end
  if leased(e, now) then
    return {2, known(e), e.ld - now}
  end
  if is_done(e, now) and (not replay or e.out ~= 'dead_lettered'
      or redis.call('HEXISTS', key, 'r:' .. replay) == 1) then
    return {3, e.att, e.out, e.ph}
  end
  if is_done(e, now) and e.rid ~= replay then
    -- a new replay starts its own attempt count; the same replay after a crash keeps it
    e.att = 0
    e.pp = false
    redis.call('HDEL', key, 'pp')
  end
  local reported, prepaid = known(e), 0
  e.tok = tok
  e.ld = now + lease
  e.rt = e.ld + attempts_ttl
  if e.att == 0 then
    -- never started: the claim counts the first start now, provisionally
    e.att, e.pp, reported, prepaid = 1, tok, 0, 1
    redis.call('HSET', key, 'tok', tok, 'ld', int(e.ld), 'll', int(lease), 'att', 1,
               'rt', int(e.rt), 'pp', tok)
  else
    redis.call('HSET', key, 'tok', tok, 'ld', int(e.ld), 'll', int(lease), 'att', int(e.att),
               'rt', int(e.rt))
  end
  if replay then
    redis.call('HSET', key, 'rid', replay)
  elseif e.rid then
    redis.call('HDEL', key, 'rid')
  end
  expire(key, e, now)
  return {1, reported, prepaid}
end
"""

#: Write DONE marks, then claim a whole chunk, in one call.
#:
#: KEYS: the storage keys of the marks, then those of the claims in request order (a claimed
#: key may repeat: the second is BUSY).
#: ARGV[1]: lease, ms; ARGV[2]: attempts TTL, ms; ARGV[3]: the call's token secret;
#: ARGV[4]: the number of marks ``m``; ARGV[5]: the marks, four words each (token, outcome,
#: payload hash, done TTL in ms), every word followed by one space; ARGV[6]: one character
#: per claim, ``-`` for an original delivery or ``+`` for a replay, whose id is the next of
#: ARGV[7...] in order.
#: (Packed into few arguments: the client spends more per argument than the script does.)
#: Reply: ``{marks, claims}``: ``marks`` has 1 (done) or 0 (the token holds no live lease)
#: per mark; ``claims`` one array per key, in request order:
#: ``{1, attempts, prepaid}`` CLAIMED with token ``secret .. '-' .. (i - 1)``;
#: ``{2, attempts, ms left on the lease}`` BUSY;
#: ``{3, attempts, outcome, payload hash}`` DUPLICATE.
SETTLE = (
    _PRELUDE
    + """
local now = now_ms()
local lease = tonumber(ARGV[1])
local attempts_ttl = tonumber(ARGV[2])
local secret = ARGV[3]
local marks = tonumber(ARGV[4])
local recorded = {}
local i, words = 0, string.gmatch(ARGV[5], '([^ ]*) ')
while i < marks do
  i = i + 1
  local token, out, ph, ttl = words(), words(), words(), tonumber(words())
  recorded[i] = mark_done(KEYS[i], token, out, ph, ttl, now)
end
local kinds = ARGV[6]
local claims = {}
local replays = 6
for n = 1, #KEYS - marks do
  local replay = false
  if string.byte(kinds, n) == 43 then  -- '+'
    replays = replays + 1
    replay = ARGV[replays]
  end
  claims[n] = claim_key(KEYS[marks + n], replay, secret .. '-' .. (n - 1), lease, attempts_ttl,
                        now)
end
return {recorded, claims}
"""
)

#: Count one handler start under a live lease and renew the lease to its claimed length.
#:
#: KEYS[1]: the storage key; ARGV[1]: the lease token; ARGV[2]: attempts TTL, ms;
#: ARGV[3]: ``1`` if an earlier attempt ran on the claim's prepaid start, else ``0``.
#: Reply: the attempts including this start, or -1 if the token holds no live lease. The
#: start the claim prepaid is confirmed, not counted again, unless it was used already.
START = (
    _PRELUDE
    + """
local key = KEYS[1]
local now = now_ms()
local e = load(key)
if not held(e, ARGV[1], now) then return -1 end
-- a key claimed ahead may start late in its lease: the handler gets a whole one
local claimed_for = tonumber(redis.call('HGET', key, 'll')) or 0
if claimed_for > 0 then
  e.ld = now + claimed_for
  e.rt = e.ld + tonumber(ARGV[2])
  redis.call('HSET', key, 'ld', int(e.ld), 'rt', int(e.rt))
end
if e.pp ~= ARGV[1] or ARGV[3] == '1' then
  -- a start of its own; an uncertain prepaid start of an expired lease is charged from now on
  e.att = redis.call('HINCRBY', key, 'att', 1)
end
if e.pp then
  e.pp = false
  redis.call('HDEL', key, 'pp')
end
expire(key, e, now)
return e.att
"""
)

#: Extend a live lease.
#:
#: KEYS[1]: the storage key; ARGV[1]: the lease token; ARGV[2]: lease, ms;
#: ARGV[3]: attempts TTL, ms.
#: Reply: 1 if renewed, 0 if the token holds no live lease.
RENEW = (
    _PRELUDE
    + """
local key = KEYS[1]
local now = now_ms()
local e = load(key)
if not held(e, ARGV[1], now) then return 0 end
e.ld = now + tonumber(ARGV[2])
e.rt = e.ld + tonumber(ARGV[3])
redis.call('HSET', key, 'ld', int(e.ld), 'rt', int(e.rt))
expire(key, e, now)
return 1
"""
)

#: Mark the key done with its outcome, ending the lease.
#:
#: KEYS[1]: the storage key; ARGV[1]: the lease token; ARGV[2]: the outcome (``handled`` or
#: ``dead_lettered``, checked by the client); ARGV[3]: the payload hash; ARGV[4]: done TTL, ms.
#: Reply: 1 if done, 0 if the token holds no live lease.
COMPLETE = (
    _PRELUDE
    + """
local done = mark_done(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), now_ms())
return done
"""
)

#: Give a live lease up, keeping the attempts (a replay lease leaves the key done).
#:
#: KEYS[1]: the storage key; ARGV[1]: the lease token; ARGV[2]: attempts TTL, ms;
#: ARGV[3]: ``1`` if the handler ran on the claim's prepaid start, else ``0`` (an
#: unconfirmed prepaid start is then taken back).
#: Reply: 1 if released, 0 if the token holds no live lease.
RELEASE = (
    _PRELUDE
    + """
local key = KEYS[1]
local now = now_ms()
local e = load(key)
if not held(e, ARGV[1], now) then return 0 end
if e.pp == ARGV[1] then
  e.pp = false
  redis.call('HDEL', key, 'pp')
  if ARGV[3] ~= '1' then
    e.att = e.att - 1
    redis.call('HSET', key, 'att', int(e.att))
  end
end
e.tok = false
e.rt = now + tonumber(ARGV[2])
redis.call('HDEL', key, 'tok')
redis.call('HSET', key, 'rt', int(e.rt))
-- a key released before any start is deleted here: nothing is left to remember
expire(key, e, now)
return 1
"""
)

#: Apply an atomic-effect handler's staged writes and mark the key done as ``handled``, as
#: one unit: the token is checked first, then every write is checked against what the keys
#: hold (types and counters, simulated in order) before the first write, since Redis never
#: rolls a script back; a refused batch writes nothing.
#:
#: KEYS[1]: the storage key; KEYS[2..]: the keys the writes touch.
#: ARGV[1]: the lease token; ARGV[2]: the payload hash; ARGV[3]: done TTL, ms; then one group
#: per write, in order: the command, the index of its key in KEYS, the argument count ``n``,
#: and ``n`` arguments.
#: Reply: 1 if applied and done, 0 if the token holds no live lease (nothing applied); an
#: error reply starting ``EFFECTS`` if the writes were refused (nothing applied).
COMPLETE_WITH_EFFECTS = (
    _PRELUDE
    + """
local MAX = 9007199254740991
-- the type each command needs its key to have, or to be missing
local NEEDS = {INCRBY = 'string', HSET = 'hash', HINCRBY = 'hash', HDEL = 'hash',
               SADD = 'set', SREM = 'set', RPUSH = 'list', LPUSH = 'list',
               SET = false, DEL = false, PEXPIRE = false}

local function integer(x)
  if not x then return 0 end
  if string.len(x) > 17 then return nil end
  if x ~= '0' and not string.match(x, '^-?[1-9]%d*$') then return nil end
  local n = tonumber(x)
  if n > MAX or n < -MAX then return nil end
  return n
end

local function refuse(why)
  return redis.error_reply('EFFECTS ' .. why)
end

local key = KEYS[1]
local now = now_ms()
local e = load(key)
if not held(e, ARGV[1], now) then return 0 end

-- decode the writes
local writes = {}
local i = 4
while i <= #ARGV do
  local cmd, k, n = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  if NEEDS[cmd] == nil then return refuse('command not allowed: ' .. cmd) end
  if not k or k == key or not n or i + 2 + n > #ARGV then return refuse('malformed write') end
  local args = {}
  for j = 1, n do args[j] = ARGV[i + 2 + j] end
  writes[#writes + 1] = {cmd = cmd, key = k, args = args}
  i = i + 3 + n
end

-- check every write against the keys as the earlier writes leave them; nothing written yet
local state = {}
local function sim(k)
  local s = state[k]
  if not s then
    s = {t = redis.call('TYPE', k)['ok'], known = false, v = false, f = {}, cleared = false}
    state[k] = s
  end
  return s
end
local function value(k, s)
  if not s.known then
    if s.t == 'string' then s.v = redis.call('GET', k) else s.v = false end
    s.known = true
  end
  return s.v
end
local function field(k, s, name)
  local v = s.f[name]
  if v == nil then
    if s.t == 'hash' and not s.cleared then v = redis.call('HGET', k, name) else v = false end
    s.f[name] = v
  end
  return v
end
for _, w in ipairs(writes) do
  local s, a, cmd = sim(w.key), w.args, w.cmd
  local needs = NEEDS[cmd]
  if needs and s.t ~= needs and s.t ~= 'none' then
    return refuse('WRONGTYPE ' .. cmd .. ' on a ' .. s.t)
  end
  if cmd == 'SET' or cmd == 'DEL' then
    if cmd == 'SET' then
      if not (#a == 1 or (#a == 3 and a[2] == 'PX' and (integer(a[3]) or 0) > 0)) then
        return refuse('malformed SET')
      end
      s.t, s.v = 'string', a[1]
    else
      s.t, s.v = 'none', false
    end
    s.known, s.f, s.cleared = true, {}, true
  elseif cmd == 'PEXPIRE' then
    if #a ~= 1 or (integer(a[1]) or 0) <= 0 then return refuse('malformed PEXPIRE') end
  elseif cmd == 'INCRBY' then
    local cur, step = integer(value(w.key, s)), integer(a[1])
    if #a ~= 1 or not cur or not step then return refuse('INCRBY of no integer') end
    if math.abs(cur + step) > MAX then return refuse('INCRBY out of range') end
    s.t, s.v, s.known = 'string', int(cur + step), true
  elseif cmd == 'HINCRBY' then
    if #a ~= 2 then return refuse('malformed HINCRBY') end
    local cur, step = integer(field(w.key, s, a[1])), integer(a[2])
    if not cur or not step then return refuse('HINCRBY of no integer') end
    if math.abs(cur + step) > MAX then return refuse('HINCRBY out of range') end
    s.t, s.f[a[1]] = 'hash', int(cur + step)
  elseif cmd == 'HSET' then
    if #a < 2 or #a % 2 ~= 0 then return refuse('malformed HSET') end
    for j = 1, #a, 2 do s.f[a[j]] = a[j + 1] end
    s.t = 'hash'
  elseif #a < 1 then
    return refuse('malformed ' .. cmd)
  elseif cmd == 'HDEL' then
    -- the type stays: a hash emptied here may be gone, and the check stays strict
    for j = 1, #a do s.f[a[j]] = false end
  elseif cmd ~= 'SREM' then
    s.t = needs
  end
end

-- apply, then mark done exactly as COMPLETE does
for _, w in ipairs(writes) do
  redis.call(w.cmd, w.key, unpack(w.args))
end
return (mark_done(key, ARGV[1], 'handled', ARGV[2], tonumber(ARGV[3]), now))
"""
)

__all__ = ["COMPLETE", "COMPLETE_WITH_EFFECTS", "RELEASE", "RENEW", "SETTLE", "START"]
