-- Take `cost` tokens from one bucket (token_bucket.lua is prepended).
-- KEYS[1] the bucket   ARGV[1] capacity   ARGV[2] refill per second   ARGV[3] cost
-- Returns {1 or 0, wait in seconds as a string}.
local allowed, wait = bucket_take(
  KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), now_seconds()
)
return {allowed and 1 or 0, tostring(wait)}
