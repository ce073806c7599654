-- Claim up to N leads of one tier, taking the tenants' inboxes in the order given (each
-- tenant's oldest first), atomically parking them as ONE in-flight batch, so a dispatcher that
-- dies before Celery has the batch loses nothing (it is republished).
--
-- A tenant with N or more waiting fills the batch alone; tenants with fewer share one, which
-- keeps a trickle of leads from becoming a stream of tiny tasks for pools A, B and C.
--
-- KEYS[1] the tier's set of tenants with waiting leads   KEYS[2] hash tier -> waiting leads
-- KEYS[3] zset batch id -> claim time   KEYS[4] the in-flight batch list
-- KEYS[5] hash tier -> leads ever claimed   KEYS[6..] the tenants' inbox lists, in turn
-- ARGV[1] max leads   ARGV[2] tier name   ARGV[3] batch id   ARGV[4] now (s)
-- ARGV[5..] the tenant ids, in the order of KEYS[6..]
--
-- Returns {the id of the last tenant that gave leads, {entries}}; {} when all were empty.

local room = tonumber(ARGV[1])
local taken = {}
local last_tenant = nil
for i = 6, #KEYS do
  if room <= 0 then
    break
  end
  local tenant = ARGV[i - 1]
  local entries = redis.call("LPOP", KEYS[i], room)
  if entries then
    for _, entry in ipairs(entries) do
      taken[#taken + 1] = entry
    end
    room = room - #entries
    last_tenant = tenant
  end
  if redis.call("LLEN", KEYS[i]) == 0 then
    redis.call("SREM", KEYS[1], tenant)
  end
end
if #taken == 0 then
  return {}
end
redis.call("HINCRBY", KEYS[2], ARGV[2], -#taken)
redis.call("HINCRBY", KEYS[5], ARGV[2], #taken)
redis.call("RPUSH", KEYS[4], unpack(taken))
redis.call("ZADD", KEYS[3], ARGV[4], ARGV[3])
return {last_tenant, taken}
