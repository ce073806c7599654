-- Claim up to N leads of one tier, taking the tenants' inboxes in the order given (each
-- tenant's oldest first), atomically parking them as ONE in-flight batch, so a dispatcher that
-- dies before Celery has the batch loses nothing (it is republished).
--
-- A tenant with N or more waiting fills the batch alone; tenants with fewer share one, which
-- keeps a trickle of leads from becoming a stream of tiny tasks for pools A, B and C.
--
-- The leads move from the tier's waiting count to its in-flight count, and the batch is
-- filed under the received_at of its oldest lead, so the controller reads the backlog and the
-- lag (waiting or in flight) without scanning a list.
--
-- Every key is in one shard (its Redis Cluster hash tag, leadflow/redis_keys.py), the
-- tenants' and the batch's.
-- KEYS[1] the tier's set of tenants with waiting leads
-- KEYS[2] the shard's hash: "<tier>" -> waiting leads, "claimed:<tier>" -> leads ever claimed,
--         "inflight:<tier>" -> leads in flight
-- KEYS[3] zset batch id -> when published   KEYS[4] the in-flight batch list
-- KEYS[5] the tier's zset batch id -> its oldest lead's received_at
-- KEYS[6] the control leader's lease key (fencing; unread when unfenced)
-- KEYS[7..] the tenants' inbox lists, in turn
-- ARGV[1] max leads   ARGV[2] tier name   ARGV[3] batch id   ARGV[4] now (s)
-- ARGV[5] the caller's lease token ("" when unfenced)
-- ARGV[6..] the tenant ids, in the order of KEYS[7..]
--
-- Fenced: a caller whose token is no longer the lease key's value (its lease lapsed and
-- another control instance leads) claims nothing, so a leader frozen past its lease cannot
-- act when it wakes (apps/control/leadership.py).
--
-- Returns {the id of the last tenant that gave leads, {entries}}; {} when all were empty;
-- -1 when the fence refused the claim.

if ARGV[5] ~= "" and redis.call("GET", KEYS[6]) ~= ARGV[5] then
  return -1
end
local room = tonumber(ARGV[1])
local taken = {}
local last_tenant = nil
local oldest = tonumber(ARGV[4])
for i = 7, #KEYS do
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
    -- A tenant's first entry is its oldest; admission writes received_at as a plain number.
    local received = tonumber(string.match(entries[1], '"received_at":([%d%.eE+-]+)'))
    if received and received < oldest then
      oldest = received
    end
  end
  if redis.call("LLEN", KEYS[i]) == 0 then
    redis.call("SREM", KEYS[1], tenant)
  end
end
if #taken == 0 then
  return {}
end
redis.call("HINCRBY", KEYS[2], ARGV[2], -#taken)
redis.call("HINCRBY", KEYS[2], "claimed:" .. ARGV[2], #taken)
redis.call("HINCRBY", KEYS[2], "inflight:" .. ARGV[2], #taken)
redis.call("RPUSH", KEYS[4], unpack(taken))
redis.call("ZADD", KEYS[3], ARGV[4], ARGV[3])
redis.call("ZADD", KEYS[5], oldest, ARGV[3])
return {last_tenant, taken}
