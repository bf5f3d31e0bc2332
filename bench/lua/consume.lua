-- POST /v1/tokens/consume: with BENCH_TOKENS, the tokens the issue slice wrote (once each;
-- when they run out, requests become unknown tokens and count as unexpected); without it,
-- a well-formed token nobody issued (one store round trip, 404 expected).
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local headers = { ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY"),
                  ["Content-Type"] = "application/json" }
local unknown = "tsr_pa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
local file = os.getenv("BENCH_TOKENS")
if not file then expected = 404 end
function init(args)
    ok = 0; bad = 0; tokens = {}; i = 0
    if file then
        for line in io.lines(file .. "." .. id) do tokens[#tokens + 1] = line end
    end
end
function request()
    i = i + 1
    local t = tokens[i] or unknown
    local body = string.format('{"kind":"pre_auth","token":"%s","challenge":"cookie"}', t)
    return wrk.format("POST", "/v1/tokens/consume", headers, body)
end
function response(status) count(status) end
