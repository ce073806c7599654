-- Release the leases this run holds (apps/crm/leases.py): KEYS the leases, ARGV[1] the token.
-- A lease that expired and was taken by another run is left to that run.
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call("GET", key) == ARGV[1] then
    redis.call("DEL", key)
    released = released + 1
  end
end
return released
