-- Fixed-rate (open-loop style) pacing for wrk 4.x, which has no wrk2 `-R`.
-- Each wrk thread owns a schedule of send slots `interval` ms apart (rate / threads per second).
-- After a connection gets its response, wrk calls delay(): the connection claims the next
-- unclaimed slot and sleeps until it. Slots are absolute times, so the offered rate stays
-- constant and does not slow down when responses are slow, as long as a connection is free; a
-- slot that is already past when claimed is sent at once and counted as late (bench_late). Many
-- late slots mean the rate was not held and the latencies suffer from coordinated omission.
-- wrk still measures each latency from the moment the request is written.
-- Rate and thread count come from BENCH_RATE / BENCH_THREADS (delay() must exist when the
-- script loads, before wrk passes script arguments to init()).
local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clk_id, bench_timespec_t *tp);
]])
local CLOCK_MONOTONIC = 1
local bench_ts = ffi.new("bench_timespec_t")

local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, bench_ts)
    return tonumber(bench_ts.tv_sec) * 1000 + tonumber(bench_ts.tv_nsec) / 1e6
end

local rate = tonumber(os.getenv("BENCH_RATE"))
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local interval_ms = 1000 * nthreads / rate
local next_slot = nil

bench_slots = 0
bench_late = 0
bench_late_max_ms = 0

function delay()
    local now = now_ms()
    if next_slot == nil then
        -- Stagger the threads' schedules inside one interval (index set by setup() in report.lua).
        next_slot = now + (bench_thread_index or 0) * interval_ms / nthreads
    end
    local slot = next_slot
    next_slot = slot + interval_ms
    bench_slots = bench_slots + 1
    local wait = slot - now
    if wait < 0 then
        if -wait > 1 then
            bench_late = bench_late + 1
        end
        bench_late_max_ms = math.max(bench_late_max_ms, -wait)
        return 0
    end
    -- wrk's timers have 1 ms resolution; rounding keeps the mean on schedule.
    return math.floor(wait + 0.5)
end
