-- wrk script of tests/benchmarks/store_proxy.py: GET /users/<id> with ids drawn uniformly at
-- random from the file named by BENCH_IDS_FILE (one id per line), then one machine-readable
-- line at the end: "BENCH_RESULT {json}" (request count, errors, latency percentiles in µs).
local path = os.getenv("BENCH_IDS_FILE")
local prefix = os.getenv("BENCH_PREFIX") or "/users/"
local ids = {}
for id in io.lines(path) do
    if #id > 0 then
        ids[#ids + 1] = id
    end
end
local count = #ids
local requests = {}
local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("bench_thread_index", #threads)
end

-- wrk.init has set the Host header by the time it calls init(): format the requests here.
function init(args)
    math.randomseed(os.time() * 1000 + (bench_thread_index or 0))
    for i, id in ipairs(ids) do
        requests[i] = wrk.format("GET", prefix .. id)
    end
end

function request()
    return requests[math.random(count)]
end

function done(summary, latency, _)
    local e = summary.errors
    io.write(string.format(
        'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "ids": %d, ' ..
        '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
        '"latency_us": {"min": %d, "mean": %.1f, "p50": %d, "p90": %d, "p99": %d, ' ..
        '"p99.9": %d, "max": %d}}\n',
        summary.requests, summary.duration, summary.bytes, count,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency:percentile(99.9), latency.max))
end
