-- The dispatcher publishes an in-flight batch again (pool A has not stored it in time): read
-- its entries and stamp it as published now, so it is stale again only after another period.
--
-- Fenced like claim.lua: a caller whose lease token is no longer the lease key's value (another
-- control instance leads) gets nothing and stamps nothing.
--
-- KEYS[1] the control leader's lease key (unread when unfenced)
-- KEYS[2] the in-flight batch list
-- KEYS[3] zset batch id -> when published
-- ARGV[1] the caller's lease token ("" when unfenced)   ARGV[2] batch id   ARGV[3] now (s)
--
-- Returns the batch's entries ({} when its copy is gone); -1 when the fence refused.

if ARGV[1] ~= "" and redis.call("GET", KEYS[1]) ~= ARGV[1] then
  return -1
end
local entries = redis.call("LRANGE", KEYS[2], 0, -1)
if #entries > 0 then
  redis.call("ZADD", KEYS[3], "XX", ARGV[3], ARGV[2])
end
return entries
