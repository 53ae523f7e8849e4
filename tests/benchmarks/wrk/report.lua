-- Appended to every wrk run of tests/benchmarks/http_proxy.py: prints one machine-readable line
-- ("BENCH_RESULT {json}") with the request count, errors and latency percentiles in microseconds.
local bench_threads = {}

function setup(thread)
    table.insert(bench_threads, thread)
    thread:set("bench_thread_index", #bench_threads - 1)
end

function done(summary, latency, requests)
    local late, late_max_ms, slots = 0, 0, 0
    for _, t in ipairs(bench_threads) do
        late = late + (t:get("bench_late") or 0)
        slots = slots + (t:get("bench_slots") or 0)
        late_max_ms = math.max(late_max_ms, t:get("bench_late_max_ms") or 0)
    end
    local e = summary.errors
    io.write(string.format(
        'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
        '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
        '"latency_us": {"min": %d, "mean": %.1f, "p50": %d, "p90": %d, "p99": %d, ' ..
        '"p99.9": %d, "max": %d}, ' ..
        '"paced": {"slots": %d, "late_over_1ms": %d, "late_max_ms": %.3f}}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency:percentile(99.9), latency.max,
        slots, late, late_max_ms))
end
