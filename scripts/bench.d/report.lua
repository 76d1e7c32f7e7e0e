-- Included by the wrk scripts of scripts/bench: one machine-readable summary line at the end
-- (runs once, in wrk's main thread: no cost per request). errors.status counts answers with
-- a status above 399; scripts/bench also counts every non-2xx answer in nginx's log.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
      "status_errors=%d connect=%d read=%d write=%d timeout=%d\n",
      summary.requests, summary.duration, summary.requests / summary.duration * 1e6,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
