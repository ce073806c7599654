-- Move one tenant's inbox of one tier from the key layout before shards (leadflow/redis_keys.py
-- before its hash tags) to its shard's, ahead of what waits there (its leads are older), with
-- the counters that go with it. Run on a single Redis only (the keys span slots).
--
-- KEYS[1] old inbox "lf:inbox:<tier>:<tenant>"   KEYS[2] the tenant's inbox now
-- KEYS[3] old set "lf:active:<tier>"             KEYS[4] the shard's set of the tier now
-- KEYS[5] old hash "lf:backlog"                  KEYS[6] the shard's hash
-- ARGV[1] tenant id   ARGV[2] tier
--
-- Returns the number of leads moved.

local entries = redis.call("LRANGE", KEYS[1], 0, -1)
redis.call("SREM", KEYS[3], ARGV[1])
if #entries == 0 then
  return 0
end
-- LPUSH takes its arguments one by one onto the head: the last first, in chunks (unpack's limit).
local last = #entries
while last >= 1 do
  local first = math.max(1, last - 999)
  local chunk = {}
  for i = last, first, -1 do
    chunk[#chunk + 1] = entries[i]
  end
  redis.call("LPUSH", KEYS[2], unpack(chunk))
  last = first - 1
end
redis.call("DEL", KEYS[1])
redis.call("SADD", KEYS[4], ARGV[1])
redis.call("HINCRBY", KEYS[5], ARGV[2], -#entries)
redis.call("HINCRBY", KEYS[6], ARGV[2], #entries)
return #entries
