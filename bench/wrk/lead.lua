-- wrk script: POST leads as JSON with a Bearer key, a different body every request.
--
-- Arguments (after `--`): nonce, path, comma-separated API keys (taken in turn), critical
-- share in per mille, leads per request (0 = one lead to POST /leads; N = {"leads": [N]} to
-- POST /leads/batch), requests per second for the whole run (0 = as fast as answers come;
-- the paced variant only), thread count.
-- Emails carry the nonce, the thread and a counter, so dedup never sees the same lead twice,
-- and "crit-" marks a lead sent as critical (the tier may still be demoted by admission).
-- done() prints one line "BENCH_JSON {...}" that bench/load.py reads.

local thread_count = 0
local threads = {}

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local nonce, path, keys, critical_permille, batch_size, rate, nthreads
local counter = 0
-- Globals, not locals: done() reads them from each thread with thread:get().
sent = 0
statuses = {}
retry_after = 0
accepted_leads = 0
missed = 0

function init(args)
  nonce = args[1]
  path = args[2]
  keys = {}
  for key in string.gmatch(args[3], "[^,]+") do
    table.insert(keys, key)
  end
  critical_permille = tonumber(args[4])
  batch_size = tonumber(args[5])
  rate = tonumber(args[6])
  nthreads = tonumber(args[7])
end

local function lead_json()
  counter = counter + 1
  local critical = (counter * 7919) % 1000 < critical_permille
  return string.format(
    '{"email":"%s%s.%d.%d@acme-%d.example.com","name":"Ada Lovelace %d",'
      .. '"company":"Analytical Engines Ltd","phone":"+44 20 7946 0958","source":"google_ads",'
      .. '"campaign_id":"spring-launch-2026","region":"gb","priority":"%s",'
      .. '"payload":{"utm_source":"google","utm_medium":"cpc","utm_campaign":"spring",'
      .. '"landing_page":"/pricing/enterprise","form":"contact-sales","consent":true}}',
    critical and "crit-" or "lead-", nonce, tid, counter, counter % 97, counter,
    critical and "critical" or "normal"
  )
end

function request()
  sent = sent + 1
  local body
  if batch_size > 0 then
    local leads = {}
    for i = 1, batch_size do
      leads[i] = lead_json()
    end
    body = '{"leads":[' .. table.concat(leads, ",") .. "]}"
  else
    body = lead_json()
  end
  local headers = {
    ["Authorization"] = "Bearer " .. keys[(sent % #keys) + 1],
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  local code = tostring(status)
  statuses[code] = (statuses[code] or 0) + 1
  if status == 429 and (headers["Retry-After"] or headers["retry-after"]) then
    retry_after = retry_after + 1
  end
  if batch_size > 0 then
    if status == 202 or status == 200 then
      local accepted = string.match(body, '"accepted":%s*(%d+)')
      if accepted then
        accepted_leads = accepted_leads + tonumber(accepted)
      end
    end
  elseif status == 202 then
    accepted_leads = accepted_leads + 1
  end
end

-- Latency quantiles at these percentiles (finer in the tail): bench/load.py merges the slices
-- of a run through them.
local function quantile_grid()
  local grid = {}
  for p = 1, 180 do
    table.insert(grid, p * 0.5)
  end
  for p = 1, 90 do
    table.insert(grid, 90 + p * 0.1)
  end
  for p = 1, 99 do
    table.insert(grid, 99 + p * 0.01)
  end
  return grid
end

local function json(value)
  local kind = type(value)
  if kind == "table" then
    local parts = {}
    if #value > 0 then
      for _, item in ipairs(value) do
        table.insert(parts, json(item))
      end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for key, item in pairs(value) do
      table.insert(parts, string.format("%q", tostring(key)) .. ":" .. json(item))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif kind == "number" then
    return string.format("%.17g", value)
  elseif kind == "boolean" then
    return tostring(value)
  end
  return string.format("%q", tostring(value))
end

function done(summary, latency, requests)
  local totals = { statuses = {}, retry_after = 0, accepted_leads = 0, sent = 0, missed = 0 }
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses")) do
      totals.statuses[code] = (totals.statuses[code] or 0) + count
    end
    totals.retry_after = totals.retry_after + thread:get("retry_after")
    totals.accepted_leads = totals.accepted_leads + thread:get("accepted_leads")
    totals.sent = totals.sent + thread:get("sent")
    totals.missed = totals.missed + thread:get("missed")
  end
  local quantiles = {}
  if summary.requests > 0 then
    for _, p in ipairs(quantile_grid()) do
      table.insert(quantiles, { p, latency:percentile(p) })
    end
  end
  totals.duration_us = summary.duration
  totals.answered = summary.requests
  totals.bytes = summary.bytes
  totals.errors = summary.errors
  totals.latency = { min = latency.min, max = latency.max, mean = latency.mean }
  totals.quantiles = quantiles
  io.write("BENCH_JSON " .. json(totals) .. "\n")
end
