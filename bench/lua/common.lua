-- Shared by the bench scripts: counts the answers with the expected status per thread,
-- and prints one RESULT line that bench/http reads (a rate counts expected answers only).
local threads = {}
expected = expected or 200

function setup(thread)
    thread:set("id", #threads + 1)
    table.insert(threads, thread)
end

function count(status)
    if status == expected then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
    local o, b = 0, 0
    for _, t in ipairs(threads) do
        o = o + t:get("ok")
        b = b + t:get("bad")
    end
    io.write(string.format("RESULT ok=%d bad=%d us=%d p99_us=%d p50_us=%d\n",
        o, b, summary.duration, latency:percentile(99), latency:percentile(50)))
end
