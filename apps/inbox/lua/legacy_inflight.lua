-- Move one in-flight batch from the key layout before shards to shard 0's keys (its id names no
-- shard: redis_keys.batch_shard gives 0), so the republisher and pool A's release find it.
-- Run on a single Redis only (the keys span slots).
--
-- KEYS[1] old zset "lf:inflight"             KEYS[2] old list "lf:inflight:<batch id>"
-- KEYS[3] old zset "lf:inflight-since:<tier>" KEYS[4] old hash "lf:inflight-leads"
-- KEYS[5] shard 0's zset of batches           KEYS[6] the batch's list now
-- KEYS[7] shard 0's zset of the tier's oldest leads   KEYS[8] shard 0's hash
-- ARGV[1] batch id   ARGV[2] tier
--
-- Returns the number of leads the batch held (0: its copy was gone; only its entries dropped).

local published = redis.call("ZSCORE", KEYS[1], ARGV[1])
redis.call("ZREM", KEYS[1], ARGV[1])
local oldest = redis.call("ZSCORE", KEYS[3], ARGV[1])
redis.call("ZREM", KEYS[3], ARGV[1])
local leads = redis.call("LLEN", KEYS[2])
if leads == 0 or not published then
  return 0
end
redis.call("RENAME", KEYS[2], KEYS[6])
redis.call("ZADD", KEYS[5], published, ARGV[1])
if oldest then
  redis.call("ZADD", KEYS[7], oldest, ARGV[1])
  redis.call("HINCRBY", KEYS[4], ARGV[2], -leads)
  redis.call("HINCRBY", KEYS[8], "inflight:" .. ARGV[2], leads)
end
return leads
