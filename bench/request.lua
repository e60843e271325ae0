-- wrk script used by bench/run.py for every request it measures (GET and PATCH alike).
--
-- The request comes from the environment, so one script serves every endpoint:
--   BENCH_METHOD  HTTP method (default GET)
--   BENCH_BODY    request body, sent as application/json when set
--   BENCH_OTHER_BODY  when set, every other request sends this body instead (a write that
--                 alternates between two values changes the setting each time)
--   BENCH_AUTH    value of the Authorization header, when set
-- At the end it prints one machine-readable line, "BENCH_RESULT {json}", with the request
-- count, the error counts and the latency percentiles in microseconds.

wrk.method = os.getenv("BENCH_METHOD") or "GET"

local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
end

local other = os.getenv("BENCH_OTHER_BODY")
if other ~= nil and other ~= "" then
   local sent = 0
   request = function()
      sent = sent + 1
      return wrk.format(nil, nil, nil, sent % 2 == 0 and other or body)
   end
end

local auth = os.getenv("BENCH_AUTH")
if auth ~= nil and auth ~= "" then
   wrk.headers["Authorization"] = auth
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
end
