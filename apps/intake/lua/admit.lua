-- Admit one request's leads in ONE round trip: every admission decision, atomically, next to
-- the state it depends on (leadflow/lua/token_bucket.lua is prepended: bucket_read, bucket_write,
-- bucket_take, now_seconds).
--
-- Request checks, in order (a refused request consumes nothing after the check that refused it):
--   per-IP token bucket inside the tenant (when the tenant sets one), then the tenant's
--   sliding window of requests (1 s).
-- Per lead, in order: dedup (a duplicate is answered with the original, whatever the limits);
--   the hourly budget; a critical credit (none left: demoted to normal); backpressure on the
--   lead's tier (the backlog ahead of it over its bound, or the tier closed by the controller
--   because its lag passed its bound); then accepted: pushed into its inbox.
--
-- Every key is in the tenant's shard (one Redis Cluster hash tag, leadflow/redis_keys.py).
-- KEYS[1..3]  inbox lists of this tenant: critical, normal, low
-- KEYS[4..6]  sets of tenants with waiting leads in this shard: critical, normal, low
-- KEYS[7]     the shard's hash: "<tier>" -> leads waiting in its inboxes, "claimed:<tier>" ->
--             leads ever claimed by the dispatcher (positions on GET); and the controller's copy
--             of the platform's state: "mode", "drain" (leads/s), "closed:<tier>" -> Retry-After
--             (s) of a tier it closed (lag over bound), "others:<tier>" -> the other shards'
--             waiting leads at its last tick (more than one shard)
-- KEYS[8]     zset: this tenant's requests in the last second (sliding window)
-- KEYS[9]     token bucket: this tenant's requests from this IP address
-- KEYS[10]    hash, this tenant's state: {hour, used} its leads accepted in the current clock
--             hour; {tokens, at} its critical credits (token bucket); "<hour>|<kind>" -> leads,
--             its receipt (apps/usage)
-- KEYS[11..]  per lead, in order: dedup key, trace key
-- ARGV[1] tenant id   ARGV[2] dedup TTL (s)   ARGV[3] lead count   ARGV[4] request id
-- ARGV[5] requests/s   ARGV[6] requests/s per IP (0 = no limit)   ARGV[7] critical capacity
-- ARGV[8] critical refill/s   ARGV[9] hourly budget   ARGV[10..12] backlog bounds per tier
-- ARGV[13] drain rate assumed before one is measured   ARGV[14] received_at (epoch s)
-- ARGV[15..]  per lead, in order: trace id, requested tier index (1..3), inbox entry with its
--             closing brace left off (the script completes it with the tier it decides),
--             fingerprint ("" without an Idempotency-Key)
--
-- Cost: the shard's and the tenant's state are each read with one HMGET and written with one
-- HINCRBY / HSET (and one HINCRBY per kind of answer, the receipt); a request of one lead runs
-- 15 commands, a batch two more per lead (its dedup and trace keys). What the script builds in
-- Lua costs as much as its commands: strings are made only where they are written.
--
-- A dedup key's value is "<trace id>|<tier index>" of the lead accepted first (trace id first:
-- erasure finds a key by it, apps/retention/erasure.py); for a lead sent with an
-- Idempotency-Key (a fingerprint) it goes on with what its answer was made of, so that a retry
-- gets the same answer back (admission.py `_repeat`):
--   "|<fingerprint>|<demoted 0/1>|<position>|<mode>|<drain rate>|<received_at>"
--
-- Returns {mode, refused limit or "", wait (s), drain rate, {one string per lead}}, a lead's
-- string being one of (a flat reply: cheaper to build and to parse than 7 fields a lead)
--   "1|<tier index>|<demoted 0/1>|<position>"            accepted (its trace id is the one sent)
--   "2|<the dedup key's value>"                           a repeat of a lead accepted before
--   "3|<tier index>|<demoted 0/1>|<limit>|<wait (s)>"    refused

local tenant = ARGV[1]
local ttl = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local names = {"critical", "normal", "low"}
local now = now_seconds()
local received_at = ARGV[14]
local hour = math.floor(now / 3600)
local shard_key, state_key = KEYS[7], KEYS[10]
local STATE_SECONDS = 259200  -- kept past a control outage of a day or two (the receipt)

local function refuse_request(limit, wait)
  -- After the limit's own write (bucket or window): with memory full, Redis refuses that one.
  -- The receipt counts every lead a refused request carried. The mode and drain rate are read
  -- only here, on the refusal's (rarer) path.
  redis.call("HINCRBY", state_key, hour .. "|" .. limit, count)  -- the receipt
  redis.call("EXPIRE", state_key, STATE_SECONDS)
  local shared = redis.call("HMGET", shard_key, "mode", "drain")
  local drain = math.max(tonumber(shared[2] or "") or tonumber(ARGV[13]), 0.001)
  return {shared[1] or "normal", limit, tostring(wait), tostring(drain), {}}
end

-- Per-IP limit inside the tenant (its own servers may legitimately send from one address).
local ip_rate = tonumber(ARGV[6])
if ip_rate > 0 then
  local allowed, wait = bucket_take(KEYS[9], ip_rate, ip_rate, 1, now)
  if not allowed then
    return refuse_request("ip_rate", wait)
  end
end

-- The tenant's sliding window: at most `rate` requests in any second. ZADD is the script's
-- first write when the tenant has no per-IP limit: Redis refuses a script with OOM at its first
-- write that may grow memory, and once a script has written, lets it write past maxmemory; so
-- the first write is one that may grow (ZADD, not ZREMRANGEBYSCORE), and with memory full the
-- request is refused whole (the API answers 503) instead of admitted past the limit.
local rate = tonumber(ARGV[5])
redis.call("ZADD", KEYS[8], now, ARGV[4])
redis.call("ZREMRANGEBYSCORE", KEYS[8], "-inf", now - 1)
if redis.call("ZCARD", KEYS[8]) > rate then
  redis.call("ZREM", KEYS[8], ARGV[4])
  local oldest = redis.call("ZRANGE", KEYS[8], 0, 0, "WITHSCORES")
  return refuse_request("tenant_rate", tonumber(oldest[2]) + 1 - now)
end
redis.call("EXPIRE", KEYS[8], 2)

-- The shard's state, at once: the mode, the drain rate, and per tier the leads waiting, the
-- other shards' waiting leads, the Retry-After of a closed tier and the leads ever claimed.
local shared = redis.call(
  "HMGET", shard_key, "mode", "drain",
  "critical", "normal", "low",
  "others:critical", "others:normal", "others:low",
  "closed:critical", "closed:normal", "closed:low",
  "claimed:critical", "claimed:normal", "claimed:low"
)
local mode = shared[1] or "normal"
local drain = math.max(tonumber(shared[2] or "") or tonumber(ARGV[13]), 0.001)
local drain_text = tostring(drain)  -- as returned, so a replay divides by the same number
local backlog, bounds, closed, claimed, others = {}, {}, {}, {}, {}
for i = 1, 3 do
  backlog[i] = tonumber(shared[2 + i] or "0")
  others[i] = tonumber(shared[5 + i] or "0")
  closed[i] = tonumber(shared[8 + i] or "")
  claimed[i] = tonumber(shared[11 + i] or "0")
  bounds[i] = tonumber(ARGV[9 + i])
end

-- The tenant's state, at once: its budget and its critical credits.
local state = redis.call("HMGET", state_key, "hour", "used", "tokens", "at")
local budget = tonumber(ARGV[9])
local used = 0
if tonumber(state[1]) == hour then
  used = tonumber(state[2])
end
local critical_capacity, critical_refill = tonumber(ARGV[7]), tonumber(ARGV[8])
local credits = nil  -- computed at the first critical lead; written back once, at the end

-- One MGET for every lead's dedup key; `seen` catches a repeat inside this request.
local dedup_keys = {}
for n = 1, count do
  dedup_keys[n] = KEYS[9 + 2 * n]
end
local originals = redis.call("MGET", unpack(dedup_keys))
local seen = {}

local accepted, demoted_accepted, duplicates, over_budget, backpressured = 0, 0, 0, 0, 0
local pushes = {{}, {}, {}}  -- per tier, the entries to push: one RPUSH per tier at the end
local results = {}
for n = 1, count do
  local dedup_key = dedup_keys[n]
  local trace_key = KEYS[10 + 2 * n]
  local trace_id = ARGV[11 + 4 * n]
  local tier = tonumber(ARGV[12 + 4 * n])
  local fingerprint = ARGV[14 + 4 * n]
  local original = originals[n] or seen[dedup_key]
  if original then
    results[n] = "2|" .. original
    duplicates = duplicates + 1
  elseif used >= budget then
    over_budget = over_budget + 1
    results[n] = "3|" .. tier .. "|0|hourly_budget|" .. tostring((hour + 1) * 3600 - now)
  else
    local demoted = 0
    if tier == 1 then
      if credits == nil then
        credits = bucket_tokens(state[3], state[4], critical_capacity, critical_refill, now)
      end
      if credits < 1 then
        tier, demoted = 2, 1
      end
    end
    -- Everything waiting in this tier and the tiers dispatched before it is ahead of the lead
    -- (in every shard: the others' as of the controller's last tick).
    local ahead = 0
    local claimed_ahead = 0
    for i = 1, tier do
      ahead = ahead + backlog[i] + others[i]
      claimed_ahead = claimed_ahead + claimed[i]
    end
    if ahead >= bounds[tier] or closed[tier] then
      local wait = closed[tier] or (ahead / drain)
      results[n] = "3|" .. tier .. "|" .. demoted .. "|backpressure|" .. tostring(wait)
      backpressured = backpressured + 1
    else
      if tier == 1 then
        credits = credits - 1  -- spent only by a critical lead that is accepted
      end
      local position = ahead + 1
      local dedup_value = trace_id .. "|" .. tier
      if fingerprint ~= "" then
        dedup_value = dedup_value .. "|" .. fingerprint .. "|" .. demoted .. "|" .. position
          .. "|" .. mode .. "|" .. drain_text .. "|" .. received_at
      end
      seen[dedup_key] = dedup_value
      redis.call("SET", dedup_key, dedup_value, "EX", ttl)
      redis.call(
        "SET", trace_key,
        tenant .. "|" .. tier .. "|" .. received_at .. "|" .. position .. "|" .. claimed_ahead,
        "EX", ttl
      )
      -- Completed in one concatenation (one expression): each one copies the whole lead.
      local ending = demoted == 1 and '","demoted":true}' or '"}'
      local pushed = pushes[tier]
      pushed[#pushed + 1] = ARGV[13 + 4 * n] .. ',"tier":"' .. names[tier] .. ending
      backlog[tier] = backlog[tier] + 1
      used = used + 1
      accepted = accepted + 1
      demoted_accepted = demoted_accepted + demoted
      results[n] = "1|" .. tier .. "|" .. demoted .. "|" .. position
    end
  end
end

for tier = 1, 3 do
  local entries = pushes[tier]
  if #entries > 0 then
    redis.call("RPUSH", KEYS[tier], unpack(entries))
    redis.call("SADD", KEYS[3 + tier], tenant)
    redis.call("HINCRBY", shard_key, names[tier], #entries)
  end
end

-- The tenant's state written back in one HSET (when it changed: a lead was accepted), and its
-- receipt: one HINCRBY per kind of answer this request gave, in the clock hour of Redis's TIME
-- (counted, not read and written: building the seven fields' names costs more than that).
if accepted > 0 then
  if credits ~= nil then
    redis.call("HSET", state_key, "hour", hour, "used", used, "tokens", tostring(credits), "at",
      tostring(now))
  else
    redis.call("HSET", state_key, "hour", hour, "used", used)
  end
end
local receipt_hour = hour .. "|"
local function receipt_add(kind, n)
  if n > 0 then
    redis.call("HINCRBY", state_key, receipt_hour .. kind, n)
  end
end
receipt_add("accepted", accepted)
receipt_add("demoted", demoted_accepted)
receipt_add("duplicate", duplicates)
receipt_add("hourly_budget", over_budget)
receipt_add("backpressure", backpressured)
-- Kept past a control outage of a day or two (apps/usage deletes an hour once it is written):
-- set again at the first write of each clock hour, which is often enough for a TTL of days.
if tonumber(state[1]) ~= hour then
  redis.call("EXPIRE", state_key, STATE_SECONDS)
end
return {mode, "", "0", drain_text, results}
