-- GET /auth/verify with a signed-in browser's session cookie (BENCH_COOKIE).
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
wrk.path = "/auth/verify"
wrk.headers["Cookie"] = os.getenv("BENCH_COOKIE")
function init(args) ok = 0; bad = 0 end
function response(status) count(status) end
