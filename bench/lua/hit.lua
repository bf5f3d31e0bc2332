-- POST /v1/ratelimit/hit over many keys, so that no key's window grows long.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local headers = { ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY"),
                  ["Content-Type"] = "application/json" }
local run = os.getenv("BENCH_RUN")
function init(args) ok = 0; bad = 0; n = 0 end
function request()
    n = n + 1
    local body = string.format('{"event":"bench","key":"%s-%d-%d"}', run, id, n % 100000)
    return wrk.format("POST", "/v1/ratelimit/hit", headers, body)
end
function response(status) count(status) end
