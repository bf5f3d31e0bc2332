-- POST /v1/tokens (a pre_auth with username and challenge); each thread writes the tokens
-- it got to its own file for the consume slice.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
expected = 201
local headers = { ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY"),
                  ["Content-Type"] = "application/json" }
function init(args)
    ok = 0; bad = 0; n = 0
    out = io.open(os.getenv("BENCH_TOKENS") .. "." .. id, "w")
end
function request()
    n = n + 1
    local body = string.format('{"kind":"pre_auth","username":"u%d-%d","challenge":"cookie"}', id, n)
    return wrk.format("POST", "/v1/tokens", headers, body)
end
function response(status, hdrs, body)
    count(status)
    local t = body and string.match(body, '"token":"([^"]+)"')
    if t then out:write(t, "\n"); out:flush() end
end
