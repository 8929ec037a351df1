-- wrk script of the addon / gateway benchmarks (bench/addons-execute.sh, bench/gateway-passthrough.sh).
-- Configured from the environment:
--   BENCH_WRK_BODY   POST this body (Content-Type: application/json); unset: the URL's method (GET)
--   BENCH_WRK_PATH   a path template with {N}: every request gets a new number there (a cache miss
--                    per request); the number is unique per thread and per run
-- done() prints one JSON line: requests/s, latency percentiles (µs), socket errors, non-2xx.

local body = os.getenv("BENCH_WRK_BODY")
local template = os.getenv("BENCH_WRK_PATH")

if body ~= nil and body ~= "" then
   wrk.method = "POST"
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
end

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local counter = 0
local salt = nil

function request()
   if template == nil or template == "" then
      return wrk.request()
   end
   if salt == nil then
      -- unique across runs: wall clock seconds and the thread's id
      salt = string.format("%d%02d", os.time(), tid or 0)
   end
   counter = counter + 1
   local path = template:gsub("{N}", salt .. string.format("%09d", counter))
   return wrk.format(nil, path)
end

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      '{"label":"","requests":%d,"seconds":%.3f,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,"socket_errors":%d,"non_2xx":%d}\n',
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, latency.mean, e.connect + e.read + e.write + e.timeout, e.status))
end
