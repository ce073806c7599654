-- Keep this run's leases for one more CRM call (apps/crm/leases.py): KEYS the leases, ARGV[1]
-- the run's token, ARGV[2] the length in ms. Returns, per lease, 1 when still this run's
-- (extended), 0 when it lapsed (another run may hold it now: that lead is not sent here).
local held = {}
for i, key in ipairs(KEYS) do
  if redis.call("GET", key) == ARGV[1] then
    redis.call("PEXPIRE", key, ARGV[2])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
