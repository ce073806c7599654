-- Claim up to N leads from one tenant's inbox, atomically parking them as an in-flight batch,
-- so a dispatcher that dies before Celery has the batch loses nothing (it is republished).
--
-- KEYS[1] the tenant's inbox list   KEYS[2] the tier's set of tenants with waiting leads
-- KEYS[3] hash tier -> waiting leads   KEYS[4] zset batch id -> claim time
-- KEYS[5] the in-flight batch list   KEYS[6] hash tier -> leads ever claimed
-- ARGV[1] max leads   ARGV[2] tenant id   ARGV[3] tier name   ARGV[4] batch id   ARGV[5] now (s)

local entries = redis.call("LPOP", KEYS[1], ARGV[1])
if not entries then
  redis.call("SREM", KEYS[2], ARGV[2])
  return {}
end
if redis.call("LLEN", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[2], ARGV[2])
end
redis.call("HINCRBY", KEYS[3], ARGV[3], -#entries)
redis.call("HINCRBY", KEYS[6], ARGV[3], #entries)
redis.call("RPUSH", KEYS[5], unpack(entries))
redis.call("ZADD", KEYS[4], ARGV[5], ARGV[4])
return entries
