-- A token bucket kept in one Redis hash {tokens, at}; included ahead of the scripts that use it.
-- Refills continuously at `refill` tokens/s up to `capacity`. A cost above the capacity (a CRM
-- batch of 500 against a rate of 100/s) is allowed once the bucket is full and leaves it in
-- debt, so big batches are paced instead of refused forever.

-- The tokens in a bucket now, refill included, from its stored {tokens, at} (nil: full).
local function bucket_tokens(stored_tokens, stored_at, capacity, refill, now)
  local tokens = tonumber(stored_tokens) or capacity
  local at = tonumber(stored_at) or now
  if now > at and refill > 0 then
    tokens = math.min(capacity, tokens + (now - at) * refill)
  end
  return tokens
end

local function bucket_read(key, capacity, refill, now)
  local state = redis.call("HMGET", key, "tokens", "at")
  return bucket_tokens(state[1], state[2], capacity, refill, now)
end

local function bucket_write(key, tokens, capacity, refill, now)
  redis.call("HSET", key, "tokens", tostring(tokens), "at", tostring(now))
  -- Idle buckets expire once they would be full again anyway.
  local full_in = refill > 0 and math.ceil((capacity - tokens) / refill) + 1 or 86400
  redis.call("EXPIRE", key, math.max(full_in, 1))
end

-- Take `cost` tokens. Returns allowed (true/false), and the seconds until it would be allowed.
local function bucket_take(key, capacity, refill, cost, now)
  local tokens = bucket_read(key, capacity, refill, now)
  local needed = math.min(cost, capacity)
  local allowed = tokens >= needed
  if allowed then
    tokens = tokens - cost
  end
  bucket_write(key, tokens, capacity, refill, now)
  if allowed then
    return true, 0
  end
  if refill <= 0 then
    return false, -1
  end
  return false, (needed - tokens) / refill
end

local function now_seconds()
  local time = redis.call("TIME")
  return tonumber(time[1]) + tonumber(time[2]) / 1000000
end
