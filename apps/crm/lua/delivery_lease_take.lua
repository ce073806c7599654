-- Lease one tenant's leads for a delivery (apps/crm/leases.py). KEYS[1..n] the leads' leases,
-- KEYS[n+1..2n] their "sent" markers (same order); ARGV[1] the delivery run's token,
-- ARGV[2] the lease's length in ms.
-- Returns, per lead: 0 when another run holds it; "" when leased here, to deliver; or the
-- delivery id under which an earlier run got it to the CRM without recording it.
local n = #KEYS / 2
local answer = {}
for i = 1, n do
  if redis.call("SET", KEYS[i], ARGV[1], "NX", "PX", ARGV[2]) then
    answer[i] = redis.call("GET", KEYS[n + i]) or ""
  else
    answer[i] = 0
  end
end
return answer
