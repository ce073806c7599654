-- Lease one tenant's leads for a delivery (apps/crm/leases.py). KEYS[1..n] the leads' leases,
-- KEYS[n+1..2n] their "sent" marks (same order); ARGV[1] the delivery run's token,
-- ARGV[2] the lease's length in ms.
-- Returns, per lead: "" when leased here, to deliver; the delivery id under which an earlier
-- run got it to the CRM without recording it (leased here too); or, when another run holds
-- it, the milliseconds its lease has left (a number).
local n = #KEYS / 2
local answer = {}
for i = 1, n do
  if redis.call("SET", KEYS[i], ARGV[1], "NX", "PX", ARGV[2]) then
    answer[i] = redis.call("GET", KEYS[n + i]) or ""
  else
    answer[i] = math.max(redis.call("PTTL", KEYS[i]), 1)
  end
end
return answer
