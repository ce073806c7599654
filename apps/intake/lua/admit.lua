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
-- KEYS[1..3]  inbox lists of this tenant: critical, normal, low
-- KEYS[4..6]  sets of tenants with waiting leads: critical, normal, low
-- KEYS[7]     hash tier -> leads waiting in inboxes
-- KEYS[8]     hash tier|"total" -> drain rate (leads/s) measured by the controller
-- KEYS[9]     the platform mode (string)
-- KEYS[10]    hash tier -> Retry-After (s) of a tier the controller closed (lag over bound)
-- KEYS[11]    zset: this tenant's requests in the last second (sliding window)
-- KEYS[12]    token bucket: this tenant's requests from this IP address
-- KEYS[13]    token bucket: this tenant's critical credits
-- KEYS[14]    hash {hour, used}: this tenant's leads accepted in the current clock hour
-- KEYS[15]    hash tier -> leads ever claimed by the dispatcher (for positions on GET)
-- KEYS[16..]  per lead, in order: dedup key, trace key
-- KEYS[#KEYS] (always the last) hash "<hour>|<kind>" -> leads: the tenant's receipt (apps/usage)
-- ARGV[1] tenant id   ARGV[2] dedup TTL (s)   ARGV[3] lead count   ARGV[4] request id
-- ARGV[5] requests/s   ARGV[6] requests/s per IP (0 = no limit)   ARGV[7] critical capacity
-- ARGV[8] critical refill/s   ARGV[9] hourly budget   ARGV[10..12] backlog bounds per tier
-- ARGV[13] drain rate assumed before one is measured   ARGV[14] received_at (epoch s)
-- ARGV[15..]  per lead, in order: trace id, requested tier index (1..3), inbox entry with its
--             closing brace left off (the script completes it with the tier it decides),
--             fingerprint ("" without an Idempotency-Key)
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

local mode = redis.call("GET", KEYS[9]) or "normal"
local drain = tonumber(redis.call("HGET", KEYS[8], "total") or "") or tonumber(ARGV[13])
drain = math.max(drain, 0.001)
local drain_text = tostring(drain)  -- as returned, so a replay divides by the same number

-- The overload receipt (apps/usage): one HINCRBY per kind of answer this request gave, in the
-- clock hour of Redis's TIME. A refused request counts every lead it carried.
local receipt_key = KEYS[#KEYS]
local receipt_hour = math.floor(now / 3600)
local function receipt_add(kind, n)
  if n > 0 then
    redis.call("HINCRBY", receipt_key, receipt_hour .. "|" .. kind, n)
  end
end

local function refuse_request(limit, wait)
  -- After the limit's own write (bucket or window): with memory full, Redis refuses that one.
  receipt_add(limit, count)
  redis.call("EXPIRE", receipt_key, 259200)
  return {mode, limit, tostring(wait), drain_text, {}}
end

-- Per-IP limit inside the tenant (its own servers may legitimately send from one address).
local ip_rate = tonumber(ARGV[6])
if ip_rate > 0 then
  local allowed, wait = bucket_take(KEYS[12], ip_rate, ip_rate, 1, now)
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
redis.call("ZADD", KEYS[11], now, ARGV[4])
redis.call("ZREMRANGEBYSCORE", KEYS[11], "-inf", now - 1)
if redis.call("ZCARD", KEYS[11]) > rate then
  redis.call("ZREM", KEYS[11], ARGV[4])
  local oldest = redis.call("ZRANGE", KEYS[11], 0, 0, "WITHSCORES")
  return refuse_request("tenant_rate", tonumber(oldest[2]) + 1 - now)
end
redis.call("EXPIRE", KEYS[11], 2)

local backlog, bounds, closed = {}, {}, {}
local waiting = redis.call("HMGET", KEYS[7], names[1], names[2], names[3])
local closed_for = redis.call("HMGET", KEYS[10], names[1], names[2], names[3])
for i = 1, 3 do
  backlog[i] = tonumber(waiting[i] or "0")
  bounds[i] = tonumber(ARGV[9 + i])
  closed[i] = tonumber(closed_for[i] or "")
end

local hour = math.floor(now / 3600)
local budget = tonumber(ARGV[9])
local used = 0
local budget_state = redis.call("HMGET", KEYS[14], "hour", "used")
if tonumber(budget_state[1]) == hour then
  used = tonumber(budget_state[2])
end

local claimed = redis.call("HMGET", KEYS[15], names[1], names[2], names[3])
local critical_capacity, critical_refill = tonumber(ARGV[7]), tonumber(ARGV[8])
local credits = nil  -- read once, at the first critical lead; written back once, at the end

-- One MGET for every lead's dedup key; `seen` catches a repeat inside this request.
local dedup_keys = {}
for n = 1, count do
  dedup_keys[n] = KEYS[14 + 2 * n]
end
local originals = redis.call("MGET", unpack(dedup_keys))
local seen = {}

local accepted, demoted_accepted, duplicates, over_budget, backpressured = 0, 0, 0, 0, 0
local pushes = {{}, {}, {}}  -- per tier, the entries to push: one RPUSH per tier at the end
local results = {}
for n = 1, count do
  local dedup_key = dedup_keys[n]
  local trace_key = KEYS[15 + 2 * n]
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
        credits = bucket_read(KEYS[13], critical_capacity, critical_refill, now)
      end
      if credits < 1 then
        tier, demoted = 2, 1
      end
    end
    -- Everything waiting in this tier and the tiers dispatched before it is ahead of the lead.
    local ahead = 0
    local claimed_ahead = 0
    for i = 1, tier do
      ahead = ahead + backlog[i]
      claimed_ahead = claimed_ahead + tonumber(claimed[i] or "0")
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

if credits ~= nil then
  bucket_write(KEYS[13], credits, critical_capacity, critical_refill, now)
end
for tier = 1, 3 do
  local entries = pushes[tier]
  if #entries > 0 then
    redis.call("RPUSH", KEYS[tier], unpack(entries))
    redis.call("SADD", KEYS[3 + tier], tenant)
    redis.call("HINCRBY", KEYS[7], names[tier], #entries)
  end
end
if accepted > 0 then
  redis.call("HSET", KEYS[14], "hour", hour, "used", used)
  redis.call("EXPIRE", KEYS[14], 7200)
end
receipt_add("accepted", accepted)
receipt_add("demoted", demoted_accepted)
receipt_add("duplicate", duplicates)
receipt_add("hourly_budget", over_budget)
receipt_add("backpressure", backpressured)
-- Kept past a control outage of a day or two; apps/usage deletes an hour once it is written.
redis.call("EXPIRE", receipt_key, 259200)
return {mode, "", "0", drain_text, results}
