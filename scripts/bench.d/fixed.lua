-- wrk script for scripts/bench: the same request every time (headers from wrk -H).
dofile(os.getenv("BENCH_D") .. "/report.lua")
