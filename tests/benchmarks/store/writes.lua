-- wrk script of the write phases of tests/benchmarks/store_proxy.py: PUT and PATCH /users/<id>
-- with JSON bodies, drawn uniformly at random from the file named by BENCH_WRITES_FILE (one
-- request a line, "PUT <id> <json>" or "PATCH <id> <json>", written and checked against the
-- users schema by the benchmark), a PUT with probability BENCH_PUT_SHARE (default 0.5), else a
-- PATCH; then one machine-readable line at the end, as random_ids.lua prints it, plus the
-- requests sent by method: "BENCH_RESULT {json}".
local path = os.getenv("BENCH_WRITES_FILE")
local prefix = os.getenv("BENCH_PREFIX") or "/users/"
local put_share = tonumber(os.getenv("BENCH_PUT_SHARE") or "0.5")
local lines = {}
for line in io.lines(path) do
    local method, id, body = line:match("^(%u+) (%S+) (.+)$")
    if method then
        lines[#lines + 1] = {method, id, body}
    end
end
local puts, patches = {}, {}
local threads = {}
sent_put, sent_patch = 0, 0 -- globals: done() reads them with thread:get

function setup(thread)
    table.insert(threads, thread)
    thread:set("bench_thread_index", #threads)
end

-- wrk.init has set the Host header by the time it calls init(): format the requests here.
function init(args)
    math.randomseed(os.time() * 1000 + (bench_thread_index or 0))
    local headers = {["Content-Type"] = "application/json"}
    for _, l in ipairs(lines) do
        local req = wrk.format(l[1], prefix .. l[2], headers, l[3])
        if l[1] == "PUT" then
            puts[#puts + 1] = req
        else
            patches[#patches + 1] = req
        end
    end
    if #puts == 0 or #patches == 0 then
        error("BENCH_WRITES_FILE " .. tostring(path) .. " needs PUT and PATCH lines")
    end
end

function request()
    if math.random() < put_share then
        sent_put = sent_put + 1
        return puts[math.random(#puts)]
    end
    sent_patch = sent_patch + 1
    return patches[math.random(#patches)]
end

function done(summary, latency, _)
    local put, patch = 0, 0
    for _, t in ipairs(threads) do
        put = put + (t:get("sent_put") or 0)
        patch = patch + (t:get("sent_patch") or 0)
    end
    local e = summary.errors
    io.write(string.format(
        'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "lines": %d, ' ..
        '"sent": {"PUT": %d, "PATCH": %d}, ' ..
        '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
        '"latency_us": {"min": %d, "mean": %.1f, "p50": %d, "p90": %d, "p99": %d, ' ..
        '"p99.9": %d, "max": %d}}\n',
        summary.requests, summary.duration, summary.bytes, #lines,
        put, patch,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency:percentile(99.9), latency.max))
end
