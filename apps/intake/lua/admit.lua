-- Admit one tenant's leads in ONE round trip: dedup, push into the tier inbox, count the backlog.
-- This script is the seam for admission control (rate limits, credits, mode) added later:
-- every decision about a lead is taken here, atomically, next to the state it depends on.
--
-- KEYS[1..3]  inbox lists of this tenant: critical, normal, low
-- KEYS[4..6]  sets of tenants with waiting leads: critical, normal, low
-- KEYS[7]     hash tier -> leads waiting in inboxes
-- KEYS[8]     hash tier -> drain rate (leads/s) measured by the controller
-- KEYS[9]     the platform mode (string)
-- KEYS[10..]  per lead, in order: dedup key, trace key
-- ARGV[1] tenant id   ARGV[2] dedup TTL (s)   ARGV[3] lead count
-- ARGV[4..]   per lead, in order: trace id, tier index (1..3), trace record, inbox entry
--
-- Returns {mode, {drain rates}, then per lead {outcome, trace id, tier index, position}}
--   outcome 1 = accepted, 2 = duplicate (trace id is the original's; position 0)

local tenant = ARGV[1]
local ttl = tonumber(ARGV[2])
local count = tonumber(ARGV[3])

local backlog = {}
local names = {"critical", "normal", "low"}
for i = 1, 3 do
  backlog[i] = tonumber(redis.call("HGET", KEYS[7], names[i]) or "0")
end

local results = {}
for n = 1, count do
  local dedup_key = KEYS[8 + 2 * n]
  local trace_key = KEYS[9 + 2 * n]
  local trace_id = ARGV[4 * n]
  local tier = tonumber(ARGV[4 * n + 1])
  local original = redis.call("GET", dedup_key)
  if original then
    -- The dedup value is "<trace id>|<tier index>" of the lead that was accepted first.
    local original_id, original_tier = string.match(original, "^([^|]+)|(%d)$")
    results[n] = {2, original_id, tonumber(original_tier), 0}
  else
    redis.call("SET", dedup_key, trace_id .. "|" .. tier, "EX", ttl)
    redis.call("SET", trace_key, ARGV[4 * n + 2], "EX", ttl)
    redis.call("RPUSH", KEYS[tier], ARGV[4 * n + 3])
    redis.call("SADD", KEYS[3 + tier], tenant)
    redis.call("HINCRBY", KEYS[7], names[tier], 1)
    backlog[tier] = backlog[tier] + 1
    -- Position: everything waiting in this tier and the tiers dispatched before it.
    local position = 0
    for i = 1, tier do
      position = position + backlog[i]
    end
    results[n] = {1, trace_id, tier, position}
  end
end

local drain = redis.call("HMGET", KEYS[8], names[1], names[2], names[3])
for i = 1, 3 do
  drain[i] = drain[i] or ""
end
local mode = redis.call("GET", KEYS[9]) or "normal"
return {mode, drain, results}
