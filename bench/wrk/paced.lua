-- Appended to lead.lua for an offered rate (open loop, as far as connections allow): each
-- connection, once free, takes the next slot of its thread's schedule and waits for it. When
-- every connection is still waiting on the server the schedule falls behind; slots more than
-- MAX_BEHIND_US late are counted as missed (offered, never sent) instead of sent in a burst.

local ffi = require("ffi")
ffi.cdef([[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local MAX_BEHIND_US = 100000
local clock = ffi.new("bench_timespec")
local next_slot = nil

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1e6 + tonumber(clock.tv_nsec) / 1e3
end

function delay()
  local interval = 1e6 * nthreads / rate
  local now = now_us()
  if next_slot == nil then
    next_slot = now
  end
  if now - next_slot > MAX_BEHIND_US then
    local skipped = math.floor((now - next_slot) / interval)
    missed = missed + skipped
    next_slot = next_slot + skipped * interval
  end
  local slot = next_slot
  next_slot = next_slot + interval
  local wait_ms = (slot - now) / 1000
  if wait_ms < 1 then
    return 0
  end
  return math.floor(wait_ms + 0.5)
end
