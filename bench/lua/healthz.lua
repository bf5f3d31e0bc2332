dofile(os.getenv("BENCH_LUA") .. "/common.lua")
wrk.path = "/healthz"
function init(args) ok = 0; bad = 0 end
function response(status) count(status) end
