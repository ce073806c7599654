-- Pool A stored an in-flight batch: drop its copy and take its leads off the tier's in-flight
-- count. Only the first release uncounts them (the batch leaves its tier's zset then), so a
-- redelivered batch released twice, or a batch claimed before ids were counted, changes nothing.
--
-- KEYS[1] the in-flight batch list   KEYS[2] zset batch id -> when published
-- KEYS[3] the shard's hash ("inflight:<tier>" -> leads in flight)
-- KEYS[4..] each tier's zset batch id -> oldest lead (all keys in the batch's shard)
-- ARGV[1] batch id   ARGV[2..] the tier names, in the order of KEYS[4..]
--
-- Returns the number of leads the batch held.

local leads = redis.call("LLEN", KEYS[1])
for i = 4, #KEYS do
  if redis.call("ZREM", KEYS[i], ARGV[1]) == 1 then
    redis.call("HINCRBY", KEYS[3], "inflight:" .. ARGV[i - 2], -leads)
  end
end
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], ARGV[1])
return leads
