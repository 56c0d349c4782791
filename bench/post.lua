-- wrk script for bench/run.py: POST getActionItemUrl with the body and API key the runner
-- puts in the environment, count the answers that are not 2xx, and print one summary line
-- (BENCH {json}) that the runner parses. Latencies are in microseconds.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  first_bad = ""
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body or "", 1, 300)
    end
  end
end

function done(summary, latency, requests)
  local bad = 0
  local sample = ""
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non2xx") or 0)
    local seen = thread:get("first_bad")
    if sample == "" and seen ~= nil then
      sample = seen
    end
  end
  local errors = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'BENCH {"requests":%d,"duration_s":%.3f,"rps":%.2f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"non2xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, bad, errors.connect, errors.read, errors.write,
    errors.timeout))
  io.write("BENCH_SAMPLE " .. string.gsub(sample, "\n", " ") .. "\n")
end
